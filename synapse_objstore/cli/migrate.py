"""`migrate`: copy every object from one store to another, verified as an upload is.

Objects whose copy in the target is already verified are skipped, so an interrupted
migration resumes where it stopped. When both stores give MD5 ETags, matching sizes and
ETags prove the copy without a download; otherwise the object is downloaded (checked against
the source's size and ETag), and the target is compared with what arrived, uploaded from it if
it differs, and checked again. Each object is read once: its MD5, SHA-256 (and multipart ETags,
for a large one) are computed as it arrives, and a small one (IN_MEMORY) is held in memory and
sent as it is, so its copy costs one GET and one PUT with its Content-MD5; a larger one is
written to a temporary file and uploaded from there. A copy keeps the source object's
metadata (its Content-Type and sha256; between backends too, where both keep metadata), and
gets the sha256 of the content it holds where the source had none; a source whose sha256
metadata is not its content's is not copied. The metadata comes from the source's GET reply
where it has it (S3), else from a HEAD. A target whose owner marker
(ownership.py) names another homeserver is refused; the marker itself is not copied: the first
`upload` or `reconcile --apply` on the target records the owner there.

The target is listed (listing_index.py) rather than asked about each object with a HEAD:
an object the listing lacks is copied (as one a HEAD found missing would be), one it has is
compared as before. A copy is checked against the ETag of the upload's reply where the target
gives MD5 ETags (as `upload` checks its copies), else with a HEAD. A scratch copy is not
flushed to disk: it is uploaded at once and deleted.

An object is counted migrated only once a second listing of the target, at the end of the run,
shows it still there with the same size (and the same ETag, where the first listing was what
showed the copy good): one deleted or replaced in the target while the run went on is looked at
with a HEAD, copied again where it is not the source's, and checked, as at its first turn.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from synapse_objstore.backends.base import Backend, LocalContent, ObjectMetadata
from synapse_objstore.checksums import MIN_PART_SIZE, ContentDigest, LocalDigest, MiB
from synapse_objstore.cli.each import each
from synapse_objstore.cli.listing_index import Counted, ListingIndex
from synapse_objstore.cli.ownership import OWNER_MARKER, check_same_owner
from synapse_objstore.cli.report import Summary
from synapse_objstore.cli.restore import download, fetch
from synapse_objstore.cli.store_watch import watched
from synapse_objstore.errors import CommandError, MediaPathError
from synapse_objstore.health import preflight
from synapse_objstore.store import ObjectInfo, ObjectStore
from synapse_objstore.upload_memory import UploadMemory
from synapse_objstore.verification import Check, RemoteChecker, State

# An object of at most this many bytes is copied through memory (one GET, one PUT of the bytes
# read), where the target's backend takes content; a larger one goes through a scratch file.
# Below MIN_PART_SIZE, so below any multipart threshold: always one PUT.
IN_MEMORY = 4 * MiB
# The most that the jobs hold in memory at once of the objects they copy that way (most media
# are far smaller: a job waits for room only among several objects of megabytes).
IN_MEMORY_LIMIT = 16 * MiB


class Migrator:
    def __init__(self, source: ObjectStore, target: ObjectStore, jobs: int, dry_run: bool, read_back: bool,
                 summary: Summary, progress: Any) -> None:
        self.source = source
        self.target = target
        self.jobs = jobs
        self.dry_run = dry_run
        self.summary = summary
        self.progress = progress
        self.source_etag_is_md5 = RemoteChecker(source).etag_is_md5
        self.checker = RemoteChecker(target, read_back=read_back)
        self.index: ListingIndex | None = None
        self.memory: UploadMemory | None = None  # made on the I/O loop, in `run` (its waits are there)

    async def run(self) -> None:
        check_apart(self.source, self.target)
        await preflight(self.source)
        await preflight(self.target)
        await watched(check_same_owner(self.source, self.target), self.source, self.target)
        self.memory = UploadMemory(IN_MEMORY_LIMIT)
        await watched(self._migrate(), self.source, self.target)

    async def _migrate(self) -> None:
        self.index = await ListingIndex.of(self.target)
        try:
            with tempfile.TemporaryDirectory(prefix="objstore-migrate-") as tmp_dir:
                await each(self._source_objects(), lambda info: self._first_copy(info, tmp_dir), self.jobs,
                           (OSError, MediaPathError), lambda info, error: self.summary.fail(info.media_path, error),
                           lambda: self.progress.update(1))
                await self.index.relist(self.target)
                files, size = self.index.confirmed()
                self.summary.add(files_verified=files, bytes_verified=size)
                await each(self.index.unconfirmed(), lambda counted: self._copy_again(counted, tmp_dir), self.jobs,
                           (OSError, MediaPathError), lambda counted, error: self.summary.fail(counted.path, error))
        finally:
            self.index.close()

    async def _source_objects(self) -> AsyncIterator[ObjectInfo]:
        async for info in self.source.list():
            if info.media_path != OWNER_MARKER:
                yield info

    async def _first_copy(self, info: ObjectInfo, tmp_dir: str) -> None:
        """Copy an object unless the first listing of the target shows a verified copy; what
        is found good is handed to the index, for the second listing to confirm."""
        assert self.index is not None
        existing = self.index.get(info.media_path)  # one indexed query: in line, cheaper than a thread hop
        good = await self._object(info, tmp_dir, existing)
        if good is not None:
            await self.index.counted(good)

    async def _copy_again(self, counted: Counted, tmp_dir: str) -> None:
        """An object the second listing did not confirm: judged on a HEAD of the target, copied
        again unless that shows a verified copy, and counted once its copy is verified."""
        source = ObjectInfo(counted.path, counted.size, counted.note or None)
        good = await self._object(source, tmp_dir, await self.target.info(counted.path))
        if good is not None:
            self.summary.add(files_verified=1, bytes_verified=good.size)

    async def _source_metadata(self, media_path: str) -> ObjectMetadata:
        """The source object's metadata, from a HEAD: a listing has none, nor every GET."""
        source = await self.source.info(media_path)
        return source.metadata if source is not None else ObjectMetadata()

    async def _check_existing(self, media_path: str, digest: LocalDigest, listed: ObjectInfo) -> Check:
        """Compare a listed target object with the source's content. A listing has no
        metadata: where the target gives no checksums, its sha256 is asked for with a HEAD,
        rather than the object read back."""
        return await self.checker.check(media_path, digest, listed if self.checker.scheme.gives_checksums else None)

    async def _object(self, info: ObjectInfo, tmp_dir: str, existing: ObjectInfo | None) -> Counted | None:
        """Copy an object of the source unless `existing`, the target's (its entry in the
        listing, or a HEAD's answer; None: not there), is a verified copy of it. A failure goes
        to the summary; a copy found good is returned, as found: with the ETag of `existing`
        where that was what showed it good, else with its size alone (the note: the source's
        ETag, to copy it again)."""
        media_path = info.media_path
        found = Counted(media_path, info.size, existing.etag if existing is not None else None, info.etag or "")
        if (
            existing is not None
            and existing.size == info.size
            and self.source_etag_is_md5
            and self.checker.etag_is_md5
            and existing.etag is not None
            and existing.etag == info.etag
        ):
            return found
        if self.dry_run:
            if existing is None or existing.size != info.size:
                self.summary.add(files_copied=1, bytes_copied=info.size)
            return None
        digest = ContentDigest(self.checker.part_sizes if info.size >= MIN_PART_SIZE else ())
        if info.size <= IN_MEMORY and self.target.backend.takes_content:
            assert self.memory is not None
            async with self.memory.hold(info.size):
                data, got = await fetch(self.source, info, self.source_etag_is_md5, digest)
                local = digest.result()
                copied = await self._copy(info, existing, local, got, "", LocalContent(data, local.md5))
                del data  # let go of before its room is
        else:
            local_path = os.path.join(tmp_dir, media_path.replace("/", "_"))
            try:
                got = await download(self.source, info, local_path, tmp_dir, self.source_etag_is_md5, durable=False,
                                     digest=digest)
                copied = await self._copy(info, existing, digest.result(), got, local_path)
            finally:
                # a stat and an unlink, in line so that they run even while the task is cancelled
                if os.path.exists(local_path):  # noqa: ASYNC240
                    os.remove(local_path)
        if copied is None:
            return None
        check, uploaded = copied
        if check.state is not State.VERIFIED:
            self.summary.fail(media_path, check.after_upload("copy in the target"))
            return None
        return Counted(media_path, info.size, None, info.etag or "") if uploaded else found

    async def _copy(self, info: ObjectInfo, existing: ObjectInfo | None, digest: LocalDigest,
                    got: ObjectMetadata | None, local_path: str,
                    content: LocalContent | None = None) -> tuple[Check, bool] | None:
        """Compare the source's content (its `digest`, and the metadata its GET gave) with the
        target's object `existing`, and upload it where that differs: from `content` where it
        was read into memory, else from the scratch copy at `local_path`. The check of the
        target's copy, and whether it was uploaded; None where the source is found corrupted
        (a failure, counted here)."""
        media_path = info.media_path
        if existing is not None:
            check = await self._check_existing(media_path, digest, existing)
            if check.state is State.VERIFIED:
                return check, False
        kept = got if got is not None else await self._source_metadata(media_path)
        if kept.sha256 is not None and kept.sha256 != digest.sha256:
            self.summary.fail(media_path, f"the source object's sha256 metadata {kept.sha256} is not the "
                                          f"sha256 of its content, {digest.sha256}: corrupted, not copied")
            return None
        metadata = ObjectMetadata(kept.content_type, digest.sha256)
        checksum = await self.target.put_file(local_path, media_path, metadata=metadata, content=content)
        self.summary.add(files_copied=1, bytes_copied=info.size)
        return await self.checker.check_upload(media_path, digest, checksum), True


def check_apart(source: ObjectStore, target: ObjectStore) -> None:
    """CommandError when the two are one store whose prefixes overlap (the same, or one inside
    the other): the listing of the source would find the copies the run writes and copy them
    again, without end (a hostile review's run under prefix zz/ of its own bucket made 19,734
    objects out of 2,500 in 5 minutes, zz/ eight deep)."""
    src, dst = source.backend, target.backend
    if _location(src) != _location(dst):
        return
    prefixes = (src.settings.prefix, dst.settings.prefix)
    if prefixes[0].startswith(prefixes[1]) or prefixes[1].startswith(prefixes[0]):
        raise CommandError(
            f"refusing to migrate {src.describe()} to {dst.describe()}: one store, whose prefixes "
            f"{prefixes[0]!r} and {prefixes[1]!r} overlap, so the run would copy its own copies. "
            "Choose a target prefix outside the source's (or another bucket)")


def _location(backend: Backend) -> tuple[object, ...]:
    """What tells a store apart but its prefix: its kind, its root (bucket, container,
    directory) and where it is served from, as far as its settings say."""
    s = backend.settings
    return (type(backend), backend.root, *(getattr(s, name, None) for name in (
        "endpoint_url", "account_name", "account_url")))

