"""What a PUT of the S3 client looks like on the wire (backends/s3/client.py, s3fs_private.py):
the body at once, whatever its size (no `Expect: 100-continue`: aiohttp waits for the "100
Continue" with no timeout, and it costs a round trip per PUT), and its SHA-256
signed except to a loopback address, where the signed Content-MD5 alone covers it.

The requests are caught at botocore's `before-send` event, the last step before the wire, and
go no further; the one test that needs a store uses moto."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from servers.ceph_rgw import CephRGW
from servers.moto import MotoServer
from synapse_objstore.backends.s3.client import create_s3_filesystem, signs_payloads
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.errors import BucketMissingError
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.files import write
from tests.support.s3 import rgw_config

MiB = 1024 * 1024


class Caught(Exception):
    """Raised at `before-send`: the request was built and signed, and goes no further."""


def md5_of(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def sent_put(endpoint_url: str, body: bytes) -> dict[str, str]:
    """The headers of a PutObject of `body` with its Content-MD5, as the store's client sends it."""
    async def send() -> dict[str, str]:
        settings = S3Settings.model_validate({
            "bucket": "b", "endpoint_url": endpoint_url, "access_key_id": "k", "secret_access_key": "s",
            "region_name": "us-east-1", "retries": 0})
        client = await create_s3_filesystem(settings, None, asyncio.get_running_loop()).set_session()
        seen: list[dict[str, str]] = []

        def catch(request: Any, **_: Any) -> None:
            seen.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
            raise Caught

        client.meta.events.register("before-send.s3", catch)
        try:
            with pytest.raises(Caught):
                await client.put_object(Bucket="b", Key="k", Body=body, ContentMD5=md5_of(body))
        finally:
            await client.close()
        return seen[0]

    return asyncio.run(send())


def signed_headers(headers: dict[str, str]) -> list[str]:
    return headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


@pytest.mark.parametrize("size", [300_000, 2 * MiB, 9 * MiB])
def test_a_put_sends_its_body_at_once_never_waiting_for_100_continue(size: int) -> None:
    """A store (or a proxy on the way) that never answers the headers of a PUT asking for
    `Expect: 100-continue` held the upload for good: aiohttp waits for it with no timeout."""
    assert "expect" not in sent_put("http://127.0.0.1:9", b"x" * size)


def test_to_a_loopback_address_the_payload_is_unsigned_and_its_content_md5_signed() -> None:
    body = b"y" * 1000
    for endpoint in ("http://127.0.0.1:9", "http://[::1]:9", "http://localhost:9"):
        headers = sent_put(endpoint, body)
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD", endpoint
        assert headers["content-md5"] == md5_of(body)
        assert "content-md5" in signed_headers(headers), endpoint


def test_over_http_elsewhere_the_payload_is_signed() -> None:
    body = b"z" * 1000
    headers = sent_put("http://192.0.2.10:9", body)  # TEST-NET-1: never reached, the request is caught
    assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert "x-amz-content-sha256" in signed_headers(headers)


@pytest.mark.parametrize(("endpoint", "signs"), [
    (None, True), ("https://127.0.0.1:9", True), ("http://s3.example.com", True), ("http://10.0.0.5:7480", True),
    ("http://127.0.0.1:9", False), ("http://127.1.2.3", False), ("http://[::1]:9", False), ("http://localhost", False),
])
def test_which_endpoints_get_signed_payloads(endpoint: str | None, signs: bool) -> None:
    """(Over https botocore itself leaves a body with a Content-MD5 unsigned.)"""
    assert signs_payloads(endpoint) is signs


@pytest.mark.parametrize(("no_proxy", "signs"), [("", True), ("127.0.0.1", False)])
def test_through_a_proxy_of_the_environment_a_loopback_endpoint_gets_signed_payloads(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, signs: bool,
) -> None:
    """HTTP_PROXY routes even a loopback endpoint through the proxy (botocore honours it unless
    NO_PROXY names the host): someone then sits between us and the store."""
    for lowercase in ("http_proxy", "no_proxy"):  # urllib prefers these to the uppercase ones
        monkeypatch.delenv(lowercase, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.10:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert signs_payloads("http://127.0.0.1:9") is signs


def test_the_store_still_checks_the_body_against_its_content_md5(rgw: CephRGW, rgw_bucket: str) -> None:
    """An unsigned payload is covered by its Content-MD5 alone: a body that does not match it is
    refused (400 BadDigest), not stored. (Ceph RGW checks it; moto does not.)"""
    async def put_wrong_md5() -> None:
        settings = S3Settings.model_validate({**rgw_config(rgw, rgw_bucket), "retries": 0})
        assert not signs_payloads(settings.endpoint_url)
        client = await create_s3_filesystem(settings, None, asyncio.get_running_loop()).set_session()
        try:
            await client.put_object(Bucket=rgw_bucket, Key="k", Body=b"what was sent",
                                    ContentMD5=md5_of(b"what was read"))
        finally:
            await client.close()

    with pytest.raises(ClientError) as caught:
        asyncio.run(put_wrong_md5())
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert caught.value.response["Error"]["Code"] == "BadDigest"


def test_the_backends_put_maps_a_refusal_to_the_projects_errors(
    moto: MotoServer, tmp_path: Path, open_store: Callable[[dict[str, Any]], ObjectStore]
) -> None:
    """The PUT goes to the aiobotocore client directly, past s3fs: a missing bucket still reads
    as one (s3fs's FileNotFoundError, which the store turns into BucketMissingError)."""
    store = open_store({"bucket": "no-such-bucket", "endpoint_url": moto.endpoint_url})
    with pytest.raises(BucketMissingError):
        run(store.put_file(write(tmp_path / "f", b"x"), "local_content/aa/bb/cc"))
