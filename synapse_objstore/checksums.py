"""What a local file's S3 ETag would be, so a remote copy can be checked without downloading it.

S3 (and S3-compatible stores, without SSE-C or SSE-KMS) gives a single-PUT object the hex
MD5 of its content as ETag, and a multipart object the MD5 of its parts' binary MD5s
followed by "-N" (N parts). The multipart form depends on the part size, so it is computed
for every part size the object may have been written with: ours (the S3 backend's
`multipart_chunksize`) and boto3's default, which s3_media_upload and
synapse-s3-storage-provider use. One pass over the file feeds all of them, and the file's
SHA-256: what Synapse (1.128+) records for each media, and what an upload stores as the
object's `sha256` metadata.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from synapse_objstore.errors import LocalFileChangedError

MiB = 1024 * 1024
# No S3 multipart upload has parts smaller than this (except the last), so no smaller file is multipart.
MIN_PART_SIZE = 5 * MiB
READ_BLOCK = MiB

MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-([0-9]+)$")


class FileIdentity(NamedTuple):
    """What changes when a file is replaced, written to or truncated.

    The change time too: a write of the same size whose mtime is then put back (`cp -p`,
    `rsync -t --inplace`, `touch -r`) keeps device, inode, size and mtime, but no one can set
    the ctime back."""

    device: int
    inode: int
    size: int
    modified_ns: int
    changed_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@dataclass(frozen=True)
class LocalDigest:
    """Size and checksums of a local file, read once."""

    size: int
    md5: str
    # multipart ETag ("hex-N") by part size
    multipart: dict[int, str] = field(default_factory=dict)
    # the file as it was read: a delete of the local copy checks it is still that file
    identity: FileIdentity | None = None
    # hex SHA-256 of the content
    sha256: str = ""

    def matches_etag(self, etag: str | None) -> bool:
        """Whether an S3 ETag proves the object holds this file's content."""
        if not etag:
            return False
        etag = etag.strip('"').lower()
        if MD5_ETAG.match(etag):
            return etag == self.md5
        return MULTIPART_ETAG.match(etag) is not None and etag in self.multipart.values()


class _PartHasher:
    """Feeds bytes into per-part MD5s of a fixed part size."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.parts: list[bytes] = []
        self._current = hashlib.md5()
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self._finish_part()

    def _finish_part(self) -> None:
        self.parts.append(self._current.digest())
        self._current = hashlib.md5()
        self._filled = 0

    def etag(self) -> str:
        if self._filled:
            self._finish_part()
        return f"{hashlib.md5(b''.join(self.parts)).hexdigest()}-{len(self.parts)}"


def digest_file(path: str, part_sizes: Iterable[int] = ()) -> LocalDigest:
    """Read `path` once (blocking: run it in a thread) and return its size, MD5, SHA-256 and
    the multipart ETags it would have for each of `part_sizes`."""
    return read_and_digest(path, part_sizes)[0]


def read_and_digest(path: str, part_sizes: Iterable[int] = (), keep: bool = False) -> tuple[LocalDigest, bytes | None]:
    """`digest_file`, and with `keep` the file's bytes too when they came in the first read
    (a file of at most READ_BLOCK bytes, as most media are): the very bytes the digest was
    computed from, so an upload of them needs no second read of the file and no second MD5,
    and sends what the digest says it holds."""
    with open(path, "rb") as file:
        before = FileIdentity.of(os.fstat(file.fileno()))
        # A read allocates all it asks for: a small file's size (and a byte more) rather than a
        # whole block, most of it unused, for each of the many small files. One that grew
        # meanwhile is not read further: its identity below no longer matches.
        first = file.read(min(READ_BLOCK, before.size + 1))
        # Small files cannot have been uploaded in parts: skip the per-part hashing.
        digest = ContentDigest(part_sizes if len(first) >= READ_BLOCK else ())
        digest.update(first)
        if len(first) == READ_BLOCK:  # the rest, through one buffer rather than a new one per block
            block = bytearray(READ_BLOCK)
            view = memoryview(block)
            while read := file.readinto(block):
                digest.update(view[:read])
        after = FileIdentity.of(os.fstat(file.fileno()))
    if after != before or digest.size != after.size:
        raise LocalFileChangedError(f"local file {path} changed while it was read ({digest.size} bytes read)")
    return digest.result(after), (first if keep and digest.size == len(first) else None)


class ContentDigest:
    """What `read_and_digest` computes, of content fed a piece at a time as it arrives (a
    download): its size, MD5, SHA-256 (unless `sha256` is False) and the multipart ETags it
    would have for each of `part_sizes` (pass none for content below MIN_PART_SIZE)."""

    def __init__(self, part_sizes: Iterable[int] = (), sha256: bool = True) -> None:
        self.size = 0
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if sha256 else None
        self._parts = [_PartHasher(size) for size in sorted(set(part_sizes))]

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        for hasher in self._parts:
            hasher.update(data)

    def md5(self) -> str:
        """The hex MD5 of the content so far."""
        return self._md5.hexdigest()

    def result(self, identity: FileIdentity | None = None) -> LocalDigest:
        """The digest of all the content fed; `identity`: the file it was read from, if any."""
        etags = {h.part_size: h.etag() for h in self._parts} if self.size >= MIN_PART_SIZE else {}
        sha256 = self._sha256.hexdigest() if self._sha256 is not None else ""
        return LocalDigest(size=self.size, md5=self.md5(), multipart=etags, identity=identity, sha256=sha256)


# The bytes a content type is told from (filetype reads at most 8 KiB).
HEAD_SIZE = 8192


def sha256_and_head(path: str) -> tuple[str, bytes]:
    """The hex SHA-256 of a file and its first HEAD_SIZE bytes, in one read (blocking: run it
    in a thread). What the provider stores as an upload's metadata."""
    sha256 = hashlib.sha256()
    with open(path, "rb") as file:
        head = data = file.read(READ_BLOCK)
        while data:
            sha256.update(data)
            data = file.read(READ_BLOCK)
    return sha256.hexdigest(), head[:HEAD_SIZE]
