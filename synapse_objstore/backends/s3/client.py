"""The s3fs filesystem (and the aiobotocore client under it) the s3 backend works through.

SSE-C and the storage class are set once on the filesystem (`s3_additional_kwargs`): s3fs
then adds them to every call whose API shape accepts them (PutObject, CreateMultipartUpload,
UploadPart, HeadObject, GetObject, CopyObject) and drops them from the rest. Passed per call,
s3fs loses them on some paths, so one filesystem serves one key.
"""

from __future__ import annotations

import asyncio
import ipaddress
import platform
from typing import Any
from urllib.parse import urlsplit

import botocore
import s3fs
from aiobotocore.session import AioSession
from botocore.utils import get_environ_proxies

from synapse_objstore.backends.s3.s3fs_private import (
    disable_s3fs_retries,
    no_expect_continue,
    send_bytes_bodies_as_is,
)
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.backends.s3.timestamps import parse_timestamp


def load_botocore_session() -> AioSession:
    """A session with botocore's JSON data loaded: each file is one long json.loads holding
    the GIL (endpoints.json alone takes 15-30 ms), which on the I/O thread would stall
    Synapse's reactor. The session holds plain data, no socket or thread, so a later fork is
    safe; credentials are still resolved when the client is built."""
    session = AioSession()
    loader = session.get_component("data_loader")
    for name in ("endpoints", "partitions", "sdk-default-configuration"):
        loader.load_data(name)
    for kind in ("service-2", "endpoint-rule-set-1", "paginators-1"):
        loader.load_service_model("s3", kind)
    return session


# botocore builds its User-Agent header anew for every request (each component sanitized
# character by character: about 4% of the client's CPU per small upload) unless the config
# gives one, which it then sends as it is.
USER_AGENT = f"synapse-objstore Botocore/{botocore.__version__} Python/{platform.python_version()}"


# The calls whose bytes Body aiohttp would copy whole before sending it (see `SentAsIsBody`).
BODY_OPERATIONS = ("PutObject", "UploadPart")


def signs_payloads(endpoint_url: str | None) -> bool:
    """Whether SigV4 should sign each request's body (its SHA-256 in x-amz-content-sha256, one
    more pass over every byte sent: 0.15 ms of the 0.65 ms of CPU botocore spends on a PUT
    of 50-300 KB, measured with the reply canned), as botocore does over
    plain http. Not to a loopback address reached directly (no HTTP_PROXY of the environment
    applies to it, as botocore reads it): no one sits between us and the store there to change
    a body (and every PUT and part carries its Content-MD5, which SigV4 still signs and the
    store checks, against accidents). Over https botocore already leaves the bodies that
    carry a Content-MD5 unsigned; elsewhere over http it signs them, and so do we: there, only
    the signed SHA-256 keeps someone on the path from swapping a body for one of the same MD5
    (media are what users send, and MD5 collisions can be made)."""
    if endpoint_url is None:
        return True
    parts = urlsplit(endpoint_url)
    if parts.scheme != "http" or parts.hostname is None:
        return True
    if get_environ_proxies(endpoint_url):  # a proxy between us and the store: botocore sends through it
        return True
    if parts.hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # a host name
        return True


def create_s3_filesystem(
    settings: S3Settings, session: AioSession | None, loop: asyncio.AbstractEventLoop
) -> s3fs.S3FileSystem:
    s = settings
    session = session or AioSession()
    for operation in BODY_OPERATIONS:  # registered once per session, whatever the filesystems made from it
        session.register(f"before-parameter-build.s3.{operation}", send_bytes_bodies_as_is,
                         unique_id=f"synapse-objstore-body-{operation}")
    no_expect_continue(session)
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    s3_config: dict[str, Any] = {"addressing_style": s.addressing_style}
    if not signs_payloads(s.endpoint_url):
        s3_config["payload_signing_enabled"] = False
    client_kwargs = {k: v for k, v in {"region_name": s.region_name}.items() if v is not None}
    config_kwargs: dict[str, Any] = {
        "connect_timeout": s.connect_timeout,
        "read_timeout": s.read_timeout,
        "retries": {"mode": "standard", "total_max_attempts": s.retries + 1},
        "max_pool_connections": s.pool_size,
        "request_checksum_calculation": s.request_checksum_calculation,
        "response_checksum_validation": s.response_checksum_validation,
        "s3": s3_config,
        "user_agent": USER_AGENT,
    }
    filesystem = s3fs.S3FileSystem(
        endpoint_url=s.endpoint_url,
        key=s.access_key_id,
        secret=s.secret_access_key.get_secret_value() if s.secret_access_key else None,
        token=s.session_token.get_secret_value() if s.session_token else None,
        client_kwargs=client_kwargs,
        config_kwargs=config_kwargs,
        s3_additional_kwargs=s.extra_request_args(),
        max_concurrency=s.multipart_concurrency,
        asynchronous=True,
        loop=loop,
        skip_instance_cache=True,
        use_listings_cache=False,
        session=session,
    )
    disable_s3fs_retries(filesystem)  # botocore retries already
    return filesystem
