"""Is the remote object the same as the local file? And is the store there at all?

A copy counts as verified when the sizes match and, where the store gives a checksum (what
the backend's `checksum_scheme` says: for S3 without SSE-C, the ETag), the checksum matches.
Where it gives none, or one we cannot compute (SSE-KMS, an unknown part size), the object
is read back and its MD5 compared, unless the caller settles for size only
(`read_back=False`: an object without a checksum is then trusted on size, a checksum that
does not match still means "differs").
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from dataclasses import dataclass

from synapse_objstore.cli.checksums import LocalDigest, digest_file
from synapse_objstore.health import StoreCheckError, check_store
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
        self.scheme = store.backend.checksum_scheme()
        # A 32-hex-digit `etag` of an object is the MD5 of its content.
        self.etag_is_md5 = self.scheme.whole_md5
        self.part_sizes = self.scheme.multipart_part_sizes

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
        if self.scheme.gives_checksums and info.etag is not None:
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

    async def check_upload(self, media_path: str, digest: LocalDigest, checksum: str | None) -> Check:
        """Verify a copy just uploaded: by the checksum in the store's reply where the store's
        checksums are trusted (the MD5 of what it received), else by asking as `check` does."""
        if checksum is not None and self.scheme.gives_checksums and digest.matches_etag(checksum):
            return Check(State.VERIFIED, "size+etag of the upload reply")
        return await self.check(media_path, digest)

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
    """Fail once, naming the store and the reason, when the bucket (or root directory) is
    missing, the credentials are refused or the store is unreachable, instead of once per file.
    It is the provider's startup check (health.py), asked before a run."""
    try:
        await check_store(store)
    except StoreCheckError as error:
        raise FatalStoreError(str(error)) from None
