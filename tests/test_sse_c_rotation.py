"""SSE-C key rotation on Ceph RGW, which enforces SSE-C: reads try the current key, then the
previous keys in order, then no key; `key_of` tells which key an object is under; and
`rewrite_with_current_key` moves an object to the current key, keeping what it is."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servers.ceph_rgw import CephRGW
from synapse_objstore.errors import ObjectStoreError, UnknownKeyError, exception_chain
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from synapse_objstore.testing.suite import read_object
from synapse_objstore.testing.synapse_harness import load_provider, local_media
from tests.support.s3 import rgw_client, rgw_config
from tests.support.sse_c import (
    COPY_KEY_HEADER,
    KEY_A,
    KEY_B,
    KEY_C,
    KEY_HEADER,
    STRAY_KEY,
    previous_key_reads,
    put_under,
    record_requests,
    stream_media,
)

MiB = 1024 * 1024
ROTATED = {"sse_customer_key": KEY_C, "previous_sse_customer_keys": [KEY_B, KEY_A], "previously_unencrypted": True}
# media path -> the key its object is written under (None: no SSE-C)
UNDER = {"local_content/cu/rr/ent": KEY_C, "local_content/pr/ev/one": KEY_B, "local_content/pr/ev/two": KEY_A,
         "local_content/pl/ai/n": None}
LABELS = {"local_content/cu/rr/ent": "current", "local_content/pr/ev/one": "previous-1",
          "local_content/pr/ev/two": "previous-2", "local_content/pl/ai/n": "unencrypted"}


@pytest.fixture
def mixed_bucket(rgw: CephRGW, rgw_bucket: str) -> dict[str, bytes]:
    """The bucket holds one object under each of C (current), B, A and none, with a Content-Type
    and user metadata; returns each media's bytes."""
    contents = {path: os.urandom(3000) + path.encode() for path in UNDER}
    for path, key in UNDER.items():
        put_under(rgw_client(rgw), rgw_bucket, path, contents[path], key)
    return contents


