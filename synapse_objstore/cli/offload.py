"""The upload engine: verified upload, then (with --delete) removal of the local copy.

For each media of cache.db not yet known deleted, each of its local files (original and
thumbnails) goes through:

1. digest the local file (size, MD5, multipart ETags, sha256) in a worker thread (one turn
   for the listing and every file of the media, a small file's bytes kept for its upload);
   an original whose sha256 is not the one Synapse's database recorded (cache.db's
   objstore_media_info) is locally corrupted: reported, neither uploaded (over what may be
   the only good copy) nor deleted;
2. look at the remote object: verified already -> nothing to upload; missing, or present
   but different -> upload it (with its Content-Type: the media type Synapse recorded for an
   original, the one in a thumbnail's file name; and its sha256 as metadata), then check
   again; still different -> a failure, kept locally;
3. record the verified files in cache.db and wait for the commit;
4. only then delete the local files (in the commit's worker-thread turn, right after it), and
   mark the media deleted once none is left.

A run killed anywhere in there leaves each file either on disk, or deleted with its
verification committed; a rerun picks up what is left. Media run concurrently as coroutines
on the I/O loop, at most `jobs` at a time up to step 2; a media waiting for its commit takes
no place among them.

A storm (503 SlowDown, dropped connections) is ridden out first by the client's own retries
(the CLI gives the store more of them than Synapse's provider has), then by one more try of
each media that failed that way, once every other media has had its turn. A failure of the
whole store (the bucket gone, the credentials refused: see `StoreWatch`) stops the run at
once: the media under way are abandoned (nothing unverified is deleted; what was verified
is committed to cache.db) and `run` raises StoreUnusableError. So does a store that goes
silent: one that has answered no request for a minute, nor the question then asked of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from synapse_objstore.backends.base import SHA256_HEX, ObjectMetadata
from synapse_objstore.checksums import LocalDigest
from synapse_objstore.cli.cache_db import CacheDb, FileRecord, MediaInfo
from synapse_objstore.cli.journal import Journal
from synapse_objstore.cli.localfs import remove_media_files
from synapse_objstore.cli.report import Summary
from synapse_objstore.cli.store_watch import StoreWatch, is_retryable
from synapse_objstore.errors import LocalFileChangedError, MediaPathError, StoreUnusableError
from synapse_objstore.health import preflight
from synapse_objstore.media import Media, parse_media_path
from synapse_objstore.store import ObjectStore
from synapse_objstore.verification import Check, LocalRead, RemoteChecker, State


@dataclass(frozen=True)
class UploadOptions:
    base_path: str
    delete: bool = False
    dry_run: bool = False
    jobs: int = 8
    read_back: bool = True


class Upload(enum.Enum):
    """How `upload_file` finds out whether a file must go up."""

    LOOK = "look"  # look for the remote copy and compare; upload if missing or different
    CREATE = "create"  # upload only if absent, in the same request where the store can
    PUT = "put"  # known to be missing: upload without looking


@dataclass
class MediaOutcome(Summary):
    """What one attempt at one media did, kept apart until it is final; with the errors it failed with."""

    errors: list[BaseException | None] = field(default_factory=list)

    def fail(self, path: str, error: str | BaseException) -> None:
        super().fail(path, error)
        self.errors.append(error if isinstance(error, BaseException) else None)

    @property
    def retryable(self) -> bool:
        """Failed, and only because the store failed: worth one more try."""
        return bool(self.failed) and all(error is not None and is_retryable(error) for error in self.errors)


@dataclass(frozen=True)
class _Known:
    """What cache.db knows of a media before its upload: what Synapse recorded of its original,
    and whether a copy of it is in the store (a file verified, or the media came back)."""

    info: MediaInfo | None
    offloaded_before: bool

# The outcome of the media whose attempt runs in this task (and the tasks it starts).
_attempt: contextvars.ContextVar[MediaOutcome | None] = contextvars.ContextVar("attempt", default=None)

# How long a media's verified files may wait for others to share their commit to cache.db
# (and the worker-thread turn of the deletes after it). The media gives its place among the
# `jobs` back first (see _Slot), so the wait holds no upload back.
COMMIT_DELAY = 0.1


class _Slot:
    """A media's place among the `jobs` under way, given back once: as soon as its files are
    verified (what is left, the commit and the deletes, waits for cache.db, not for the
    store), or when its attempt ends."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots: asyncio.Semaphore | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()
            self._slots = None


# The place of the media whose attempt runs in this task.
_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("slot", default=None)


