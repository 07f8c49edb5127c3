"""Is the remote object the same as the local file?

A copy counts as verified when the sizes match and, where the store gives a checksum (what
the backend's `checksum_scheme` says: for S3 without SSE-C, the ETag), the checksum matches.
Where it gives none, or one we cannot compute (SSE-KMS, an unknown part size), the object
is read back and its MD5 compared, unless the caller settles for size only
(`read_back=False`: an object without a checksum is then trusted on size, a checksum that
does not match still means "differs").

Where the store gives no checksum (S3 with SSE-C, whose ETag is no MD5) and the object
carries the content's SHA-256 as metadata (`ObjectInfo.sha256`, written by our uploads on S3,
GCS and Azure), that decides: equal to the local file's SHA-256, the copy is verified without
being read back. Where the store does give one, its checksum decides, and one that does not
match is read back as before: an opaque ETag (SSE-KMS) and other bytes than the file's look
alike, and our metadata, computed from the file, cannot tell them apart.

Trusting the SHA-256 is sound because the metadata is never the store's guess: our upload
computed it from the file it read, and the store checked the body it received against a
digest sent with it. On S3, every PUT and part carries a Content-MD5 (backends/s3/uploads.py);
botocore signs the body's SHA-256 into the request whenever no such header is sent, and over
HTTPS with one it sends the Content-MD5 instead, so either way S3 and Ceph RGW answer a
damaged body with 400 (BadDigest, XAmzContentSHA256Mismatch) rather than store it
(tests/cli/test_metadata_ceph.py flips a byte on the way). GCS and Azure keep an MD5 of what
they stored, which is compared first. moto checks neither digest: there, a body damaged on the
wire would pass; it is a test double, not a store. A HEAD cannot prove the store still holds
intact bytes today (a read-back, or the store's own scrubbing, does), and S3 cannot change an
object's body without a PUT that replaces its metadata. A sha256 that differs from the local
file's makes the copy "differs".
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from dataclasses import dataclass

from synapse_objstore.backends.base import LocalContent
from synapse_objstore.checksums import LocalDigest, digest_file, read_and_digest
from synapse_objstore.store import ObjectInfo, ObjectStore

READ_BACK_CHUNK = 1024 * 1024

# A local file's digest, and its bytes when they were kept for its upload.
LocalRead = tuple[LocalDigest, LocalContent | None]


class State(enum.Enum):
    MISSING = "missing"
    DIFFERS = "differs"
    VERIFIED = "verified"


@dataclass(frozen=True)
class Check:
    state: State
    detail: str = ""  # how it was verified, or how it differs

    def after_upload(self, copy: str) -> str:
        """Why an upload failed, for a check after it that did not verify the copy."""
        state = "is missing" if self.state is State.MISSING else "differs"
        return f"{copy} {state} after upload: {self.detail}".rstrip(": ")


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

    async def digest_for_upload(self, local_path: str) -> LocalRead:
        """`digest`, with the file's bytes when it is small enough to come in one read: to be
        uploaded as they were hashed, without reading the file again."""
        return await asyncio.to_thread(self.read_local, local_path, True)

    def read_local(self, local_path: str, keep: bool) -> LocalRead:
        """Blocking (run it in a worker thread, with whatever else that turn does): `digest`,
        and with `keep` the bytes of a file small enough to come in one read (see
        `digest_for_upload`)."""
        digest, data = read_and_digest(local_path, self.part_sizes, keep)
        return digest, (LocalContent(data, digest.md5) if data is not None else None)

    async def check(self, media_path: str, digest: LocalDigest, info: ObjectInfo | None = None) -> Check:
        """Compare the object at `media_path` with a local file's digest."""
        if info is None:
            info = await self.store.info(media_path)
        if info is None:
            return Check(State.MISSING)
        if info.size != digest.size:
            return Check(State.DIFFERS, f"remote size {info.size} != local size {digest.size}")
        if self.scheme.gives_checksums and info.etag is not None:
            # The store's own checksum comes first: one that does not match may be an opaque
            # ETag (SSE-KMS) or other bytes than the file's, which no metadata of ours can
            # tell apart (it was computed from the file, not from what arrived): read back.
            if digest.matches_etag(info.etag):
                return Check(State.VERIFIED, "size+etag")
            if not self.read_back:
                return Check(State.DIFFERS, f"remote ETag {info.etag} does not match the local file")
        elif info.sha256 is not None and digest.sha256:
            if info.sha256 == digest.sha256:
                return Check(State.VERIFIED, "size+sha256")
            return Check(State.DIFFERS, f"remote sha256 {info.sha256} != local sha256 {digest.sha256}")
        elif not self.read_back:
            return Check(State.VERIFIED, "size")
        remote = await self.remote_md5(media_path)
        if remote is None:
            return Check(State.MISSING)
        if remote != digest.md5:
            return Check(State.DIFFERS, f"remote MD5 {remote} != local MD5 {digest.md5}")
        return Check(State.VERIFIED, "size+read-back")

    async def check_upload(self, media_path: str, digest: LocalDigest, checksum: str | None) -> Check:
        """Verify a copy just uploaded.

        Where the store's checksums are trusted, its reply names what it received: the file's
        checksum, and the copy is verified. Another one means either that other bytes arrived,
        or that this store's checksums are no MD5s (SSE-KMS, some encrypting stores), which
        it then says of the object too. So the object is looked at: a store that reports
        another checksum for it than the one it acknowledged is not believed (the upload
        fails, the local file stays); one that repeats it is checked as `check` does (read
        back, unless size only). Without a checksum in the reply, `check` alone decides."""
        if not checksum or not self.scheme.gives_checksums:  # none, or an empty one: names no content
            return await self.check(media_path, digest)
        if digest.matches_etag(checksum):
            return Check(State.VERIFIED, "size+etag of the upload reply")
        info = await self.store.info(media_path)
        if info is None:
            return Check(State.MISSING)
        if info.etag is not None and _bare_etag(info.etag) != _bare_etag(checksum):
            return Check(State.DIFFERS, f"the store acknowledged the upload with ETag {_bare_etag(checksum)}, "
                                        f"but reports {_bare_etag(info.etag)} for the object")
        return await self.check(media_path, digest, info)

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


def _bare_etag(etag: str) -> str:
    return etag.strip('"').lower()
