"""A local file that changes while its parts are uploaded gives no copy that looks whole.

Each part reads its share of the size the upload began with, so a file that grew meanwhile
would leave a complete-looking copy of its first bytes, which the check after the upload
verifies (it compares with the digest, taken before). The part loop (backends/part_upload.py)
therefore checks the size before the last part goes and before the upload is completed, and
abandons an upload whose file changed. A file that changes after its last byte was sent has a
whole copy of what it was; `upload --delete` keeps it (tests/cli/test_errors.py)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servers.azurite import Azurite
from servers.gcs_emulator import GcsEmulator
from servers.moto import MotoServer
from synapse_objstore.backends.gcs import ResumableUpload
from synapse_objstore.errors import LocalFileChangedError
from synapse_objstore.io_loop import run, submit
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.fault_proxy import FaultProxy
from synapse_objstore.verification import RemoteChecker, State
from tests.support.s3 import s3_client

KiB = 1024
MiB = 1024 * KiB
MEDIA = "local_content/ab/cd/efghijkl"


def test_a_file_that_grows_during_its_multipart_upload_is_not_verified(
    moto: MotoServer, bucket: str, tmp_path: Path, open_store: Callable[[dict[str, Any]], ObjectStore],
) -> None:
    local = tmp_path / "media"
    local.write_bytes(os.urandom(4 * 5 * MiB + 1234))  # five parts of 5 MiB, the last short
    # create, parts 1 and 2 reach the store; part 3 is held until the file has grown
    with FaultProxy(moto.endpoint_url) as proxy:
        proxy.schedule(3, silent=True)
        store = open_store({"bucket": bucket, "endpoint_url": proxy.endpoint_url, "multipart_threshold": 5 * MiB,
                            "multipart_chunksize": 5 * MiB, "multipart_concurrency": 1, "retries": 3})
        grow_while_a_part_is_held(store, local, proxy, held_after=4)
    assert s3_client(moto.endpoint_url).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def grow_while_a_part_is_held(store: ObjectStore, local: Path, proxy: FaultProxy, held_after: int) -> None:
    """Upload `local` while the proxy holds a request once `held_after` have come; grow the file
    then, and let the request through: the upload fails, and no object is there."""
    checker = RemoteChecker(store)
    digest = run(checker.digest(str(local)))
    upload = submit(store.put_file(str(local), MEDIA))
    deadline = time.monotonic() + 30
    while proxy.stats().get("requests", 0) < held_after:
        assert time.monotonic() < deadline, "the upload never reached the held part"
        time.sleep(0.01)
    with local.open("ab") as file:
        file.write(b"grown" * 100)
    proxy.set(silent=False)  # the held request is reset; the client's retry gets through
    with pytest.raises(LocalFileChangedError, match="changed during its upload"):
        upload.result(timeout=60)
    assert run(checker.check(MEDIA, digest)).state is State.MISSING


def test_a_file_that_grows_during_its_azure_block_upload_is_not_verified(
    azurite: Azurite, tmp_path: Path, open_store: Callable[[dict[str, Any]], ObjectStore],
) -> None:
    """The same through Azure's staged blocks: no blob is committed."""
    container = azurite.create_container(f"media-{uuid.uuid4().hex[:12]}")
    local = tmp_path / "media"
    local.write_bytes(os.urandom(4 * 64 * KiB + 1234))  # five blocks of 64 KiB, the last short
    with FaultProxy(azurite.account_url.rsplit("/", 1)[0]) as proxy:
        proxy.schedule(2, silent=True)  # blocks 1 and 2 reach Azurite; block 3 is held
        store = open_store({"backend": "azure", "container": container, "account_name": azurite.account_name,
                            "account_key": azurite.account_key,
                            "account_url": f"{proxy.endpoint_url}/{azurite.account_name}",
                            "block_size": 64 * KiB, "upload_concurrency": 1})
        grow_while_a_part_is_held(store, local, proxy, held_after=3)


def test_a_file_that_grows_during_its_gcs_resumable_upload_leaves_no_copy_that_looks_whole(
    gcs_emulator: GcsEmulator, tmp_path: Path, open_store: Callable[[dict[str, Any]], ObjectStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same through GCS's resumable upload, whose last chunk completes the object: the
    size is checked before that chunk goes."""
    bucket = gcs_emulator.create_bucket(f"media-{uuid.uuid4().hex[:12]}")
    local = tmp_path / "media"
    local.write_bytes(os.urandom(3 * 256 * KiB + 1234))  # four chunks of 256 KiB, the last short
    send_part = ResumableUpload.send_part

    async def send_then_grow(self: ResumableUpload, number: int, offset: int, data: bytes) -> None:
        await send_part(self, number, offset, data)
        if offset + 2 * len(data) >= self.size:  # the part before the last: Synapse writes more
            with local.open("ab") as file:
                file.write(b"grown" * 100)

    monkeypatch.setattr(ResumableUpload, "send_part", send_then_grow)
    store = open_store({"backend": "gcs", "bucket": bucket, "endpoint_url": gcs_emulator.endpoint_url,
                        "token": "anon", "chunk_size": 256 * KiB})
    checker = RemoteChecker(store)
    digest = run(checker.digest(str(local)))
    with pytest.raises(LocalFileChangedError, match="changed during its upload"):
        run(store.put_file(str(local), MEDIA))
    assert run(checker.check(MEDIA, digest)).state is State.MISSING
