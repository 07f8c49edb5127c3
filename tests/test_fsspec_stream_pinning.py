"""Hostile review of the generic fsspec backend's pinned streams on a store it claims to pin
(s3:// on moto): an object replaced by someone else (another worker, an admin's `aws s3 cp`)
while a stream is paused, after the store was listed (as `verify`, `migrate`, `reconcile` do)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from servers.moto import MotoServer
from synapse_objstore.errors import ObjectChangedError
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.suite import list_objects
from tests.support.s3 import s3_client

MiB = 1024 * 1024


def test_an_object_replaced_by_another_client_after_a_listing_is_never_spliced(
        moto: MotoServer, bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore]) -> None:
    store = open_store({"backend": "fsspec", "url": f"s3://{bucket}",
                        "storage_options": {"endpoint_url": moto.endpoint_url, "key": "k", "secret": "s"}})
    assert store.backend.pins_streams()
    path = "local_content/re/pl/aced"
    original, replacement = os.urandom(MiB), os.urandom(MiB)
    s3 = s3_client(moto.endpoint_url)
    s3.put_object(Bucket=bucket, Key=path, Body=original)

    async def read_across_a_replacement() -> bytes:
        assert [o.media_path for o in await list_objects(store, "")] == [path]
        stream = await store.open_read(path)
        assert stream is not None
        got = bytearray(await stream.read(64 * 1024))
        await stream.suspend()
        s3.put_object(Bucket=bucket, Key=path, Body=replacement)
        try:
            while chunk := await stream.read(64 * 1024):
                got += chunk
        except ObjectChangedError:
            assert original.startswith(got)
            return original
        finally:
            await stream.close()
        return bytes(got)

    assert run(read_across_a_replacement()) == original, "two versions were spliced"
