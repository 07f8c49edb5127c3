"""SSE-C and storage classes against Ceph's RADOS Gateway, an S3 server that enforces SSE-C."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from servers.ceph_rgw import CephRGW
from synapse_objstore.errors import ObjectStoreError
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.suite import put_media
from synapse_objstore.testing.synapse_harness import load_provider, local_media, start_streaming, wait_for
from tests.support.s3 import OTHER_KEY, SSE_KEY, rgw_client, rgw_config

MiB = 1024 * 1024


def fetch_bytes(in_reactor: Callable[..., Any], provider: Any, path: str, info: Any) -> bytes:
    consumer = RecordingConsumer()
    wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))
    return consumer.data


@pytest.mark.parametrize("size", [40_000, 11 * MiB], ids=["small", "multipart"])
def test_sse_c_objects_round_trip_through_the_provider(rgw: CephRGW, rgw_bucket: str, reactor: Any,
                                                       in_reactor: Callable[..., Any], media_store: Path,
                                                       size: int) -> None:
    provider = load_provider(reactor, media_store, rgw_config(rgw, rgw_bucket, storage_class=rgw.extra_storage_class))
    path, info = local_media(f"ssec{size}media")
    data = os.urandom(size)
    put_media(media_store, path, data)
    in_reactor(provider.store_file, path, info)

    assert fetch_bytes(in_reactor, provider, path, info) == data
    s3 = rgw_client(rgw)
    head = s3.head_object(Bucket=rgw_bucket, Key=path, SSECustomerKey=SSE_KEY, SSECustomerAlgorithm="AES256")
    assert head["StorageClass"] == rgw.extra_storage_class
    with pytest.raises(botocore.exceptions.ClientError) as refused:  # RGW keeps the bytes under the key
        s3.get_object(Bucket=rgw_bucket, Key=path)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)


def test_reading_with_a_wrong_or_no_key_fails_promptly(rgw: CephRGW, rgw_bucket: str, reactor: Any,
                                                       in_reactor: Callable[..., Any], media_store: Path) -> None:
    writer = load_provider(reactor, media_store, rgw_config(rgw, rgw_bucket))
    path, info = local_media("lockedmedia01")
    put_media(media_store, path, b"secret bytes")
    in_reactor(writer.store_file, path, info)

    for config in (rgw_config(rgw, rgw_bucket, sse_customer_key=OTHER_KEY),
                   {k: v for k, v in rgw_config(rgw, rgw_bucket).items() if k != "sse_customer_key"}):
        reader = load_provider(reactor, media_store, config)
        started = time.monotonic()
        with pytest.raises(ObjectStoreError, match="could not fetch 'local_content/lo/ck/edmedia01'"):
            in_reactor(reader.fetch, path, info)
        assert time.monotonic() - started < 30


def test_objects_written_by_synapse_s3_storage_provider_stay_readable(rgw: CephRGW, rgw_bucket: str, reactor: Any,
                                                                      in_reactor: Callable[..., Any],
                                                                      media_store: Path) -> None:
    """What the old provider's upload_file(ExtraArgs={SSECustomerKey: key, ...}) stores."""
    path, info = local_media("oldprovidermedia")
    data = os.urandom(100_000)
    rgw_client(rgw).put_object(Bucket=rgw_bucket, Key="old/" + path, Body=data, SSECustomerKey=SSE_KEY,
                           SSECustomerAlgorithm="AES256", StorageClass="STANDARD")
    provider = load_provider(reactor, media_store, rgw_config(rgw, rgw_bucket, prefix="old/"))
    assert fetch_bytes(in_reactor, provider, path, info) == data


def test_credentials_come_from_the_aws_environment_when_not_configured(
    rgw: CephRGW, rgw_bucket: str, reactor: Any, in_reactor: Callable[..., Any], media_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RGW checks signatures, so this only passes with the right keys taken from the environment."""
    config = {k: v for k, v in rgw_config(rgw, rgw_bucket).items() if k not in ("access_key_id", "secret_access_key")}
    path, info = local_media("envcredsmedia")
    put_media(media_store, path, b"signed with env keys")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
    provider = load_provider(reactor, media_store, config)
    in_reactor(provider.store_file, path, info)
    assert fetch_bytes(in_reactor, provider, path, info) == b"signed with env keys"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong = load_provider(reactor, media_store, config)
    with pytest.raises(ObjectStoreError, match="could not fetch"):
        in_reactor(wrong.fetch, path, info)