class Offloader:
    def __init__(self, store: ObjectStore, cache: CacheDb, options: UploadOptions, summary: Summary,
                 progress: Any) -> None:
        self.store = store
        self.options = options
        self.run_summary = summary
        self.progress = progress
        self.checker = RemoteChecker(store, read_back=options.read_back)
        self.journal = Journal(cache, max_delay=COMMIT_DELAY)
        self.watch = StoreWatch(store)
        self._running: set[asyncio.Task[None]] = set()
        self._committing: set[asyncio.Task[Any]] = set()  # media waiting for their commit: never cancelled
        self._stopped: StoreUnusableError | None = None
        # What cache.db knows of the media of the pages under way, read with their page (a
        # query each for the page, not worker-thread calls per media); each taken as its
        # media's attempt begins.
        self._known: dict[tuple[str, str], _Known] = {}

    @property
    def summary(self) -> Summary:
        """Where counts and failures go: the outcome of the media attempt under way in `run`,
        else (a caller of `upload_file` outside `run`) the run's summary."""
        return _attempt.get() or self.run_summary

    async def run(self) -> None:
        await preflight(self.store)
        silence = asyncio.ensure_future(self._stop_when_silent())
        again: list[tuple[Media, MediaOutcome]] = []
        try:
            await self._pass(self._cached_media(), again)
            if again:
                await self._pass(_each(again), None)
        finally:
            silence.cancel()
            await asyncio.gather(silence, return_exceptions=True)
            await self.journal.close()
            for error in self.journal.errors:
                self.run_summary.fail(self.journal.cache.path, error)

    async def _cached_media(self) -> AsyncIterator[tuple[Media, None]]:
        after = -1
        while page := await self.journal.call(self.journal.cache.media_page, False, after):
            after = page[-1][0]
            self._known.update(await self.journal.call(self._known_of, [media for _, media in page]))
            for _, media in page:
                yield media, None

    def _known_of(self, media: list[Media]) -> dict[tuple[str, str], _Known]:
        """What cache.db knows of each of `media`, by (origin, media_id). Blocking: a journal call."""
        cache = self.journal.cache
        offloaded = cache.offloaded_before(media)
        return {key: _Known(info, key in offloaded) for key, info in cache.media_infos(media).items()}

    async def _pass(self, media: AsyncIterator[tuple[Media, MediaOutcome | None]],
                    again: list[tuple[Media, MediaOutcome]] | None) -> None:
        """Handle each media, `jobs` at a time. The first pass puts those that failed only
        because the store did into `again`; the second tries them once more, each with the
        outcome of its first attempt."""
        slots = asyncio.Semaphore(self.options.jobs)

        def finished(task: asyncio.Task[None], slot: _Slot) -> None:
            self._running.discard(task)
            slot.release()
            if again is not None:
                self.progress.update(1)

        try:
            async for item, earlier in media:
                await slots.acquire()
                if self._stopped is not None:
                    break
                slot = _Slot(slots)
                task = asyncio.create_task(self._attempt(item, again, earlier, slot))
                self._running.add(task)
                task.add_done_callback(functools.partial(finished, slot=slot))
        finally:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._stopped is not None:
            raise self._stopped

    async def _attempt(self, media: Media, again: list[tuple[Media, MediaOutcome]] | None,
                       earlier: MediaOutcome | None, slot: _Slot) -> None:
        """One attempt at one media. Its outcome goes to the run's summary, or to `again`;
        when the whole store failed, nowhere: the run stops, and the attempts under way are
        cancelled (safe anywhere: see the module's docstring)."""
        outcome = MediaOutcome(self.run_summary.command, dry_run=self.run_summary.dry_run)
        token = _attempt.set(outcome)
        slot_token = _slot.set(slot)
        try:
            await self._guarded(media)
        finally:
            _slot.reset(slot_token)
            _attempt.reset(token)
        try:
            await self.watch.failed(error for error in outcome.errors if error is not None)
        except StoreUnusableError as error:
            self._stop(error)
            return
        if again is not None and outcome.retryable:
            again.append((media, outcome))
            return
        if earlier is not None:
            self.run_summary.merge(self._carried_over(earlier, outcome))
        self.run_summary.merge(outcome)

    async def _stop_when_silent(self) -> None:
        try:
            await self.watch.silence()
        except StoreUnusableError as error:
            self._stop(error)

    def _stop(self, error: StoreUnusableError) -> None:
        """Stop the run: no media is started any more, and those under way are abandoned."""
        if self._stopped is None:
            self._stopped = StoreUnusableError(
                f"{error}; every media done so far is recorded in {self.journal.cache.path}. "
                "Run the same command again once the store can be used"
            )
            self._stopped.__cause__ = error
            for task in self._running - self._committing - {asyncio.current_task()}:
                task.cancel()

    def _carried_over(self, earlier: MediaOutcome, again: MediaOutcome) -> Summary:
        """What a media's first attempt did that its second does not see again, to be
        counted beside the second's: the uploads made and (with --delete) the files verified
        and deleted. Its failures are replaced by the second attempt's; in a dry run nothing
        was done. The media is counted once, as uploaded or deleted if either attempt did."""
        kept = Summary(earlier.command, dry_run=earlier.dry_run, media_retried=1)
        if not self.options.dry_run:
            kept.add(files_uploaded=earlier.files_uploaded, bytes_uploaded=earlier.bytes_uploaded,
                     files_deleted=earlier.files_deleted, bytes_deleted=earlier.bytes_deleted)
            if self.options.delete:
                kept.add(files_verified=earlier.files_verified, bytes_verified=earlier.bytes_verified)
            kept.add(media_uploaded=max(0, earlier.media_uploaded - again.media_uploaded),
                     media_deleted=max(0, earlier.media_deleted - again.media_deleted))
        again.media = 0
        kept.media = 1
        return kept

    async def _guarded(self, media: Media) -> None:
        """One media; an unforeseen error fails that media only, not the run."""
        try:
            await self._media(media)
        except Exception as error:  # fails this media only
            self.summary.fail(media.describe(), f"{type(error).__name__}: {error}")

    async def _media(self, media: Media) -> None:
        self.summary.add(media=1)
        key = (media.origin, media.media_id)
        known = self._known.pop(key, None)
        if known is None:  # a second attempt (its page is gone), a caller outside `run`
            known = (await self.journal.call(self._known_of, [media]))[key]
        try:
            local = await asyncio.to_thread(self._read_media, media)
        except ValueError as error:
            self.summary.fail(media.describe(), error)
            return
        files = list(local)
        if not files:
            if not self.options.dry_run:
                self.journal.mark_deleted(media)
            return

        digests: dict[str, LocalDigest] = {}
        uploaded = False
        expected = {path: expected_metadata(media, path, known.info) for path in files}
        # The first file (the original, when it is there) goes up only if absent, in one request
        # where the store can do that. When it was absent, the thumbnails are taken as absent
        # too (both tools upload the original first) and put without a lookup each: one that
        # was there after all is only put again. Else each is looked up and compared. Not so a
        # media cache.db knows a copy of in the store (offloaded, perhaps come back cut short):
        # a store that ignores If-None-Match (S3 before 2024, many S3-compatible stores) would
        # take a damaged local file over the intact copy, which `_remote_is_reference` guards.
        first_mode = Upload.LOOK if known.offloaded_before else Upload.CREATE
        first = await self.upload_file(files[0], first_mode, *expected[files[0]], media, local.pop(files[0]))
        rest_mode = Upload.PUT if first_mode is Upload.CREATE and first is not None and first[1] else Upload.LOOK
        rest = await asyncio.gather(*(self.upload_file(path, rest_mode, *expected[path], media, read)
                                      for path, read in local.items()))
        del local  # the bytes kept for the uploads
        for media_path, result in zip(files, [first, *rest], strict=True):
            if result is not None:
                digests[media_path], was_uploaded = result
                uploaded = uploaded or was_uploaded
        if uploaded:
            self.summary.add(media_uploaded=1)
        if not digests or self.options.dry_run:
            if self.options.delete and digests:
                self.summary.add(media_deleted=1, files_deleted=len(digests),
                                 bytes_deleted=sum(d.size for d in digests.values()))
            return

        describe = self.store.backend.describe()
        records = [FileRecord(p, media.origin, media.media_id, d.size, d.md5, describe, d.sha256,
                              frozenset(d.multipart.values()))
                   for p, d in digests.items()]
        # With --delete, the local files go in the commit's own worker-thread turn, right after
        # it (with the other media of that commit), never before it succeeded.
        remove = functools.partial(self._remove_local, digests) if self.options.delete else None
        if (slot := _slot.get()) is not None:
            slot.release()
        # Past the store: a run that stops lets it finish (its commit is local, and its files
        # are verified), so that what was verified before the store failed is offloaded.
        committing = asyncio.current_task()
        if committing is not None:
            self._committing.add(committing)
        try:
            removed = await self.journal.record_files(records, remove)
        except Exception as error:  # whatever sqlite raised, nothing is deleted
            for media_path in digests:
                self.summary.fail(media_path, f"verified, but not deleted: could not record it in cache.db: {error}")
            return
        finally:
            self._committing.discard(committing)
        if removed is not None:
            self._count_deleted(media, files, digests, removed)

    async def upload_file(self, media_path: str, mode: Upload = Upload.LOOK, sha256: str | None = None,
                          content_type: str | None = None, media: Media | None = None,
                          read: LocalRead | OSError | None = None) -> tuple[LocalDigest, bool] | None:
        """Make sure the remote copy of one file is verified. Returns its digest and whether
        it was (or, in a dry run, would be) uploaded; None, after recording the failure, if not.

        `sha256`: what Synapse recorded for the file's content; a local file with another is
        corrupted, and neither uploaded nor counted verified. `content_type`: the object's.
        `read`: the file already read (`_read_media`), or the error reading it gave; else it
        is read here."""
        local_path = os.path.join(self.options.base_path, media_path)
        if read is None:
            try:
                if mode is Upload.LOOK or self.options.dry_run:
                    read = await self.checker.digest(local_path), None
                else:  # about to be uploaded: the bytes read for the digest are the ones sent
                    read = await self.checker.digest_for_upload(local_path)
            except OSError as error:
                read = error
        if isinstance(read, FileNotFoundError):
            self.summary.fail(media_path, f"local file {local_path} vanished during the run")
            return None
        if isinstance(read, OSError):
            self.summary.fail(media_path, f"cannot read local file {local_path}: {read.strerror or read}")
            return None
        digest, content = read
        if sha256 is not None and digest.sha256 != sha256.lower():
            of = f" of media {media.describe()}" if media is not None else ""
            self.summary.fail(media_path, (
                f"local file {local_path}{of} is corrupted: its sha256 {digest.sha256} is not the {sha256.lower()} "
                f"Synapse recorded for it. Not uploaded (a good remote copy stays as it is), not deleted"))
            return None
        metadata = ObjectMetadata(content_type, digest.sha256)
        try:
            if mode is Upload.CREATE and not self.options.dry_run:
                try:
                    checksum = await self.store.put_file(local_path, media_path, if_absent=True, metadata=metadata,
                                                         content=content)
                except FileExistsError:  # there already: compare, and replace it only if it differs
                    mode = Upload.LOOK
                else:
                    return await self._verify_upload(media_path, digest, checksum)
            check = Check(State.MISSING) if mode is Upload.PUT else await self.checker.check(media_path, digest)
            if check.state is State.VERIFIED:
                self.summary.add(files_verified=1, bytes_verified=digest.size)
                return digest, False
            if check.state is State.DIFFERS and (reference := await self._remote_is_reference(media_path, digest)):
                self.summary.fail(media_path, (
                    f"the local file differs from the remote copy ({check.detail}), which {reference}: not uploaded "
                    f"over it, not deleted. A partial or damaged local copy (Synapse downloads into place)? Then "
                    f"delete it: Synapse serves the remote copy"))
                return None
            if self.options.dry_run:
                self.summary.add(files_uploaded=1, bytes_uploaded=digest.size)
                return digest, True
            checksum = await self.store.put_file(local_path, media_path, metadata=metadata, content=content)
            return await self._verify_upload(media_path, digest, checksum)
        except (OSError, MediaPathError) as error:
            self.summary.fail(media_path, error)
            return None

    def _read_media(self, media: Media) -> dict[str, LocalRead | OSError]:
        """Blocking: the media's local files (`Media.local_files`, in its order), each read
        and digested, its bytes kept for its upload (not in a dry run), or the error reading
        it gave. One worker thread's turn for the whole media, rather than one per file and
        per step: the hand-over to a thread costs more than reading a thumbnail."""
        read: dict[str, LocalRead | OSError] = {}
        for media_path in media.local_files(self.options.base_path):
            local_path = os.path.join(self.options.base_path, media_path)
            try:
                read[media_path] = self.checker.read_local(local_path, not self.options.dry_run)
            except OSError as error:  # fails that file alone (upload_file says how)
                read[media_path] = error
        return read

    async def _remote_is_reference(self, media_path: str, digest: LocalDigest) -> str | None:
        """Why the remote copy, not the differing local file, holds the right content; None if nothing does.

        Media never change, so a local file that differs from a copy verified before (or from
        the copy of a media that was offloaded and came back) is the suspect one: Synapse
        writes what it downloads straight into place, and a download cut short leaves part
        of the file. Uploading it would replace the only intact copy.
        """
        record = await self.journal.call(self.journal.cache.file_record, media_path)
        if record is not None:
            if record.size == digest.size and record.md5 in (None, digest.md5):
                return None  # the local file is what was verified: the remote copy changed since
            return f"holds the content verified when this file was offloaded ({record.size} bytes)"
        owner = parse_media_path(media_path)
        if owner is not None and await self.journal.call(self.journal.cache.was_returned, owner.origin, owner.key):
            return "is where this media was offloaded to, and came back from"
        return None

    async def _verify_upload(
        self, media_path: str, digest: LocalDigest, checksum: str | None
    ) -> tuple[LocalDigest, bool] | None:
        """Count an upload done and verify it (by the reply's checksum where that is trusted)."""
        self.summary.add(files_uploaded=1, bytes_uploaded=digest.size)
        try:
            check = await self.checker.check_upload(media_path, digest, checksum)
        except (OSError, MediaPathError) as error:
            self.summary.fail(media_path, error)
            return None
        if check.state is not State.VERIFIED:
            self.summary.fail(media_path, check.after_upload("remote copy"))
            return None
        self.summary.add(files_verified=1, bytes_verified=digest.size)
        return digest, True

    def _remove_local(self, digests: dict[str, LocalDigest]) -> list[OSError | None] | Exception:
        """Blocking: `remove_media_files` for the verified files, each only if it is still the
        file that was read (its identity). What it raised is returned, not raised: it must not
        be taken for a failed commit of cache.db."""
        try:
            return remove_media_files(self.options.base_path,
                                      [(media_path, digest.identity) for media_path, digest in digests.items()])
        except Exception as error:  # fails this media only (see _count_deleted)
            return error

    def _count_deleted(self, media: Media, files: list[str], digests: dict[str, LocalDigest],
                       errors: list[OSError | None] | Exception) -> None:
        """Count what `_remove_local` deleted; mark the media deleted once none of its files is left."""
        if isinstance(errors, Exception):
            raise errors
        deleted = 0
        for (media_path, digest), error in zip(digests.items(), errors, strict=True):
            if isinstance(error, LocalFileChangedError):
                self.summary.fail(media_path, str(error))
                continue
            if error is not None:
                self.summary.fail(media_path, f"verified, but could not delete the local file: {error}")
                continue
            deleted += 1
            self.summary.add(files_deleted=1, bytes_deleted=digest.size)
        if deleted:
            self.summary.add(media_deleted=1)
        if deleted == len(files):
            self.journal.mark_deleted(media)