def test_objects_under_every_configured_key_are_read(rgw: CephRGW, rgw_bucket: str, mixed_bucket: dict[str, bytes],
                                                      open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    for path, data in mixed_bucket.items():
        assert run(read_object(store, path)) == data, LABELS[path]
        info = run(store.info(path))
        assert info is not None and info.size == len(data)
        assert run(store.backend.key_of(store.filesystem(), store.remote_path(path))).label == LABELS[path]


def test_each_read_costs_one_request_per_key_tried(rgw: CephRGW, rgw_bucket: str, mixed_bucket: dict[str, bytes],
                                                   open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """The common path (an object under the current key) costs one HEAD and one GET, as
    without rotation; each earlier key costs one more request (a HEAD answered 400 also makes
    botocore's region redirector look up the bucket: a HeadBucket, as a wrong key did before
    rotation); a missing object one 404. RGW reads an unencrypted object with the current key,
    so it costs no more either."""
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    sent = record_requests(store)
    misses = {"current": 0, "previous-1": 1, "previous-2": 2, "unencrypted": 0}
    for path in mixed_bucket:
        label = LABELS[path]
        sent.clear()
        assert run(store.info(path)) is not None
        assert sorted(sent.kinds()) == ["HeadBucket"] * misses[label] + ["HeadObject"] * (misses[label] + 1), label
        assert sorted(sent.statuses()) == [200] * (misses[label] + 1) + [400] * misses[label], label
        sent.clear()
        run(read_object(store, path))
        assert sent.kinds() == ["GetObject"] * (misses[label] + 1), label
        assert sent.statuses() == [400] * misses[label] + [200], label
    sent.clear()
    assert run(store.info("local_content/no/ne/here")) is None
    assert sent.kinds() == ["HeadObject"] and sent.statuses() == [404]


def test_an_object_under_no_configured_key_fails_clearly(rgw: CephRGW, rgw_bucket: str,
                                                         open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    put_under(rgw_client(rgw), rgw_bucket, "local_content/st/ra/y", b"lost", STRAY_KEY)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    sent = record_requests(store)
    with pytest.raises(ObjectStoreError, match="no configured SSE-C key reads") as failed:
        run(store.info("local_content/st/ra/y"))
    message = str(failed.value)
    assert "tried current, previous-1, previous-2, unencrypted" in message
    assert any(isinstance(link, UnknownKeyError) for link in exception_chain(failed.value))
    assert sent.kinds().count("HeadObject") == 4  # one per key, then the error: no retries
    for key in (KEY_A, KEY_B, KEY_C, STRAY_KEY):
        assert key not in message and key not in repr(failed.value)


def test_rewrite_moves_objects_to_the_current_key_keeping_what_they_are(
        rgw: CephRGW, rgw_bucket: str, mixed_bucket: dict[str, bytes],
        open_store: Callable[[dict[str, Any]], ObjectStore], caplog: pytest.LogCaptureFixture) -> None:
    """RGW 16 answers a CopyObject of an SSE-C source with 501, and one of an unencrypted
    source with 200 but leaves the copy unencrypted: each is then rewritten through this host,
    saying so once per kind of source, and reads under the current key afterwards."""
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    fs, s3 = store.filesystem(), rgw_client(rgw)
    sent = record_requests(store)
    for path, label in LABELS.items():
        if label == "current":
            continue
        found = run(store.backend.key_of(fs, store.remote_path(path), label))
        assert found.label == label
        sent.clear()
        result = run(store.backend.rewrite_with_current_key(fs, store.remote_path(path), found))
        assert not result.server_side and result.bytes_moved == len(mixed_bucket[path]), label
        tried_copy = label in ("previous-1", "unencrypted")  # the first of each kind of source
        assert sent.kinds() == ["CopyObject"] * tried_copy + ["GetObject", "PutObject"], label
        if label == "previous-1":
            assert sent.of_kind("CopyObject")[0][COPY_KEY_HEADER] == base64.b64encode(KEY_B.encode()).decode()
        assert run(store.backend.key_of(fs, store.remote_path(path))).label == "current", label
        head = s3.head_object(Bucket=rgw_bucket, Key=path, SSECustomerKey=KEY_C, SSECustomerAlgorithm="AES256")
        assert head["ContentType"] == "image/png" and head["Metadata"] == {"origin": path.replace("/", "-")}
        assert s3.get_object(Bucket=rgw_bucket, Key=path, SSECustomerKey=KEY_C,
                             SSECustomerAlgorithm="AES256")["Body"].read() == mixed_bucket[path]
    warnings = [r.getMessage() for r in caplog.records if "downloading and uploading every byte" in r.getMessage()]
    assert len(warnings) == 2 and "501 Not Implemented" in warnings[0] and "not encrypted" in warnings[1]
    only_current = open_store(rgw_config(rgw, rgw_bucket, sse_customer_key=KEY_C))
    for path, data in mixed_bucket.items():
        assert run(read_object(only_current, path)) == data


def test_a_large_object_is_rewritten_in_parts(rgw: CephRGW, rgw_bucket: str,
                                              open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    data = os.urandom(12 * MiB)
    put_under(rgw_client(rgw), rgw_bucket, "local_content/bi/gg/er", data, KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    found = run(store.backend.key_of(store.filesystem(), store.remote_path("local_content/bi/gg/er")))
    assert found.label == "previous-2"
    sent = record_requests(store)
    result = run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path("local_content/bi/gg/er"),
                                                        found))
    assert not result.server_side and result.bytes_moved == len(data)
    assert sent.kinds().count("UploadPart") == 3
    assert run(read_object(open_store(rgw_config(rgw, rgw_bucket, sse_customer_key=KEY_C)),
                           "local_content/bi/gg/er")) == data


def test_the_provider_serves_every_key_and_counts_the_old_ones(
        rgw: CephRGW, rgw_bucket: str, mixed_bucket: dict[str, bytes], reactor: Any,
        in_reactor: Callable[..., Any], media_store: Path) -> None:
    provider = load_provider(reactor, media_store, rgw_config(rgw, rgw_bucket, **ROTATED))
    before = {label: previous_key_reads(label) for label in LABELS.values()}
    for path, data in mixed_bucket.items():
        _, info = local_media(path.rsplit("/", 3)[1] + path.rsplit("/", 3)[2] + path.rsplit("/", 3)[3])
        assert stream_media(in_reactor, provider, path, info) == data, LABELS[path]
    counted = {label: previous_key_reads(label) - before[label] for label in LABELS.values()}
    assert counted == {"current": 0, "previous-1": 1, "previous-2": 1, "unencrypted": 1}


def test_a_5xx_is_not_retried_with_other_keys(rgw: CephRGW, rgw_bucket: str, mixed_bucket: dict[str, bytes],
                                              open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """Only "the key does not fit" moves on: a store that is down is not asked once per key."""
    with FaultProxy(rgw.endpoint_url, Faults(rate_503=1.0)) as proxy:
        store = open_store(rgw_config(rgw, rgw_bucket, endpoint_url=proxy.endpoint_url, retries=0, **ROTATED))
        sent = record_requests(store)
        with pytest.raises(ObjectStoreError) as failed:
            run(store.info("local_content/pr/ev/two"))
    assert sent.kinds() == ["HeadObject"] and sent.statuses() == [503]
    assert not any(isinstance(link, UnknownKeyError) for link in exception_chain(failed.value))


def test_a_paused_stream_resumes_with_the_key_that_opened_it(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    data = os.urandom(3 * MiB)
    put_under(rgw_client(rgw), rgw_bucket, "local_content/pa/us/ed", data, KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    sent = record_requests(store)

    async def read_with_a_pause() -> bytes:
        stream = await store.open_read("local_content/pa/us/ed")
        assert stream is not None
        first = await stream.read(64 * 1024)
        await stream.suspend()  # lets go of the connection: the next read is a ranged GET
        rest = b""
        while chunk := await stream.read(MiB):
            rest += chunk
        await stream.close()
        return first + rest

    assert run(read_with_a_pause()) == data
    gets = sent.of_kind("GetObject")
    assert len(gets) == 4 and "range" in gets[-1]  # current, previous-1, previous-2, then the ranged one
    assert gets[-1][KEY_HEADER] == base64.b64encode(KEY_A.encode()).decode()


def test_turning_sse_c_off_rewrites_old_objects_unencrypted_in_their_storage_class(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """With no sse_customer_key and the old key among the previous ones, an object is read with
    the old key and rewritten without SSE-C, in the storage class it had (not the configured one)."""
    s3 = rgw_client(rgw)
    s3.put_object(Bucket=rgw_bucket, Key="local_content/of/ff/old", Body=b"was encrypted", ContentType="image/gif",
                  StorageClass=rgw.extra_storage_class, SSECustomerKey=KEY_A, SSECustomerAlgorithm="AES256")
    config = {k: v for k, v in rgw_config(rgw, rgw_bucket, previous_sse_customer_keys=[KEY_A]).items()
              if k != "sse_customer_key"}
    store = open_store(config)
    remote = store.remote_path("local_content/of/ff/old")
    found = run(store.backend.key_of(store.filesystem(), remote))
    assert found.label == "previous-1"
    result = run(store.backend.rewrite_with_current_key(store.filesystem(), remote, found))
    assert not result.server_side  # RGW 16: 501 for an SSE-C source
    head = s3.head_object(Bucket=rgw_bucket, Key="local_content/of/ff/old")  # no key needed any more
    assert "SSECustomerKeyMD5" not in head and head["ContentType"] == "image/gif"
    assert head["StorageClass"] == rgw.extra_storage_class
    assert s3.get_object(Bucket=rgw_bucket, Key="local_content/of/ff/old")["Body"].read() == b"was encrypted"
    assert run(store.backend.key_of(store.filesystem(), remote)).label == "current"


def test_an_object_too_large_for_copy_object_falls_back_when_rgw_refuses_part_copies(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Above CopyObject's 5 GiB (lowered here) the copy goes in parts; RGW 16 refuses an
    UploadPartCopy from one SSE-C key to another with 400 InvalidArgument: the multipart upload
    is aborted and the object rewritten through this host, in parts, saying why."""
    import synapse_objstore.backends.s3.rewrite as rewrite

    monkeypatch.setattr(rewrite, "MAX_COPY_SIZE", MiB)
    monkeypatch.setattr(rewrite, "COPY_PART_SIZE", 5 * MiB)
    data = os.urandom(7 * MiB)
    put_under(rgw_client(rgw), rgw_bucket, "local_content/la/rg/er", data, KEY_B)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    remote = store.remote_path("local_content/la/rg/er")
    found = run(store.backend.key_of(store.filesystem(), remote))
    sent = record_requests(store)
    result = run(store.backend.rewrite_with_current_key(store.filesystem(), remote, found))
    assert not result.server_side and result.bytes_moved == len(data)
    kinds = sent.kinds()
    assert kinds[:3] == ["CreateMultipartUpload", "UploadPartCopy", "AbortMultipartUpload"], kinds
    assert sent.statuses()[1] == 400
    assert any("UploadPartCopy answered 400" in r.getMessage() for r in caplog.records)
    assert kinds[3:5] == ["GetObject", "CreateMultipartUpload"] and kinds.count("UploadPart") == 2
    assert run(store.backend.key_of(store.filesystem(), remote)).label == "current"
    assert run(read_object(store, "local_content/la/rg/er")) == data
    assert not rgw_client(rgw).list_multipart_uploads(Bucket=rgw_bucket).get("Uploads")


@pytest.mark.parametrize("size", [3000, 12 * MiB], ids=["one PUT", "in parts"])
def test_a_rewrite_through_this_host_refuses_bytes_its_sha256_metadata_does_not_name(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore], size: int) -> None:
    """The old key's GET carries no checksum to check under SSE-C, and the rewrite copies the
    sha256 metadata unchanged: bytes that are not those the metadata names (damaged on their
    way here, as a wrong sha256 stands in for) must not be stored under the current key with a
    sha256 that vouches for them. The object stays as it was, under its old key; no upload is left."""
    data = os.urandom(size)
    s3 = rgw_client(rgw)
    s3.put_object(Bucket=rgw_bucket, Key="local_content/da/ma/ged", Body=data, ContentType="image/png",
                  Metadata={"sha256": hashlib.sha256(b"other bytes").hexdigest()},
                  SSECustomerKey=KEY_B, SSECustomerAlgorithm="AES256")
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    remote = store.remote_path("local_content/da/ma/ged")
    found = run(store.backend.key_of(store.filesystem(), remote))
    with pytest.raises(OSError, match="not those its sha256 metadata names"):
        run(store.backend.rewrite_with_current_key(store.filesystem(), remote, found))
    assert run(store.backend.key_of(store.filesystem(), remote)).label == "previous-1"
    assert s3.get_object(Bucket=rgw_bucket, Key="local_content/da/ma/ged", SSECustomerKey=KEY_B,
                         SSECustomerAlgorithm="AES256")["Body"].read() == data
    assert not s3.list_multipart_uploads(Bucket=rgw_bucket).get("Uploads")


def test_a_rewrite_through_this_host_sends_the_content_md5(
        rgw: CephRGW, rgw_bucket: str, mixed_bucket: dict[str, bytes],
        open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """The store checks the body it receives against the Content-MD5 (a signed body hash alone
    is not sent over HTTPS)."""
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    remote = store.remote_path("local_content/pr/ev/one")
    found = run(store.backend.key_of(store.filesystem(), remote))
    sent = record_requests(store)
    run(store.backend.rewrite_with_current_key(store.filesystem(), remote, found))
    data = mixed_bucket["local_content/pr/ev/one"]
    headers = {name.lower(): value for name, value in sent.of_kind("PutObject")[0].items()}
    assert headers["content-md5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
