"""A rewrite under the current SSE-C key (`rekey`) racing other writers of the same object: an
object replaced between the rewrite's HEAD and its copy must not get the HEAD's metadata (its
sha256 would then vouch for bytes it is not the digest of, and `verify`, which trusts it under
SSE-C, would let the local file be deleted); an object Synapse deleted while it was rewritten
through this host must stay deleted."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from servers.ceph_rgw import CephRGW
from synapse_objstore.errors import ObjectChangedError
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.s3 import rgw_client, rgw_config
from tests.support.sse_c import KEY_A, KEY_B, KEY_C, put_under, request_kind

PATH = "local_content/ra/ce/one"


def before_first(store: ObjectStore, kind: str, action: Callable[[], None]) -> None:
    """Run `action` (another client's write) just before the store's first request of `kind`."""
    done: list[bool] = []

    async def hook() -> None:
        await store.connect()

        def before_send(request: Any, **_: Any) -> None:
            headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            if not done and request_kind(request.method, request.url, headers) == kind:
                done.append(True)
                action()

        store.filesystem().fs.s3.meta.events.register("before-send.s3", before_send)

    run(hook())


@pytest.mark.ceph
@pytest.mark.xfail(strict=True, reason="not fixed on RGW 16: the CopyObject carries the HEAD's metadata "
                                       "(MetadataDirective REPLACE) and is pinned to the HEAD's ETag "
                                       "(x-amz-copy-source-if-match, which AWS honours), but RGW 16 ignores the pin")
def test_an_object_replaced_before_its_copy_keeps_its_own_sha256(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """On RGW, which copies an unencrypted source in place (moto ignores the copy's conditions)."""
    store = open_store(rgw_config(rgw, rgw_bucket, sse_customer_key=KEY_C, previously_unencrypted=True))
    s3 = rgw_client(rgw)
    first, second = os.urandom(4000), os.urandom(4000)
    s3.put_object(Bucket=rgw_bucket, Key=PATH, Body=first, Metadata={"sha256": hashlib.sha256(first).hexdigest()})
    found = run(store.backend.key_of(store.filesystem(), store.remote_path(PATH)))
    # another writer replaces it (same size, other bytes, their own sha256) after the rewrite's HEAD
    before_first(store, "CopyObject", lambda: s3.put_object(
        Bucket=rgw_bucket, Key=PATH, Body=second, Metadata={"sha256": hashlib.sha256(second).hexdigest()}))
    # refusing to rewrite a changed object is fine; stamping it with another's sha256 is not
    with contextlib.suppress(OSError):
        run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path(PATH), found))
    try:
        reply = s3.get_object(Bucket=rgw_bucket, Key=PATH)
    except botocore.exceptions.ClientError:
        reply = s3.get_object(Bucket=rgw_bucket, Key=PATH, SSECustomerAlgorithm="AES256", SSECustomerKey=KEY_C)
    body = reply["Body"].read()
    assert reply["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.ceph
@pytest.mark.xfail(strict=True, reason="not fixed for objects below multipart_threshold: a rewrite through this "
                                       "host PUTs the object back after a delete in the moment between its GET and "
                                       "its PUT; RGW 16 has no conditional PUT to refuse it (it answers If-Match "
                                       "with 412 whatever the ETag)")
def test_an_object_deleted_during_its_rewrite_through_this_host_stays_deleted(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """RGW cannot copy from an SSE-C source: the rewrite GETs the object and PUTs it back. Synapse
    purging the media meanwhile (the GET already open) must not bring it back."""
    s3 = rgw_client(rgw)
    put_under(s3, rgw_bucket, PATH, os.urandom(4000), KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, sse_customer_key=KEY_C, previous_sse_customer_keys=[KEY_B, KEY_A]))
    found = run(store.backend.key_of(store.filesystem(), store.remote_path(PATH)))
    before_first(store, "PutObject", lambda: s3.delete_object(Bucket=rgw_bucket, Key=PATH))
    with contextlib.suppress(OSError):
        run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path(PATH), found))
    listed = s3.list_objects_v2(Bucket=rgw_bucket).get("Contents", [])
    assert [item["Key"] for item in listed] == []


@pytest.mark.ceph
def test_an_object_deleted_while_its_parts_are_rewritten_stays_deleted(
        rgw: CephRGW, rgw_bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    """A large object takes minutes to go through this host in parts: Synapse purging its media
    meanwhile must not be undone by completing the upload. The upload is aborted, nothing is left."""
    s3 = rgw_client(rgw)
    put_under(s3, rgw_bucket, PATH, os.urandom(12 * 1024 * 1024), KEY_A)
    store = open_store(rgw_config(rgw, rgw_bucket, sse_customer_key=KEY_C, previous_sse_customer_keys=[KEY_B, KEY_A]))
    found = run(store.backend.key_of(store.filesystem(), store.remote_path(PATH)))
    before_first(store, "UploadPart", lambda: s3.delete_object(Bucket=rgw_bucket, Key=PATH))
    with pytest.raises(ObjectChangedError, match="deleted or replaced while it was rewritten"):
        run(store.backend.rewrite_with_current_key(store.filesystem(), store.remote_path(PATH), found))
    assert s3.list_objects_v2(Bucket=rgw_bucket).get("Contents", []) == []
    assert not s3.list_multipart_uploads(Bucket=rgw_bucket).get("Uploads")
