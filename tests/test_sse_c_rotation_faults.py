"""Hostile review of SSE-C key rotation reads on Ceph RGW: refused credentials, objects
rewritten or deleted under a paused stream, and rotation settings a YAML file gets wrong."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import pytest

from servers.ceph_rgw import CephRGW
from synapse_objstore.errors import FailureKind, ObjectChangedError, ObjectStoreError, UnknownKeyError, exception_chain
from synapse_objstore.failures import classify
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.s3 import rgw_client, rgw_config
from tests.support.sse_c import KEY_A, KEY_B, KEY_C, KEY_HEADER, put_under, record_requests

MiB = 1024 * 1024
ROTATED = {"sse_customer_key": KEY_C, "previous_sse_customer_keys": [KEY_B, KEY_A], "previously_unencrypted": True}


def test_refused_credentials_say_so_and_are_not_tried_once_per_key(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    put_under(rgw_client(rgw), rgw_bucket, "local_content/cu/rr/ent", b"x" * 100, KEY_C)
    store = open_store(rgw_config(rgw, rgw_bucket, secret_access_key="wrong-secret", **ROTATED))
    sent = record_requests(store)
    with pytest.raises(ObjectStoreError) as failed:
        run(store.open_read("local_content/cu/rr/ent"))
    assert not any(isinstance(link, UnknownKeyError) for link in exception_chain(failed.value)), str(failed.value)
    assert "no configured SSE-C key" not in str(failed.value) and classify(failed.value) == FailureKind.DENIED
    assert sent.kinds() == ["GetObject"] and sent.statuses() == [403]  # not once per configured key


def test_refused_credentials_on_a_head_are_named_as_a_possible_cause(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    put_under(rgw_client(rgw), rgw_bucket, "local_content/cu/rr/ent", b"x" * 100, KEY_C)
    store = open_store(rgw_config(rgw, rgw_bucket, secret_access_key="wrong-secret", **ROTATED))
    sent = record_requests(store)
    with pytest.raises(ObjectStoreError) as failed:
        run(store.info("local_content/cu/rr/ent"))
    # A HEAD's 403 has no body to tell refused credentials from a key that does not fit (as AWS
    # answers a wrong key): every key is tried, but the error names both causes.
    assert sent.statuses() == [403] * 4 and classify(failed.value) == FailureKind.DENIED
    assert "refuses this host's credentials" in str(failed.value)


def _paused_read(store: ObjectStore, path: str, between: Callable[[], None]) -> bytes:
    async def go() -> bytes:
        stream = await store.open_read(path)
        assert stream is not None
        first = await stream.read(64 * 1024)
        await stream.suspend()
        between()
        rest = b""
        try:
            while chunk := await stream.read(MiB):
                rest += chunk
        finally:
            await stream.close()
        return first + rest
    return run(go())


@pytest.mark.parametrize("new_key", [KEY_C, KEY_A, None], ids=["rekeyed", "same-key", "unencrypted"])
def test_an_old_key_object_rewritten_while_paused_is_an_object_change(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore],
        new_key: str | None) -> None:
    path = "local_content/pa/us/ed"
    put_under(rgw_client(rgw), rgw_bucket, path, os.urandom(3 * MiB), KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    with pytest.raises(ObjectChangedError):
        _paused_read(store, path, lambda: put_under(rgw_client(rgw), rgw_bucket, path, os.urandom(3 * MiB), new_key))


def test_an_old_key_object_deleted_while_paused_is_an_object_change(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    path = "local_content/pa/us/ed"
    put_under(rgw_client(rgw), rgw_bucket, path, os.urandom(3 * MiB), KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    with pytest.raises(ObjectChangedError):
        _paused_read(store, path, lambda: rgw_client(rgw).delete_object(Bucket=rgw_bucket, Key=path))


def test_a_paused_old_key_stream_survives_its_object_being_rekeyed(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """`rekey` rewrites the same bytes under the current key while Synapse may have a stream of
    the object paused. RGW keeps the ETag (the MD5 of the content), so the resumed GET with the
    old key passes If-Match and is refused for its key: 400 InvalidArgument, "the calculated
    MD5 hash of the key did not match", which failed the stream. It is read with the other keys."""
    path = "local_content/pa/us/ed"
    data = os.urandom(3 * MiB)
    put_under(rgw_client(rgw), rgw_bucket, path, data, KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, **ROTATED))
    sent = record_requests(store)
    assert _paused_read(store, path, lambda: put_under(rgw_client(rgw), rgw_bucket, path, data, KEY_C)) == data
    resumed = [get for get in sent.of_kind("GetObject") if "range" in get]
    assert all(get.get("if-match") for get in resumed)  # each still pinned to the ETag opened
    assert resumed[-1][KEY_HEADER] == base64.b64encode(KEY_C.encode()).decode()
