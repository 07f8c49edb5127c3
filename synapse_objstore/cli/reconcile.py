"""`reconcile`: make the store agree with Synapse's database again.

Synapse never tells a storage provider that media is gone (admin API delete, purge, retention),
and with `store_synchronous: false` it only logs an upload that failed. So, in one run:

0. Guards. The store must belong to the homeserver whose database was given (an owner marker
   under the prefix names it; see ownership.py), and the database must have media. Then a
   first pass over the listing counts the orphans: when they are more than
   `max_delete_share` percent of the media objects listed, `--apply` refuses before deleting
   anything (a database restored from an old backup, or the right homeserver with the wrong
   prefix, looks like that). The dry run states all of it.
1. Orphans. The store's listing is walked page by page. Objects older than the grace period
   are looked up in Synapse's database: local media in batches, fresh at the time of each
   batch; remote media in a set of every remote media's (origin, filesystem_id), read in one
   scan when the first remote object is looked up, because Synapse does not index
   filesystem_id (a batch of lookups would scan the table each time). A remote media deleted
   after that scan keeps its objects until the next run; one added after it has a new random
   filesystem_id, so no object older than the grace period. Objects whose media is no longer
   there are deleted, thumbnails included; with `apply`, in a second pass over the listing that
   looks each batch up afresh. An object that is not a media path Synapse writes is never
   deleted, only reported. `--max-delete` stops the deleting (not the run) at N objects.
2. Repair. Every media in the database older than the grace period is looked for locally and
   in the listing: a local file missing from the store is uploaded and verified exactly as
   `upload` does, if it is of a type the provider stores (`store_local`/`store_remote` in
   homeserver.yaml); media whose original is neither local nor in the store is reported lost,
   or, where media workers on other hosts keep media on disks of their own
   (`media_on_other_hosts`), left to those hosts: this one cannot tell them from lost.
3. Incomplete multipart uploads older than the grace period (left by a killed upload) are
   aborted, so their parts stop being billed.

With `--shard I/N`, a run handles only the objects, media and uploads of its shard (shard.py:
the shard of an object is that of the media its key names), and counts its brakes on them
alone: N runs, on separate processes or hosts with cache.db files of their own, reconcile the
store together, each listing all of it. Only shard 0 records the owner marker, so that N runs
never write it at once; another shard finding none deletes nothing.

Nothing changes without `apply`. The grace period keeps the run away from media being written
while it runs: an object uploaded before its database row, a background upload still on its way.

Memory: one listing page, one database batch (DB_BATCH objects), the set of listed paths
(8 bytes per object, see path_set.py: about 80 MB for 10 million objects) and the set of
remote media (8 bytes each).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from synapse_objstore.backends.base import IncompleteUpload
from synapse_objstore.cli.cache_db import CacheDb, MediaInfo
from synapse_objstore.cli.offload import Offloader, Upload, UploadOptions, expected_metadata
from synapse_objstore.cli.ownership import (
    DEFAULT_MAX_DELETE_SHARE,
    OwnerCheck,
    check_owner,
    identify,
    read_state,
)
from synapse_objstore.cli.path_set import PathSet
from synapse_objstore.cli.report import Summary, human_size
from synapse_objstore.cli.shard import WHOLE, Shard
from synapse_objstore.cli.store_watch import watched
from synapse_objstore.cli.synapse_db import SynapseDb
from synapse_objstore.errors import (
    DeleteShareError,
    EmptyDatabaseError,
    OwnershipError,
    StoreUnusableError,
)
from synapse_objstore.health import preflight
from synapse_objstore.media import Media, MediaOwner, parse_media_path
from synapse_objstore.owner_marker import (
    OWNER_MARKER,
    HomeserverIdentity,
    OwnerRecord,
    mark_contested,
    read_owner,
    record_owner,
)
from synapse_objstore.store import ObjectInfo, ObjectStore

# Objects looked up in Synapse's database at once.
T = TypeVar("T")
DB_BATCH = 10_000
# Media of the database read at once, and whose local files are looked for in one thread.
MEDIA_PAGE = 1000


@dataclass(frozen=True)
class ReconcileOptions:
    base_path: str
    cutoff: datetime  # timezone-aware: only objects and media older than this are touched
    apply: bool = False
    max_delete: int | None = None
    # refuse to delete when orphans are more than this percentage of the media objects listed
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE
    owner_check: OwnerCheck = field(default_factory=OwnerCheck)
    jobs: int = 8
    read_back: bool = True
    # media types whose local files missing from the store are uploaded: those Synapse stores there
    upload_types: frozenset[str] = frozenset({"local", "remote"})
    # other hosts (media workers) keep media on disks of their own, which this run cannot see:
    # a media neither local nor in the store may be on one of them, so it is not reported lost
    media_on_other_hosts: bool = False
    shard: Shard = WHOLE


@dataclass
class ReconcileSummary(Summary):
    """`files_deleted`/`bytes_deleted` count deleted objects; `media` counts media of the
    database looked at; `media_uploaded` those repaired."""

    objects_listed: int = 0
    bytes_listed: int = 0
    objects_recent: int = 0
    objects_other_shards: int = 0  # media objects of other shards than --shard's, left to their runs
    objects_unknown: int = 0
    objects_orphaned: int = 0
    bytes_orphaned: int = 0
    orphans_left: int = 0
    media_lost: int = 0
    media_elsewhere: int = 0  # neither local nor in the store, with media_on_other_hosts
    media_not_stored: int = 0
    uploads_aborted: int = 0
    delete_limit_reached: bool = False
    # what the store was compared with
    server_name: str = ""
    database: str = ""
    database_fingerprint: str | None = None
    store: str = ""
    store_owner: str = ""  # as the marker names it, or why there is none
    local_media_in_database: int = 0
    remote_media_in_database: int = 0
    # orphans, in percent of the media objects listed, and the most a run may delete
    delete_share: float = 0.0
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE
    none_known: bool = False  # no media object older than the grace period is in the database
    deletion_deferred: bool = False  # the claim on the store is younger than the grace period
    refusal: str = ""  # why --apply would refuse to delete (a dry run's warning)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.delete_limit_reached and not self.refusal

    @property
    def media_objects_listed(self) -> int:
        return self.objects_listed - self.objects_unknown

    @property
    def over_delete_share(self) -> bool:
        return self.delete_share > self.max_delete_share

    def comparison(self) -> str:
        return (f"Compared {self.store} (owner: {self.store_owner}) with the database of {self.server_name} "
                f"({self.database}): {self.local_media_in_database} local and {self.remote_media_in_database} "
                f"remote media")

    def share_line(self) -> str:
        verb = "Would delete" if self.dry_run else "Deleting"
        return (f"{verb} {self.objects_orphaned} of the {self.media_objects_listed} media objects listed "
                f"({self.delete_share:.1f}%; --max-delete-share {self.max_delete_share:g}%)")

    def lines(self) -> list[str]:
        would = "Would have " if self.dry_run else ""
        lines = [
            (f"Listed {self.objects_listed} objects ({human_size(self.bytes_listed)}); "
             f"{self.objects_recent} younger than the grace period left alone"),
            f"Kept {self.objects_unknown} objects that are not media paths",
            *([f"Left {self.objects_other_shards} objects of other shards to their runs"]
              if self.objects_other_shards else []),
            f"Found {self.objects_orphaned} objects of media no longer in Synapse ({human_size(self.bytes_orphaned)})",
            self.share_line(),
            f"{would}Deleted {self.files_deleted} objects ({human_size(self.bytes_deleted)})",
        ]
        if self.refusal:
            lines.append(f"--apply would refuse to delete anything: {self.refusal}.")
        if self.delete_limit_reached:
            lines.append(f"Stopped deleting at --max-delete (or --max-delete-share): {self.orphans_left} more objects "
                         "left; run again to go on")
        lines += [
            f"Checked {self.media} media of Synapse's database",
            (f"{would}Uploaded {self.files_uploaded} files of {self.media_uploaded} media missing from the store "
             f"({human_size(self.bytes_uploaded)})"),
            f"Lost {self.media_lost} media (neither local nor in the store)",
            *([f"Left {self.media_elsewhere} media to other hosts: neither in this media store nor in the store "
               "(--media-on-other-hosts; their hosts' reconcile uploads them)"] if self.media_elsewhere else []),
            f"Left {self.media_not_stored} media local only: the provider does not store their type",
            f"{would}Aborted {self.uploads_aborted} incomplete uploads",
        ]
        return lines + self.failure_lines("")


class Reconciler:
    def __init__(self, store: ObjectStore, synapse_db: SynapseDb, cache: CacheDb, options: ReconcileOptions,
                 summary: ReconcileSummary, progress: Any, echo: Callable[[str], None]) -> None:
        self.store = store
        self.db = synapse_db
        self.cache = cache
        self.options = options
        self.summary = summary
        self.progress = progress
        self.echo = echo
        upload = UploadOptions(options.base_path, dry_run=not options.apply, jobs=options.jobs,
                               read_back=options.read_back)
        self.offloader = Offloader(store, cache, upload, summary, progress)
        self.slots = asyncio.Semaphore(options.jobs)
        self.deletions = 0
        self._started = datetime.now().astimezone()
        self._remote_files: PathSet | None = None

    async def run(self) -> None:
        await preflight(self.store)
        if not await asyncio.to_thread(self.db.has_media):
            raise EmptyDatabaseError(
                f"Synapse's database ({self.db.description}) has no media at all: refusing to reconcile, which "
                f"would delete every object of {self.store.backend.describe()}. Is it the right database?"
            )
        identity = await asyncio.to_thread(identify, self.db)
        recorded = await watched(read_owner(self.store), self.store)  # a silent store stops the run here too
        state = await asyncio.to_thread(read_state, self.db, identity, recorded)
        try:
            check_owner(recorded, state, self.store, self.options.owner_check)
        except OwnershipError:
            if (self.options.apply and recorded is not None and recorded.owner.same_homeserver(identity)
                    and self.options.owner_check == OwnerCheck()):
                await watched(mark_contested(self.store, recorded, identity, "reconcile"), self.store)
            raise
        self._describe_comparison(identity, recorded, state.local_media, state.remote_media)
        listed = PathSet()
        await self._sweep(listed, delete=not self.options.apply)  # a dry run names what it would delete
        self._check_delete_share(vouched=recorded is not None and self.options.owner_check == OwnerCheck())
        claimed_at = recorded.claimed_at if recorded is not None and recorded.owner.same_homeserver(identity) else None
        records_owner = self.options.shard.index == 0  # one writer of the marker, however many shards run
        if recorded is None and not records_owner:
            self._defer_deletion(f"no owner of {self.summary.store} is recorded yet, and only --shard 0/"
                                 f"{self.options.shard.count} records it: run that shard first")
        self._check_claim_age(recorded if claimed_at is not None else None)
        if self.options.apply:
            if records_owner and (recorded is None or state.renews(recorded)):
                await record_owner(self.store, identity, state.newest_media_ts, state.witnesses, "reconcile",
                                   claimed_at)
                if claimed_at is None:
                    self.echo(f"Recorded {identity.describe()} as the owner of {self.summary.store}")
            if self.summary.objects_orphaned and not self.summary.deletion_deferred:
                await self._sweep(None, delete=True)
        await self._repair(listed)
        await self._abort_incomplete_uploads()

    def _check_claim_age(self, claim: OwnerRecord | None) -> None:
        """Delete nothing until this homeserver's claim on the store is older than the grace
        period. Two homeservers that already share a bucket and prefix cannot be told apart by
        their objects; in the meantime the other one's objstore-offload refuses the store and its
        provider's startup check fails, so its admin is told before anything of it is deleted."""
        if claim is None:  # claimed by this run: old enough only without a grace period
            if self._started - self.options.cutoff < timedelta(seconds=1):
                return
        elif claim.claimed <= self.options.cutoff:
            return
        since = "this run" if claim is None else claim.claimed_at
        self._defer_deletion(f"this homeserver's claim on {self.summary.store} dates from {since}, less than the "
                             "grace period ago. Another homeserver writing there is refused from now on; orphans "
                             "are deleted once the claim is older than --grace")

    def _defer_deletion(self, reason: str) -> None:
        """Delete nothing in this run, and say why (if there was anything to delete)."""
        if self.summary.deletion_deferred:
            return
        self.summary.deletion_deferred = True
        if self.summary.objects_orphaned:
            verb = "--apply would delete" if self.summary.dry_run else "Deleting"
            self.echo(f"{verb} nothing yet: {reason}.")

    def _describe_comparison(self, identity: HomeserverIdentity, recorded: OwnerRecord | None, local: int,
                             remote: int) -> None:
        summary = self.summary
        summary.server_name, summary.database = identity.server_name, identity.database
        summary.database_fingerprint = identity.fingerprint
        summary.store = self.store.backend.describe()
        summary.store_owner = recorded.describe() if recorded else "none recorded yet"
        summary.local_media_in_database, summary.remote_media_in_database = local, remote
        summary.max_delete_share = self.options.max_delete_share
        self.echo(summary.comparison())

    def _check_delete_share(self, vouched: bool) -> None:
        """Refuse (with `apply`) to delete more than the share allowed; and, unless the store's
        marker vouched for this database, a store none of whose media is in the database."""
        summary = self.summary
        listed = summary.media_objects_listed
        summary.delete_share = 100.0 * summary.objects_orphaned / listed if listed else 0.0
        summary.none_known = not vouched and 0 < summary.objects_orphaned == listed - summary.objects_recent
        if summary.none_known:
            message = (
                f"none of the {summary.objects_orphaned} media objects older than the grace period in {summary.store} "
                f"is in the database of {summary.server_name} ({summary.database}): this is not its store, or not "
                "its database, whatever --max-delete-share says"
            )
        elif summary.over_delete_share:
            message = (
                f"{summary.objects_orphaned} of the {listed} media objects listed in {summary.store} are orphans to "
                f"the database of {summary.server_name} ({summary.database}): {summary.delete_share:.1f}%, above "
                f"--max-delete-share {summary.max_delete_share:g}%. So large a share most often means the wrong "
                "database for this store, or one restored from an old backup. Look at the dry run; if these "
                "objects really are orphans, raise --max-delete-share for this run"
            )
        else:
            return
        if self.options.apply:
            raise DeleteShareError(f"refusing to delete anything: {message}. Nothing was deleted.")
        summary.refusal = message

    # 1. orphans

    async def _sweep(self, listed: PathSet | None, delete: bool) -> None:
        """One pass over the listing. The first (`listed` given) counts what is listed and
        orphaned; a pass that `delete`s deletes the orphans (or, in a dry run, names them)."""
        try:
            await self._walk_listing(listed, delete)
        except OSError as error:  # a store error, or a bucket gone (which s3fs calls a missing file)
            raise StoreUnusableError(f"reconcile stopped: listing {self.store.backend.describe()} failed "
                                     f"({type(error).__name__}: {error})") from error

    async def _walk_listing(self, listed: PathSet | None, delete: bool) -> None:
        batch: list[tuple[ObjectInfo, MediaOwner]] = []
        async for info in self.store.list():
            if info.media_path == OWNER_MARKER:
                continue
            owner = parse_media_path(info.media_path)
            if owner is not None and not self.options.shard.holds(owner.origin, owner.key):
                if listed is not None:
                    self.progress.update(1)
                    self.summary.add(objects_other_shards=1)
                continue
            if listed is not None:
                self.progress.update(1)
                self.summary.add(objects_listed=1, bytes_listed=info.size)
                if owner is None:
                    self.summary.add(objects_unknown=1)
                    self.echo(f"kept {info.media_path}: not a media path Synapse writes")
                else:
                    listed.add(info.media_path)
            if owner is None:
                continue
            if not self._older_than_grace(info.last_modified):
                if listed is not None:
                    self.summary.add(objects_recent=1)
                continue
            batch.append((info, owner))
            if len(batch) >= DB_BATCH:
                await self._orphans(batch, count=listed is not None, delete=delete)
                batch = []
        await self._orphans(batch, count=listed is not None, delete=delete)

    def _older_than_grace(self, moment: datetime | None) -> bool:
        """An object of unknown age counts as recent: it is never deleted."""
        return moment is not None and moment.astimezone() < self.options.cutoff

    async def _orphans(self, batch: list[tuple[ObjectInfo, MediaOwner]], count: bool, delete: bool) -> None:
        """Look the objects of a batch up in the database; `count` the orphans, `delete` them."""
        local_ids = sorted({owner.key for _, owner in batch if owner.kind != "remote"})
        local = await asyncio.to_thread(self.db.existing_local_media, local_ids) if local_ids else set()
        if self._remote_files is None and any(owner.kind == "remote" for _, owner in batch):
            self._remote_files = await asyncio.to_thread(self._read_remote_files)
        chosen: list[tuple[ObjectInfo, MediaOwner]] = []
        for info, owner in batch:
            if owner.kind == "remote":
                assert self._remote_files is not None
                if _remote_file_key(owner.origin, owner.key) in self._remote_files:
                    continue
            elif owner.key in local:
                continue
            if count:
                self.summary.add(objects_orphaned=1, bytes_orphaned=info.size)
            if not delete:
                continue
            if self._over_limits():
                self.summary.delete_limit_reached = True
                self.summary.add(orphans_left=1)
                continue
            self.deletions += 1
            chosen.append((info, owner))
        if chosen and self.options.apply:
            # Forgotten before the objects go: a run killed in between leaves an orphan that the
            # next run deletes, never a cache.db that vouches for an object no longer there.
            await asyncio.to_thread(
                self.cache.forget,
                [info.media_path for info, _ in chosen],
                {owner.key for _, owner in chosen if owner.kind != "remote"},
                {(owner.origin, owner.key) for _, owner in chosen if owner.kind == "remote"},
            )
        await asyncio.gather(*(self._delete(info) for info, _ in chosen))

    def _over_limits(self) -> bool:
        """Whether one more deletion would pass --max-delete, or (objects deleted by Synapse
        between the two passes) the share the first pass was allowed."""
        if self.options.max_delete is not None and self.deletions >= self.options.max_delete:
            return True
        share_limit = self.summary.max_delete_share * self.summary.media_objects_listed / 100.0
        return self.options.apply and self.deletions >= share_limit

    def _read_remote_files(self) -> PathSet:
        """Every remote media's (origin, filesystem_id), blocking: run in a thread. A false
        "present" of the set (see path_set.py) only keeps an orphan."""
        remote_files = PathSet()
        for origin, filesystem_id in self.db.remote_files():
            remote_files.add(_remote_file_key(origin, filesystem_id))
        return remote_files

    async def _delete(self, info: ObjectInfo) -> None:
        if self.options.apply:
            async with self.slots:
                try:
                    await self.store.delete(info.media_path)
                except OSError as error:
                    self.summary.fail(info.media_path, error)
                    return
        self.summary.add(files_deleted=1, bytes_deleted=info.size)
        self.echo(f"{'deleted' if self.options.apply else 'would delete'} {info.media_path} ({human_size(info.size)})")

    # 2. repair

    async def _repair(self, listed: PathSet) -> None:
        cutoff_ms = int(self.options.cutoff.timestamp() * 1000)
        rows = self.db.media_created_before(cutoff_ms)
        running: set[asyncio.Task[None]] = set()
        try:
            while page := await asyncio.to_thread(_take, rows, MEDIA_PAGE):
                for media, files, info in await asyncio.to_thread(self._local_files, page):
                    self.summary.add(media=1)
                    missing = [path for path in files if path not in listed]
                    original_gone = media.file_path not in listed and media.file_path not in files
                    if missing and media.type not in self.options.upload_types:
                        self.summary.add(media_not_stored=1)
                        missing = []
                    if missing or original_gone:
                        await self.slots.acquire()
                        task = asyncio.create_task(self._repair_media(media, missing, original_gone, info))
                        running.add(task)
                        task.add_done_callback(running.discard)
        finally:
            await asyncio.gather(*running, return_exceptions=True)

    def _local_files(
        self, page: list[tuple[str, str, str, str, str | None, str | None]]
    ) -> list[tuple[Media, list[str], MediaInfo]]:
        """Each media of the page (of this shard) with its files present locally and what Synapse
        records of it (blocking: run in a thread)."""
        found = []
        for origin, media_id, filesystem_id, media_type, content_type, sha256 in page:
            if not self.options.shard.holds(origin, filesystem_id):
                continue
            media = Media(origin, media_id, filesystem_id, media_type)  # type: ignore[arg-type]
            try:
                found.append((media, media.local_files(self.options.base_path), MediaInfo(content_type, sha256)))
            except ValueError as error:  # an id Synapse itself could not have written
                self.summary.fail(media.describe(), error)
        return found

    async def _repair_media(self, media: Media, missing: list[str], original_gone: bool, info: MediaInfo) -> None:
        try:
            if original_gone and await self.store.info(media.file_path) is None:  # it may have arrived since
                if self.options.media_on_other_hosts:
                    self.summary.add(media_elsewhere=1)
                else:
                    self.summary.add(media_lost=1)
                    self.summary.fail(media.file_path, f"lost: {media.type} media {media.describe()} is in Synapse's "
                                                       f"database, but neither local nor in "
                                                       f"{self.store.backend.describe()}")
            uploaded = False
            for media_path in missing:
                # with its Content-Type and sha256 metadata; an original whose sha256 is not Synapse's is not uploaded
                result = await self.offloader.upload_file(media_path, Upload.LOOK,
                                                          *expected_metadata(media, media_path, info), media)
                if result is not None and result[1]:
                    uploaded = True
                    action = "uploaded" if self.options.apply else "would upload"
                    self.echo(f"{action} {media_path} ({human_size(result[0].size)})")
            if uploaded:
                self.summary.add(media_uploaded=1)
        except Exception as error:  # fails this media only
            self.summary.fail(media.describe(), f"{type(error).__name__}: {error}")
        finally:
            self.slots.release()

    # 3. incomplete uploads

    async def _abort_incomplete_uploads(self) -> None:
        async for upload in self.store.incomplete_uploads():
            if not self._older_than_grace(upload.initiated) or not self._of_this_shard(upload):
                continue
            if self.options.apply:
                try:
                    await self.store.abort_incomplete_upload(upload)
                except OSError as error:
                    self.summary.fail(upload.path, error)
                    continue
            self.summary.add(uploads_aborted=1)
            action = "aborted" if self.options.apply else "would abort"
            self.echo(f"{action} incomplete upload of {upload.path} (begun {upload.initiated:%Y-%m-%d %H:%M:%S %Z})")


    def _of_this_shard(self, upload: IncompleteUpload) -> bool:
        """Whether an upload is this shard's: that of the media it was for; of no media, shard 0's."""
        if self.options.shard.is_whole:
            return True
        owner = parse_media_path(upload.path.removeprefix(f"{self.store.backend.root}/{self.store.prefix}"))
        if owner is None:
            return self.options.shard.index == 0
        return self.options.shard.holds(owner.origin, owner.key)


def _remote_file_key(origin: str, filesystem_id: str) -> str:
    return f"{origin}/{filesystem_id}"  # a server name holds no "/"


def _take(rows: Iterator[T], count: int) -> list[T]:
    return list(itertools.islice(rows, count))
