"""Bring offloaded media back from the store into the local media store.

Each file is downloaded into a temporary directory inside the media store, checked
(size, and MD5 against the ETag where the store gives one), flushed to disk and only then
renamed into place, so Synapse never sees a partial file. A media whose files are all back
is marked not deleted in cache.db, so a later upload handles it again (marks are committed a
batch at a time: one lost to a crash is made again by the next run, which finds the files back).

Restoring every offloaded media, the store is listed once (listing_index.py) and each media's
files are looked up there, rather than asked for with a HEAD and a LIST per media; an original
the listing lacks is asked for with a HEAD before it is called missing. With --media, each
media is asked for on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from synapse_objstore.backends.base import ObjectMetadata, ObjectStream
from synapse_objstore.checksums import ContentDigest
from synapse_objstore.cli.cache_db import CacheDb, FileRecord
from synapse_objstore.cli.journal import Journal
from synapse_objstore.cli.listing_index import ListingIndex
from synapse_objstore.cli.localfs import file_size, new_file_mode, place_media_file
from synapse_objstore.cli.report import Summary
from synapse_objstore.cli.scratch_dir import ScratchDir
from synapse_objstore.cli.store_watch import watched
from synapse_objstore.errors import MediaFileError, MediaPathError
from synapse_objstore.health import preflight
from synapse_objstore.media import Media, parse_media_path, printable
from synapse_objstore.store import ObjectInfo, ObjectStore
from synapse_objstore.verification import RemoteChecker

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# The most bytes of an object that `fetch` digests on the I/O loop (MD5 and SHA-256: about
# half a millisecond), rather than in a worker thread.
HASH_IN_LINE = 256 * 1024
TMP_DIR_NAME = ".objstore-offload-tmp"


@dataclass(frozen=True)
class Expected:
    """What a restored file must hash to besides the size listed: the MD5 of the file as it was
    offloaded (cache.db, where this cache.db offloaded it), else a SHA-256 (cache.db's, or the
    one stored with the object). The store's ETag only says that the bytes arrived as the store
    holds them; these say that they are the media's bytes (an object overwritten with other
    bytes of the same size passes the first, not these)."""

    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class RestoreOptions:
    base_path: str
    dry_run: bool = False
    jobs: int = 8


async def download(store: ObjectStore, info: ObjectInfo, target: str, tmp_dir: str, etag_is_md5: bool,
                   durable: bool = True, digest: ContentDigest | None = None,
                   expected: Expected | None = None, place: Callable[[str], None] | None = None,
                   mode: int | None = None) -> ObjectMetadata | None:
    """Download an object to `target` through a checked temporary file; never leaves a partial `target`.
    `durable`: flushed to disk before it is renamed into place (not for a scratch copy). Returns
    the metadata stored with the object, where the GET's reply gave it. `digest`: fed every
    byte, as written (by default one of what the check needs). `expected`: what the content
    must hash to (see Expected; a sha256 stored with the object counts too). `place`: renames
    the checked temporary file (its path) into place, instead of to `target`. `mode`: the
    file's permissions (a temporary file is made readable by its owner only).

    The body is written a CHUNK at a time, each in one worker thread: the pieces a stream
    returns (as the HTTP client received them, often 16-64 KiB) are gathered first, so a
    small file costs one thread hop, which also checks it and renames it into place."""
    fd, tmp_path = tempfile.mkstemp(dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as file:
            stream = await _open(store, info)
            expected = _with_stored_sha256(expected, stream.metadata)
            if digest is None:
                digest = ContentDigest(sha256=expected.md5 is None and expected.sha256 is not None)
            pending, pending_size = [], 0
            try:
                while data := await stream.read(CHUNK):
                    pending.append(data)
                    pending_size += len(data)
                    if pending_size >= CHUNK:
                        await asyncio.to_thread(_write_and_hash, file, digest, pending)
                        pending, pending_size = [], 0
            finally:
                await stream.close()
            check = functools.partial(_check, info=info, etag_is_md5=etag_is_md5, expected=expected)
            await asyncio.to_thread(_finish, file, digest, pending, check, durable, mode, tmp_path,
                                    place or functools.partial(_rename, target=target))
            return stream.metadata
    finally:
        # a stat and an unlink, in line so that they run even while the task is cancelled
        if os.path.exists(tmp_path):  # noqa: ASYNC240
            os.remove(tmp_path)


async def fetch(store: ObjectStore, info: ObjectInfo, etag_is_md5: bool,
                digest: ContentDigest) -> tuple[bytes, ObjectMetadata | None]:
    """The content of a small object, read into memory and fed to `digest`, checked as
    `download` checks its file; and the metadata the GET's reply gave, if any. Up to
    HASH_IN_LINE bytes are digested as they arrive, on the I/O loop (no thread hop); a larger
    object in one worker thread once read, so that the loop is not held for milliseconds. An
    object that turns out larger than `info` says fails as soon as it does, before more of
    it is held."""
    stream = await _open(store, info)
    in_line = info.size <= HASH_IN_LINE
    pieces, size = [], 0
    try:
        while data := await stream.read(CHUNK):
            size += len(data)
            if size > info.size:
                raise OSError(f"{info.media_path} holds more than the {info.size} bytes listed")
            if in_line:
                digest.update(data)
            pieces.append(data)
    finally:
        await stream.close()
    if not in_line:
        await asyncio.to_thread(_hash, digest, pieces)
    _check(digest, info, etag_is_md5)
    return b"".join(pieces), stream.metadata


async def _open(store: ObjectStore, info: ObjectInfo) -> ObjectStream:
    stream = await store.open_read(info.media_path)
    if stream is None:
        raise FileNotFoundError(f"{info.media_path} is not in {store.backend.describe()}")
    return stream


def _hash(digest: ContentDigest, pieces: list[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


def _write_and_hash(file: BinaryIO, digest: ContentDigest, pieces: list[bytes]) -> None:
    for piece in pieces:
        file.write(piece)
        digest.update(piece)


def _finish(file: BinaryIO, digest: ContentDigest, pieces: list[bytes], check: Callable[[ContentDigest], None],
            durable: bool, mode: int | None, tmp_path: str, place: Callable[[str], None]) -> None:
    """Write the last pieces, `check` the content, flush (if `durable`) and `place` it. Blocking."""
    _write_and_hash(file, digest, pieces)
    file.flush()
    check(digest)
    if mode is not None:
        os.fchmod(file.fileno(), mode)
    if durable:
        os.fsync(file.fileno())
    place(tmp_path)


def _rename(tmp_path: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(tmp_path, target)


def _with_stored_sha256(expected: Expected | None, metadata: ObjectMetadata | None) -> Expected:
    expected = expected or Expected()
    if expected.sha256 is None and metadata is not None and metadata.sha256:
        return dataclasses.replace(expected, sha256=metadata.sha256)
    return expected


def _is_file_of(media: Media, media_path: str) -> bool:
    """Whether a listed path is one Synapse writes for `media`: its original, or a thumbnail
    named as Synapse names them right in its thumbnail directory (not deeper, nor anything
    else a listing of that directory may hold)."""
    if media_path == media.file_path:
        return True
    directory, _, _ = media_path.rpartition("/")
    return directory == media.thumbnail_dir and parse_media_path(media_path) is not None


def _check(digest: ContentDigest, info: ObjectInfo, etag_is_md5: bool, expected: Expected = Expected()) -> None:
    """OSError unless the content downloaded has the size listed and hashes to what is
    `expected` of it; and, where nothing is expected of it, to the MD5 its ETag says (where the
    ETag is one). A store whose ETags are no MD5s though they look like ones (SSE-KMS) passes
    when the content is what was offloaded."""
    if digest.size != info.size:
        raise OSError(f"downloaded {digest.size} bytes of {info.media_path}, expected {info.size}")
    md5 = digest.md5()
    if expected.md5 is not None:
        if md5 != expected.md5.lower():
            raise OSError(f"downloaded content of {info.media_path} has MD5 {md5}, not that of the file offloaded "
                          f"({expected.md5}, cache.db): the store holds other bytes; left in the store")
        return
    # (a digest that took no SHA-256, as migrate's may not, gives "")
    if expected.sha256 is not None and (sha256 := digest.result().sha256):
        if sha256 != expected.sha256.lower():
            raise OSError(f"downloaded content of {info.media_path} has SHA-256 {sha256}, not the one recorded "
                          f"for it ({expected.sha256}): the store holds other bytes; left in the store")
        return
    etag = (info.etag or "").lower()
    if etag_is_md5 and len(etag) == 32 and etag != md5:
        raise OSError(f"downloaded content of {info.media_path} has MD5 {md5}, the store says {etag}")


class Restorer:
    def __init__(self, store: ObjectStore, cache: CacheDb, options: RestoreOptions, summary: Summary,
                 progress: Any) -> None:
        self.store = store
        self.options = options
        self.summary = summary
        self.progress = progress
        self.etag_is_md5 = RemoteChecker(store).etag_is_md5
        self.mode = new_file_mode()  # as Synapse's own files get (a temporary file's is 0600)
        self.journal = Journal(cache)
        self.tmp_dir = ""  # this run's scratch directory (scratch_dir.py), once it is made
        self.index: ListingIndex | None = None
        self._back: list[Media] = []  # media whose files are all back, to mark not deleted
        # cache.db's records of the files of the media to restore, a page of media at a time
        self._offloaded: dict[tuple[str, str], list[FileRecord]] = {}

    async def run(self, selected: Sequence[Media] | None) -> None:
        await preflight(self.store)
        scratch = None if self.options.dry_run else ScratchDir(os.path.join(self.options.base_path, TMP_DIR_NAME))
        if scratch is not None:
            self.tmp_dir = scratch.path
        slots = asyncio.Semaphore(self.options.jobs)

        async def one(media: Media) -> None:
            async with slots:
                try:
                    await self._media(media)
                except Exception as error:  # fails this media only
                    self.summary.fail(media.describe(), f"{type(error).__name__}: {error}")
                self.progress.update(1)

        async def restore_all() -> None:
            if selected is None:
                self.index = await ListingIndex.of(self.store)
            batch: list[asyncio.Task[None]] = []
            try:
                async for media in self._media_to_restore(selected):
                    batch.append(asyncio.create_task(one(media)))
                    if len(batch) >= 4 * self.options.jobs:
                        await asyncio.gather(*batch)
                        batch = []
                        await self._mark_back()
            except asyncio.CancelledError:  # the store went silent: so is each download under way
                for task in batch:
                    task.cancel()
                await asyncio.gather(*batch, return_exceptions=True)
                raise
            await asyncio.gather(*batch)
            await self._mark_back()

        try:
            await watched(restore_all(), self.store)
        finally:
            await self.journal.close()
            if self.index is not None:
                self.index.close()
            if scratch is not None:
                scratch.close()

    async def _media_to_restore(self, selected: Sequence[Media] | None) -> AsyncIterator[Media]:
        if selected is not None:
            for media in selected:
                yield media
            return
        after = -1
        while page := await self.journal.call(self.journal.cache.media_page, True, after):
            after = page[-1][0]
            self._offloaded.update(await self.journal.call(self.journal.cache.files_of_many, [m for _, m in page]))
            for _, media in page:
                yield media

    async def _mark_back(self) -> None:
        back, self._back = self._back, []
        if back:
            await self.journal.call(self.journal.cache.set_deleted, back, False)

    async def _remote_files(self, media: Media) -> list[ObjectInfo]:
        original: ObjectInfo | None = None
        if self.index is not None:  # indexed queries: in line, cheaper than a thread hop
            original, thumbnails = self.index.get(media.file_path), self.index.under(media.thumbnail_dir + "/")
        if original is None:  # not listed (written since, or really missing), or no listing
            original = await self.store.info(media.file_path)
        if original is None:
            raise FileNotFoundError(f"not in {self.store.backend.describe()}")
        if self.index is None:
            thumbnails = [info async for info in self.store.list(media.thumbnail_dir + "/")]
        return [original, *thumbnails]

    async def _media(self, media: Media) -> None:
        self.summary.add(media=1)
        try:
            remote = await self._remote_files(media)
        except (OSError, ValueError, MediaPathError) as error:
            self.summary.fail(media.describe(), error)
            return
        complete = True
        records = self._offloaded.pop((media.origin, media.media_id), None)
        if records is None:  # named with --media: asked on its own
            records = await self.journal.call(self.journal.cache.files_of, media)
        offloaded = {record.path: record for record in records}
        files: list[ObjectInfo] = []
        for info in remote:
            if _is_file_of(media, info.media_path):
                files.append(info)
            else:
                logger.warning("%s: not a file Synapse writes for %s; left in the store, not restored",
                               printable(info.media_path), media.describe())
        remote = files
        listed = {info.media_path for info in remote}
        unlisted = [path for path in offloaded if path not in listed]  # offloaded, and gone from the store
        targets = [os.path.join(self.options.base_path, info.media_path) for info in remote]
        gone = [os.path.join(self.options.base_path, path) for path in unlisted]
        sizes = await asyncio.to_thread(lambda: [file_size(path) for path in [*targets, *gone]])
        local_sizes, unlisted_sizes = sizes[:len(remote)], sizes[len(remote):]
        for path, local_size in zip(unlisted, unlisted_sizes, strict=True):
            if local_size is None:
                self.summary.fail(path, f"offloaded (cache.db records it) but not in {self.store.backend.describe()}")
                complete = False
        for info, target, local_size in zip(remote, targets, local_sizes, strict=True):
            if local_size == info.size:
                continue  # already back (an earlier, interrupted restore)
            if local_size is not None:
                self.summary.fail(info.media_path, f"local file {target} ({local_size} bytes) differs from the "
                                  f"remote copy ({info.size} bytes); left as it is")
                complete = False
                continue
            if self.options.dry_run:
                self.summary.add(files_restored=1, bytes_restored=info.size)
                continue
            record = offloaded.get(info.media_path)
            expected = Expected(record.md5, record.sha256) if record is not None else None
            place = functools.partial(place_media_file, self.options.base_path, info.media_path)
            try:
                await download(self.store, info, target, self.tmp_dir, self.etag_is_md5, expected=expected,
                               place=place, mode=self.mode)
            except (OSError, MediaPathError, MediaFileError) as error:
                self.summary.fail(info.media_path, error)
                complete = False
                continue
            self.summary.add(files_restored=1, bytes_restored=info.size)
        if complete and not self.options.dry_run:
            self._back.append(media)
