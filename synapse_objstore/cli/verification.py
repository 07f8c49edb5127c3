"""Is the remote object the same as the local file? And is the store there at all?

A copy counts as verified when the sizes match and, where the store gives a checksum (S3
without SSE-C: the ETag), the checksum matches. Where it gives none, or the ETag is not one
we can compute (SSE-KMS, an unknown part size), the object is read back and its MD5
compared, unless the caller settles for size only (`read_back=False`: a store without
checksums is then trusted on size, an ETag that does not match still means "differs").
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from dataclasses import dataclass

from synapse_objstore.backends.s3 import S3Backend
from synapse_objstore.cli.checksums import BOTO3_PART_SIZE, LocalDigest, digest_file
from synapse_objstore.store import ObjectInfo, ObjectStore

READ_BACK_CHUNK = 1024 * 1024


class FatalStoreError(RuntimeError):
    """The store cannot be used at all (no bucket, refused credentials): stop the run."""


class State(enum.Enum):
    MISSING = "missing"
    DIFFERS = "differs"
    VERIFIED = "verified"


@dataclass(frozen=True)
class Check:
    state: State
    detail: str = ""  # how it was verified, or how it differs


class RemoteChecker:
    def __init__(self, store: ObjectStore, read_back: bool = True) -> None:
        self.store = store
        self.read_back = read_back
        backend = store.backend
        # With SSE-C the ETag is not the MD5 of the content; other stores give no MD5 we trust.
        self.etag_is_md5 = isinstance(backend, S3Backend) and backend.settings.sse_customer_key is None
        self.part_sizes: tuple[int, ...] = (
            (int(backend.settings.multipart_chunksize), BOTO3_PART_SIZE) if isinstance(backend, S3Backend) else ()
        )

    async def digest(self, local_path: str) -> LocalDigest:
        """Size and checksums of a local file, read in a worker thread (never on the I/O loop)."""
        return await asyncio.to_thread(digest_file, local_path, self.part_sizes)

    async def check(self, media_path: str, digest: LocalDigest, info: ObjectInfo | None = None) -> Check:
        """Compare the object at `media_path` with a local file's digest."""
        if info is None:
            info = await self.store.info(media_path)
        if info is None:
            return Check(State.MISSING)
        if info.size != digest.size:
            return Check(State.DIFFERS, f"remote size {info.size} != local size {digest.size}")
        if self.etag_is_md5:
            if digest.matches_etag(info.etag):
                return Check(State.VERIFIED, "size+etag")
            if not self.read_back:
                return Check(State.DIFFERS, f"remote ETag {info.etag} does not match the local file")
        elif not self.read_back:
            return Check(State.VERIFIED, "size")
        remote = await self.remote_md5(media_path)
        if remote is None:
            return Check(State.MISSING)
        if remote != digest.md5:
            return Check(State.DIFFERS, f"remote MD5 {remote} != local MD5 {digest.md5}")
        return Check(State.VERIFIED, "size+read-back")

    async def remote_md5(self, media_path: str) -> str | None:
        """MD5 of the object's content, streamed; None if it does not exist."""
        stream = await self.store.open_read(media_path)
        if stream is None:
            return None
        md5 = hashlib.md5()
        try:
            while data := await stream.read(READ_BACK_CHUNK):
                await asyncio.to_thread(md5.update, data)
        finally:
            await stream.close()
        return md5.hexdigest()


async def preflight(store: ObjectStore) -> None:
    """Fail once, naming the store, when the bucket (or root directory) is missing or access is refused,
    instead of once per file."""
    try:
        await store.connect()
        await store.filesystem().call("info", store.backend.root)
    except FileNotFoundError:
        if isinstance(store.backend, S3Backend):
            raise FatalStoreError(f"the bucket does not exist: {store.backend.describe()}") from None
        # other backends (a local directory with auto_mkdir, ...) create their root on first write
    except PermissionError as error:
        raise FatalStoreError(f"access refused by {store.backend.describe()} (check the credentials): {error}") from None
    except Exception as error:  # noqa: BLE001 - any other failure here means the store is unusable
        raise FatalStoreError(f"cannot use {store.backend.describe()}: {type(error).__name__}: {error}") from None


async def close_store(store: ObjectStore) -> None:
    """Close the store, and the client session of an async S3 filesystem, which s3fs leaves
    open (it only closes it by itself for synchronous filesystems)."""
    creator = getattr(store.filesystem().fs, "_s3creator", None)
    if creator is not None:
        await creator.__aexit__(None, None, None)
    await store.close()