def expected_metadata(media: Media, media_path: str, info: MediaInfo | None) -> tuple[str | None, str | None]:
    """(sha256, content type) a file of `media` should have: Synapse's for the original, the
    type its name gives for a thumbnail (whose sha256 Synapse does not record)."""
    if media_path == media.file_path:
        return (synapse_sha256(info.sha256), info.media_type) if info is not None else (None, None)
    return None, thumbnail_content_type(media_path)


def synapse_sha256(recorded: str | None) -> str | None:
    """A sha256 from Synapse's database as lowercase hex; None for one that is no hex SHA-256
    (garbage, truncated, empty): it says nothing of the file, which must not be taken for
    corrupted (and so never offloaded) because of it."""
    if recorded is None:
        return None
    digest = recorded.strip().lower()
    return digest if SHA256_HEX.match(digest) else None


# Thumbnail methods Synapse writes into a thumbnail's file name.
THUMBNAIL_METHODS = ("crop", "scale")


def thumbnail_content_type(media_path: str) -> str | None:
    """The content type in a thumbnail's file name, `{width}-{height}-{top}-{sub}[-{method}]`
    (synapse.media.filepath), e.g. `32-32-image-png-crop` -> image/png; None for another name."""
    parts = media_path.rsplit("/", 1)[-1].split("-")
    if len(parts) < 4 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    rest = parts[3:-1] if len(parts) > 4 and parts[-1] in THUMBNAIL_METHODS else parts[3:]
    return f"{parts[2]}/{'-'.join(rest)}" if parts[2] and rest else None


async def _each(items: Iterable[tuple[Media, MediaOutcome]]) -> AsyncIterator[tuple[Media, MediaOutcome]]:
    for item in items:
        yield item
