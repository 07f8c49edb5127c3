"""objstore-offload: the click command line.

Every command and option of synapse-s3-storage-provider's `s3_media_upload` is here with
the same meaning (update-db, check-deleted, update, write, upload), reading and writing the
same cache.db, plus `restore`, `verify`, `migrate`, `reconcile` and `rekey`. With `--config homeserver.yaml` (or
SYNAPSE_CONFIG) the database, the media store and the store settings all come from Synapse's
own config.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from synapse_objstore.cli.cache_db import CacheDb, bind_media_store, check_synced
from synapse_objstore.cli.durations import Duration
from synapse_objstore.cli.homeserver import Homeserver, load_store_config_file
from synapse_objstore.cli.lock import CacheDbLock
from synapse_objstore.cli.ownership import DEFAULT_MAX_DELETE_SHARE, OwnerCheck
from synapse_objstore.cli.percentage import Percentage
from synapse_objstore.cli.report import MAX_LISTED_FAILURES, Failure, Summary, progress_bar
from synapse_objstore.cli.returned import find_returned
from synapse_objstore.cli.shard import WHOLE, Shard, ShardParam
from synapse_objstore.cli.synapse_db import DATABASE_YAML, SynapseDb
from synapse_objstore.errors import (
    CacheDbError,
    CommandError,
    ConfigError,
    ConfigFileError,
    NoProviderEntryError,
    ObjstoreError,
    OwnershipError,
    StoreUnusableError,
    SynapseDbError,
)
from synapse_objstore.media import MEDIA_DIRECTORIES, Media, MediaType, printable

# The store, its backends and their clients (s3fs, aiobotocore, aiohttp, pydantic) take a few
# hundred milliseconds to import: the commands that use a store import them when they run, so
# that update-db, check-deleted and write start at once.
if TYPE_CHECKING:
    from synapse_objstore.backends.base import Backend
    from synapse_objstore.cli.run_metrics import RunRecord
    from synapse_objstore.store import ObjectStore

T = TypeVar("T")
S = TypeVar("S", bound=Summary)

DEFAULT_JOBS = 8
# Retries after the first attempt of each request to the store, for the batch commands (the
# provider's default, 2, is for Synapse, whose clients wait). With botocore's standard mode
# (S3) the waits between them are random, up to 1, 2, 4, 8, 16 and then 20 s: about 45 s in
# all on average before a request is given up, and SlowDown counts as a retryable error.
BATCH_RETRIES = 8
RETRIES_KEY = "retries"  # the backend setting --retries overrides, where a backend has it
# The file content a batch command's uploads hold in memory at once (the backend setting
# `upload_memory_limit`, where a backend has it and the config does not set it): two 8 MiB
# multipart parts in flight rather than the provider's default four. The parts held are the
# peak of a run's memory: `upload --delete` of 400 media (1,384 files, the largest 21 MB, at
# the default --jobs) peaked at 107 MiB of RSS with 32 MiB, 97 MiB with 16 MiB, at the same
# files/s (its time goes to the many small files).
BATCH_UPLOAD_MEMORY = 16 * 1024 * 1024
UPLOAD_MEMORY_KEY = "upload_memory_limit"
WRITE_BATCH = 10_000
# s3_media_upload's upload options, as S3 settings of the provider config block
S3_OPTION_KEYS = ("prefix", "storage_class", "sse_customer_key", "sse_customer_algo", "endpoint_url")


# The exit code of a command that an error of one of these classes ends: 2, the run cannot
# start or go on at all (1 means some files failed; 130 and 143 are Ctrl-C and SIGTERM). Any
# other error is a bug: Python's traceback, and exit code 1.
EXIT_CODES: tuple[tuple[type[ObjstoreError], int], ...] = (
    (CommandError, 2),
    (ConfigError, 2),
    (ConfigFileError, 2),
    (CacheDbError, 2),  # CacheDbLockError too: another run has cache.db
    (SynapseDbError, 2),
    (OwnershipError, 2),
    (StoreUnusableError, 2),
)


def exit_code_of(error: ObjstoreError) -> int | None:
    """The exit code of a command that `error` ends (EXIT_CODES); None: a bug, not handled."""
    return next((code for error_class, code in EXIT_CODES if isinstance(error, error_class)), None)


@dataclass
class Context:
    cache_db_path: str
    progress: bool
    as_json: bool
    config_paths: Sequence[str]
    retries: int | None = None  # --retries; None: BATCH_RETRIES, or the config's if it has more
    wait: float = 0
    media_store_moved: bool = False  # --media-store-moved: cache.db may record another media store
    shard: Shard = WHOLE
    # what the run did, for --metrics-file: a command's Summary (`track`), or its closing counts
    summary: Summary | None = None
    counts: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    left: int | None = None  # what the run left undone, where a command has that (see run_metrics.py)
    # media that failed in a command without a Summary (update-db, check-deleted, update, write)
    failures: list[Failure] = field(default_factory=list)
    _homeserver: Homeserver | None = field(default=None, init=False)
    _lock: CacheDbLock | None = field(default=None, init=False)

    @property
    def homeserver(self) -> Homeserver | None:
        """homeserver.yaml from --config / SYNAPSE_CONFIG, if given."""
        if self._homeserver is None and self.config_paths:
            self._homeserver = Homeserver.load(self.config_paths)
        return self._homeserver

    def info(self, *words: object) -> None:
        """A progress line: stdout as s3_media_upload prints it, stderr when stdout carries JSON."""
        click.echo(" ".join(str(w) for w in words), err=self.as_json)

    def warn(self, *words: object) -> None:
        click.echo(" ".join(str(w) for w in words), err=True)

    def cache(self, lock: bool = True) -> CacheDb:
        """cache.db; unless `lock` is false, held by this run alone until the command ends (see lock.py)."""
        if lock and self._lock is None:
            ctx = click.get_current_context()
            self._lock = CacheDbLock.acquire(self.cache_db_path, f"objstore-offload {ctx.info_name}", self.wait)
            ctx.call_on_close(self._release_lock)
        cache = CacheDb(self.cache_db_path)
        cache.use_for(self.shard, record=lock)
        return cache

    def cache_for(self, media_store: str, dry_run: bool) -> CacheDb:
        """cache.db (locked, as `cache`) for a command that works on the files of `media_store`:
        the media store it records the offload of (see `bind_media_store`)."""
        cache = self.cache()
        self.bind_media_store(cache, media_store, dry_run)
        return cache

    def bind_media_store(self, cache: CacheDb, media_store: str, dry_run: bool) -> None:
        bind_media_store(cache, media_store, record=not dry_run, moved=self.media_store_moved)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def fail(self, name: str, error: str) -> None:
        """A media failed; the command goes on and exits 1 (see `finish_counts`)."""
        self.failures.append(Failure(name, error))

    def base_path(self, given: str | None) -> str:
        if given is None:
            if self.homeserver is None:
                raise click.UsageError(
                    "BASE_PATH is required (or give --config homeserver.yaml to take media_store_path)")
            given = self.homeserver.media_store_path
            if not self.homeserver.keeps_local_media:
                return given  # may be missing or empty: no media is local, every one is in the store
        if not os.path.isdir(given):
            raise CommandError(f"media store directory {given} does not exist")
        return given

    def stored_media_types(self) -> frozenset[str]:
        """The media types the provider in --config stores; both when no such provider is configured."""
        try:
            if self.homeserver is not None:
                return self.homeserver.stored_media_types()
        except NoProviderEntryError:
            pass
        return frozenset({"local", "remote"})

    def synapse_db(self, homeserver_config_path: str) -> SynapseDb:
        return SynapseDb.connect(self.homeserver, homeserver_config_path)

    def optional_synapse_db(self) -> SynapseDb | None:
        """Synapse's database when --config or database.yaml names one, else None."""
        if self.homeserver is None and not os.path.isfile(DATABASE_YAML):
            return None
        return SynapseDb.connect(self.homeserver, DATABASE_YAML)

    def store(self, store_config: str | None, bucket: str | None = None,
              overrides: Mapping[str, Any] | None = None) -> ObjectStore:
        """The store from --store-config, else --config's provider block, else BUCKET (S3) alone;
        BUCKET and s3_media_upload's options override the block's keys."""
        raw: dict[str, Any] = {}
        source = "the command line"
        if store_config is not None:
            raw, source = dict(load_store_config_file(store_config)), store_config
        elif self.homeserver is not None:
            try:
                raw, source = dict(self.homeserver.provider_config()), self.homeserver.source
            except ConfigFileError:
                if bucket is None:
                    raise
        elif bucket is None:
            raise click.UsageError("name the store: BUCKET, --store-config FILE or --config homeserver.yaml")
        if bucket is not None:
            raw["bucket"] = bucket
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        from synapse_objstore.config import parse_store_config
        from synapse_objstore.store import ObjectStore

        try:
            backend = parse_store_config(raw)
            batch: dict[str, Any] = {}
            retries = self._batch_retries(backend)
            if retries is not None:
                batch[RETRIES_KEY] = retries
            if UPLOAD_MEMORY_KEY in type(backend.settings).model_fields and UPLOAD_MEMORY_KEY not in raw:
                batch[UPLOAD_MEMORY_KEY] = BATCH_UPLOAD_MEMORY
            if batch:
                backend = parse_store_config({**raw, **batch})
        except ConfigError as error:
            raise ConfigError(f"store config from {source}: {error}") from None
        return ObjectStore(backend)

    def _batch_retries(self, backend: Backend) -> int | None:
        """The `retries` a batch command gives the store: --retries, else the backend's
        `batch_retries` (BATCH_RETRIES unless it says otherwise) or the config's own if higher,
        within what the backend accepts. None for a backend without the setting (its filesystem
        retries as it does; the upload's second try still applies)."""
        settings = backend.settings
        spec = type(settings).model_fields.get(RETRIES_KEY)
        if spec is None:
            if self.retries is not None:
                click.echo(f"note: the {backend.name} backend has no `{RETRIES_KEY}` setting: --retries does not "
                           "apply to it", err=True)
            return None
        most = min((bound.le for bound in spec.metadata if getattr(bound, "le", None) is not None), default=None)
        if self.retries is not None:
            if most is not None and self.retries > most:
                raise click.BadParameter(f"this backend takes at most {most}", param_hint="--retries")
            return self.retries
        default = BATCH_RETRIES if backend.batch_retries is None else backend.batch_retries
        wanted = max(default, int(getattr(settings, RETRIES_KEY)))
        return wanted if most is None else min(wanted, most)

    def track(self, summary: S) -> S:
        """The Summary of this run, which --metrics-file reports however the run ends."""
        self.summary = summary
        return summary

    def run_record(self, command: str, started: float, exit_code: int) -> RunRecord:
        """What this run did, for --metrics-file."""
        from synapse_objstore.cli.run_metrics import RunRecord, named_counts, summary_counts

        record = RunRecord(command, str(self.shard), started, time.time(), exit_code, dry_run=self.dry_run,
                           failures=len(self.failures), left=self.left)
        if self.summary is not None:
            record.dry_run = self.summary.dry_run
            record.counts = summary_counts(self.summary)
            record.failures += self.summary.failures
        record.counts.update(named_counts(self.counts))
        return record

    def finish(self, summary: Summary) -> None:
        summary.emit(self.as_json)
        if not summary.ok:
            sys.exit(1)

    def finish_counts(self, command: str, dry_run: bool, **counts: int) -> None:
        """The closing counts of a command without a Summary (JSON with --json), its failures; exit 1 if any."""
        self.counts, self.dry_run = counts, dry_run
        if self.as_json:
            failed = [{"path": f.path, "error": f.error} for f in self.failures]
            report = {"command": command, "dry_run": dry_run, **counts, "failed": failed}
            click.echo(json.dumps(report, sort_keys=True))
        if self.failures:
            self.info(f"Failed {len(self.failures)} media")
            for failure in self.failures[:MAX_LISTED_FAILURES]:
                self.info(f"  {failure.path}: {failure.error}")
            if len(self.failures) > MAX_LISTED_FAILURES:
                self.info(f"  ... and {len(self.failures) - MAX_LISTED_FAILURES} more (see --json)")
            sys.exit(1)


pass_context = click.make_pass_decorator(Context)


def run_store_job(store: ObjectStore, job: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a job on the I/O loop, close the store after."""
    from synapse_objstore.io_loop import run

    try:
        return run(job())
    except KeyboardInterrupt:
        # Stopping here is as safe as a crash: nothing is deleted before its verification is committed.
        click.echo("Interrupted. Run the same command again to resume; no file is lost.", err=True)
        sys.exit(130)
    finally:
        run(store.close())


class ExitCodeGroup(click.Group):
    """Ends a command that an ObjstoreError ends with a clean message and the error's exit code
    (EXIT_CODES), wherever it was raised; and writes the --metrics-file of the run, however it ends."""

    def invoke(self, ctx: click.Context) -> Any:
        started = time.time()
        exit_code = 1  # an exception click does not handle: Python exits with 1
        previous_handler = _stop_on_sigterm()
        try:
            result = self._invoke_command(ctx)
            exit_code = 0
            return result
        except SystemExit as error:
            exit_code = error.code if isinstance(error.code, int) else int(error.code is not None)
            if isinstance(error, Terminated):
                click.echo("Stopped (SIGTERM). Run the same command again to resume; no file is lost.", err=True)
            raise
        except (click.exceptions.Exit, click.ClickException) as error:
            exit_code = error.exit_code
            raise
        finally:
            metrics_file = ctx.params.get("metrics_file")
            if metrics_file is not None and isinstance(ctx.obj, Context):
                _write_metrics_file(metrics_file, ctx.obj.run_record(ctx.invoked_subcommand or "", started, exit_code))
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)

    def _invoke_command(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ObjstoreError as error:
            code = exit_code_of(error)
            if code is None:
                raise
            click.ClickException(str(error)).show()  # "Error: ..." on stderr, as click shows its own
            sys.exit(code)


class Terminated(SystemExit):
    """SIGTERM (systemd stopping the unit, a timeout): the run ends as on Ctrl-C, through every
    `finally` (cache.db's lock, the store, the --metrics-file), with exit code 143."""


def _terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated(128 + signum)


def _stop_on_sigterm() -> Any:
    """Make SIGTERM end the run as an exception; the handler it replaces (None: not the main
    thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminated)


def _write_metrics_file(path: str, record: RunRecord) -> None:
    """Write the run's textfile; a failure to is told on stderr and leaves the exit code as it is
    (the run itself is done; the stale end time in the old file shows it on the dashboard)."""
    from synapse_objstore.cli.run_metrics import write_run_metrics

    try:
        write_run_metrics(path, record)
    except OSError as error:
        click.echo(f"warning: could not write the metrics file {path}: {error.strerror or error}", err=True)


def _metrics_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--metrics-file: its directory must exist and be writable, checked before the run starts."""
    if value is not None:
        # a symlink is written through, where it points (node_exporter reads the target; replacing
        # the link with a file would leave the target stale)
        value = os.path.realpath(value)
        directory = os.path.dirname(value)
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            raise click.BadParameter(f"{directory} is not a directory this user can write to", ctx, param)
    return value


def _check_metrics_file_is_this_runs(ctx: click.Context, path: str, command: str, shard: Shard) -> None:
    """Refuse a --metrics-file that holds another command's or shard's series (exit 2, the file
    left as it is): replacing it would make them vanish from the dashboard, and an alert on
    their age never fire."""
    from synapse_objstore.cli.run_metrics import series_of_others

    others = series_of_others(path, command, str(shard))
    if others:
        ctx.params["metrics_file"] = None  # not to be written by this run
        raise CommandError(
            f"--metrics-file {path} holds the series of another run than this one's (command={command}, "
            f"shard={shard}): {others[0]}{f' and {len(others) - 1} more' if len(others) > 1 else ''}. Give each "
            f"command and shard a file of its own (remove this one if that run is no more)"
        )


dry_run_option = click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
jobs_option = click.option("--jobs", "-j", type=click.IntRange(1, 1024), default=DEFAULT_JOBS, show_default=True,
                           help="Media handled at once.")
store_config_option = click.option(
    "--store-config", type=click.Path(dir_okay=False),
    help="YAML file holding a provider config block (any backend); default: the provider in --config.",
)
size_only_option = click.option(
    "--size-only", is_flag=True,
    help="Where the store gives no checksum (SSE-C, non-S3 backends), trust a size match instead of reading "
         "the object back.",
)
hs_path_option = click.option(
    "--homeserver-config-path", default="homeserver.yaml", show_default=True,
    help="Path to the yaml file containing Synapse's DB settings (used when there is no database.yaml and "
         "no --config).",
)


@click.group(cls=ExitCodeGroup)
@click.option("--no-progress", is_flag=True, help="do not show progress bars")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON on stdout.")
@click.option("--config", "-c", "config_paths", multiple=True, envvar="SYNAPSE_CONFIG", type=click.Path(exists=True),
              help="Synapse's homeserver.yaml (or a config directory; repeatable): database, media_store_path "
                   "and store.")
@click.option("--cache-db", default="cache.db", show_default=True, type=click.Path(dir_okay=False),
              help="The offload state, in s3_media_upload's format.")
@click.option("--retries", type=click.IntRange(0, 20), default=None, metavar="N",
              help=f"Retries after the first attempt of each request to the store, with backoff (default "
                   f"{BATCH_RETRIES}, Azure 5, or the provider config's `retries` if higher).")
@click.option("--wait", type=click.IntRange(min=0), default=0, metavar="SECONDS",
              help="When another run has cache.db, wait up to this long for it to end (default: exit 2 at once).")
@click.option("--media-store-moved", is_flag=True,
              help="cache.db records another media store than this run's, which moved here: record this one.")
@click.option("--shard", type=ShardParam(), default=WHOLE, show_default=True,
              help="Handle only shard I of N (0 <= I < N) of the media, by a hash of each media's id, with a "
                   "--cache-db of this shard's own: N runs (processes or hosts) share one offload.")
@click.option("--metrics-file", type=click.Path(dir_okay=False), default=None, callback=_metrics_file,
              metavar="PATH",
              help="Write the run's summary there as a Prometheus textfile (for node_exporter's textfile collector; "
                   "name it *.prom), replaced atomically, however the run ends.")
@click.pass_context
def cli(ctx: click.Context, no_progress: bool, as_json: bool, config_paths: tuple[str, ...], cache_db: str,
        retries: int | None, wait: int, shard: Shard, metrics_file: str | None, media_store_moved: bool) -> None:
    """Move Synapse media not accessed for a while from the local media store to an object store."""
    if metrics_file is not None and ctx.invoked_subcommand:
        _check_metrics_file_is_this_runs(ctx, metrics_file, ctx.invoked_subcommand, shard)
    ctx.obj = Context(cache_db_path=cache_db, progress=not no_progress, as_json=as_json, config_paths=config_paths,
                      retries=retries, wait=wait, shard=shard,
                      media_store_moved=media_store_moved)


def _update_db(obj: Context, cache: CacheDb, synapse_db: SynapseDb, before: datetime.datetime, dry_run: bool) -> int:
    """Add the media not accessed since `before` to cache.db. Reads only those that aged past
    the cutoff of the last complete run from the same database (see `CacheDb.synced_before`)."""
    before_ts = int(before.timestamp() * 1000)
    since_ts = cache.synced_before(synapse_db.description)
    obj.info("Syncing files that haven't been accessed since:", before.isoformat(" "))
    if since_ts > time.time() * 1000:
        # Older versions took a negative duration; its cutoff would hide every media from now on.
        obj.warn(f"Warning: {cache.path} says media not accessed since {_iso(since_ts)} were synced, a time still to "
                 f"come (a negative duration given to an older version?): ignoring it, every media is read once")
        since_ts = 0
    if since_ts:
        obj.info("  Those not accessed since", _iso(since_ts), "were synced by an earlier run")
    batches = _checked(obj, synapse_db.media_accessed_between(
        since_ts, before_ts, lambda kind: obj.info("  Syncing", kind, "media")
    ))
    if dry_run:
        count = cache.count_new_synced(batches)
    else:
        count = cache.add_synced_media(batches)
        # a run with a longer duration than the last one's reads nothing and keeps its cutoff
        cache.set_synced_before(synapse_db.description, max(since_ts, before_ts))
    obj.info("Would sync" if dry_run else "Synced", count, "new rows")
    return count


def _checked(obj: Context, batches: Iterator[tuple[MediaType, list[tuple[str, ...]]]]
             ) -> Iterator[tuple[MediaType, list[tuple[str, ...]]]]:
    """The batches without the rows that make no media path, each of which fails (it is not
    read again: the cutoff moves past it, as no file Synapse writes can belong to it), and
    without the media of other shards than --shard's."""
    for media_type, rows in batches:
        good, bad = check_synced(media_type, rows)
        for name, problem in bad:
            obj.fail(name, f"not synced: {problem}")
        if not obj.shard.is_whole:
            good = [row for row in good if obj.shard.holds(*_paths_key(media_type, row))]
        yield media_type, good


def _paths_key(media_type: MediaType, row: tuple[str, ...]) -> tuple[str, str]:
    """(origin, filesystem_id) of a row of SynapseDb.media_accessed_between: what its shard is taken from."""
    return ("", row[0]) if media_type == "local" else (row[0], row[2])


def _iso(ts_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ts_ms / 1000).isoformat(" ")


def _check_deleted(obj: Context, cache: CacheDb, base_path: str, dry_run: bool, full: bool,
                   synapse_db: SynapseDb | None) -> tuple[int, int]:
    """Mark media with no file left on local disk deleted, and offloaded media with files back
    on disk not deleted (see returned.py). Returns how many of each."""
    total = cache.count(False)
    if not obj.progress:
        obj.info("Checking on ", total, " undeleted files")
    gone: list[Media] = []
    with progress_bar(obj.progress, total, "files") as bar:
        for media in cache.iter_media(False):
            try:
                if not media.local_files(base_path):
                    gone.append(media)
            except ValueError as error:  # a bad row of cache.db, a file Synapse does not write: never "deleted"
                obj.fail(media.describe(), str(error))
            bar.update(1)
    if not dry_run:
        for start in range(0, len(gone), WRITE_BATCH):
            cache.set_deleted(gone[start:start + WRITE_BATCH])
    obj.info("Would update" if dry_run else "Updated", len(gone), "as deleted")

    with progress_bar(obj.progress, None, "offloaded media") as bar:
        found = find_returned(cache, base_path, synapse_db, full, dry_run, obj.fail, obj.info, lambda: bar.update(1))
    obj.info(f"Found {found.media} offloaded media back on local disk ({found.files} files; looked at "
             f"{found.looked_at}):", "would mark them" if dry_run else "marked them",
             "not deleted, for the next upload")
    return len(gone), found.media


@cli.command("update-db")
@click.argument("duration", type=Duration())
@hs_path_option
@dry_run_option
@pass_context
def update_db(obj: Context, duration: datetime.datetime, homeserver_config_path: str, dry_run: bool) -> None:
    """Syncs rows from database to local cache.

    DURATION: media not accessed for that long, e.g. 1m (one month); suffixes s, h, d, m (30 days), y.
    """
    cache = obj.cache()
    synapse_db = obj.synapse_db(homeserver_config_path)
    try:
        synced = _update_db(obj, cache, synapse_db, duration, dry_run)
    finally:
        synapse_db.close()
    obj.finish_counts("update-db", dry_run, synced=synced)


full_option = click.option(
    "--full", is_flag=True,
    help="Look for every offloaded media back on local disk, not only those Synapse served since the last look.",
)


@cli.command("check-deleted")
@click.argument("base_path", required=False)
@full_option
@dry_run_option
@pass_context
def check_deleted(obj: Context, base_path: str | None, full: bool, dry_run: bool) -> None:
    """Check whether files in the local cache still exist under given path.

    Also finds offloaded media whose files are back on local disk (Synapse downloads an
    original again to make a new thumbnail of it) and marks them not deleted, for the next
    upload: with Synapse's database (--config or database.yaml), among the media it served
    since the last look; else, or with --full, among every offloaded media.
    """
    base = obj.base_path(base_path)
    cache = obj.cache_for(base, dry_run)
    synapse_db = None if full else obj.optional_synapse_db()
    try:
        deleted, returned = _check_deleted(obj, cache, base, dry_run, full, synapse_db)
    finally:
        if synapse_db is not None:
            synapse_db.close()
    obj.finish_counts("check-deleted", dry_run, deleted=deleted, returned=returned)


@cli.command("update")
@click.argument("args", nargs=-1, required=True, metavar="[BASE_PATH] DURATION")
@hs_path_option
@dry_run_option
@pass_context
def update(obj: Context, args: tuple[str, ...], homeserver_config_path: str, dry_run: bool) -> None:
    """Updates local cache. Equivalent to running update-db and check-deleted."""
    if len(args) > 2:
        raise click.UsageError("update takes BASE_PATH and DURATION")
    base_path = obj.base_path(args[0] if len(args) == 2 else None)
    before = Duration().convert(args[-1], None, click.get_current_context())
    cache = obj.cache_for(base_path, dry_run)
    synapse_db = obj.synapse_db(homeserver_config_path)
    try:
        synced = _update_db(obj, cache, synapse_db, before, dry_run)
        deleted, returned = _check_deleted(obj, cache, base_path, dry_run, False, synapse_db)
    finally:
        synapse_db.close()
    obj.finish_counts("update", dry_run, synced=synced, deleted=deleted, returned=returned)


@cli.command("write")
@click.argument("out", type=click.File("w", encoding="UTF-8"), default="-")
@pass_context
def write(obj: Context, out: TextIO) -> None:
    """Outputs all file and directory paths in the local cache that we may not have deleted.

    check-deleted should be run first to update cache. OUT: a file, or '-' for stdout.
    """
    for media in obj.cache(lock=False).iter_media(False):  # reads only
        try:
            paths = (media.file_path, media.thumbnail_dir + "/")  # thumbnail directories with a trailing '/'
        except ValueError as error:  # a bad row of cache.db: named on stderr, exit 1
            obj.fail(media.describe(), str(error))
            continue
        print(*paths, sep="\n", file=out)
    for failure in obj.failures:
        click.echo(f"skipped {failure.path}: {failure.error}", err=True)
    if obj.failures:
        sys.exit(1)


def _holds_media_files(media_store: str) -> bool:
    """Whether any file is left under the media directories of `media_store`: a homeserver that
    turned `enable_local_media_storage` off keeps the media its disk held before, which Synapse
    no longer reads. Stops at the first file."""
    for top in MEDIA_DIRECTORIES:
        for _, _, names in os.walk(os.path.join(media_store, top)):
            if names:
                return True
    return False


@cli.command("upload")
@click.argument("base_path", required=False)
@click.argument("bucket", required=False)
@click.option("--prefix", default=None, help="Prefix of files in the bucket")
@click.option("--storage-class", default=None, help="S3 storage class to use (default STANDARD)")
@click.option("--sse-customer-key", default=None, help="SSE-C key to use")
@click.option("--sse-customer-algo", default=None,
              help="Algorithm for SSE-C, only used if sse-customer-key is also specified (default AES256)")
@click.option("--delete", is_flag=True, help="Deletes local copy from media store on successful (verified) upload")
@click.option("--endpoint-url", default=None, help="S3 endpoint url to use")
@click.option("--database-changed", is_flag=True,
              help="Accept a database that lacks media the store's owner recorded (deleted since; see the README).")
@store_config_option
@jobs_option
@size_only_option
@dry_run_option
@pass_context
def upload(obj: Context, base_path: str | None, bucket: str | None, prefix: str | None, storage_class: str | None,
           sse_customer_key: str | None, sse_customer_algo: str | None, delete: bool, endpoint_url: str | None,
           database_changed: bool, store_config: str | None, jobs: int, size_only: bool, dry_run: bool) -> None:
    """Uploads media to the store based on local cache (BASE_PATH BUCKET, or both from --config)."""
    from synapse_objstore.cli.offload import Offloader, UploadOptions

    overrides = {
        "prefix": prefix, "storage_class": storage_class, "sse_customer_key": sse_customer_key,
        "endpoint_url": endpoint_url, "sse_customer_algo": sse_customer_algo if sse_customer_key else None,
    }
    if (base_path is None and obj.homeserver is not None and not obj.homeserver.keeps_local_media
            and not _holds_media_files(obj.homeserver.media_store_path)):
        obj.info(f"Nothing local to offload: enable_local_media_storage is false in {obj.homeserver.source}, so "
                 "Synapse keeps no media on its disk (the provider stores every file as it is written)")
        obj.finish(Summary("upload", dry_run=dry_run))
        return
    store = obj.store(store_config, bucket, overrides)
    if delete and store_config is None:  # a store config file names its store on purpose
        _check_synapse_reads(obj, store)
    options = UploadOptions(obj.base_path(base_path), delete=delete, dry_run=dry_run, jobs=jobs,
                            read_back=not size_only)
    cache = obj.cache()
    summary = obj.track(Summary("upload", dry_run=dry_run))
    total = cache.count(False)
    if not obj.progress:
        obj.info("Uploading ", total, " media")
    synapse_db = obj.optional_synapse_db()  # to claim the store for this homeserver, or be refused

    def offload(bar: Any) -> Coroutine[Any, Any, None]:
        # after the claim, so that another homeserver's store is what a wrong config is told first
        obj.bind_media_store(cache, options.base_path, dry_run)
        return Offloader(store, cache, options, summary, bar).run()

    try:
        with progress_bar(obj.progress, total) as bar:
            run_store_job(store, lambda: _claimed_then(store, synapse_db, dry_run, database_changed,
                                                       lambda: offload(bar)))
    finally:
        if synapse_db is not None:
            synapse_db.close()
        if delete and not dry_run:
            obj.left = total - summary.media_deleted  # also when the run stopped half-way
    obj.finish(summary)


def _check_synapse_reads(obj: Context, store: ObjectStore) -> None:
    """CommandError when --config's homeserver reads its media through our provider from
    another bucket or prefix than `store`, which BUCKET or --prefix made of its provider block:
    deleting the local copies of what this run offloads would leave Synapse without them (a
    mistyped BUCKET, or s3_media_upload's habit of naming one). The endpoint may differ (a
    proxy, another address of the same store)."""
    if obj.homeserver is None:
        return
    from synapse_objstore.config import parse_store_config

    try:
        reads = parse_store_config(dict(obj.homeserver.provider_config())).settings
    except (ConfigFileError, ConfigError):  # no provider block of ours: nothing to compare with
        return
    given = store.backend.settings
    if (type(reads), getattr(reads, "bucket", None), reads.prefix) != (
            type(given), getattr(given, "bucket", None), given.prefix):
        raise CommandError(
            f"refusing to upload --delete to {store.backend.describe()}: Synapse ({obj.homeserver.source}) reads "
            f"media through {reads.prefix!r} of {getattr(reads, 'bucket', None) or type(reads).__name__}, so the "
            "media deleted here would be lost to it. Check BUCKET and --prefix (or leave them out), or change "
            "homeserver.yaml first (without --delete, nothing local is deleted)")
    if unreadable := _unreadable_to_synapse(reads, given):
        raise CommandError(
            f"refusing to upload --delete to {store.backend.describe()}: {unreadable}, so Synapse "
            f"({obj.homeserver.source}) could not read the media deleted here. Leave the option out (the provider "
            "block's is used), or change homeserver.yaml first (without --delete, nothing local is deleted)")


# Storage classes whose objects cannot be read until restored (hours), as Synapse reads them.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def _unreadable_to_synapse(reads: Any, given: Any) -> str | None:
    """Why objects written with `given`'s S3 settings (the provider block with s3_media_upload's
    options over it) could not be read with `reads`' (the block as Synapse has it); None if they
    could. Keys are never named, only whether they match."""
    from synapse_objstore.backends.s3.settings import S3Settings

    if not (isinstance(reads, S3Settings) and isinstance(given, S3Settings)):
        return None
    key = given.sse_customer_key.get_secret_value() if given.sse_customer_key is not None else None
    if key is not None and (key not in reads.sse_keys() or given.sse_customer_algo != reads.sse_customer_algo):
        return ("--sse-customer-key (or --sse-customer-algo) is not a key the provider block reads with: the "
                "objects would be encrypted with a key Synapse does not have")
    if given.storage_class.upper() in ARCHIVE_STORAGE_CLASSES and given.storage_class != reads.storage_class:
        return (f"--storage-class {given.storage_class} is an archive class, whose objects cannot be read until "
                "restored")
    return None


async def _claimed_then(store: ObjectStore, synapse_db: SynapseDb | None, dry_run: bool, database_changed: bool,
                        job: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`job`, once the store is known not to be another homeserver's (when the database is known)."""
    from synapse_objstore.cli.ownership import claim_store
    from synapse_objstore.cli.store_watch import watched
    from synapse_objstore.health import preflight

    if synapse_db is not None:
        await preflight(store)  # an unusable store is reported as such, before its marker is asked for
        claim = claim_store(store, synapse_db, "upload", dry_run, database_changed)
        if (warning := await watched(claim, store)) is not None:
            click.echo(warning, err=True)
    return await job()


@cli.command("restore")
@click.argument("base_path", required=False)
@click.option("--media", "media_ids", multiple=True, metavar="[ORIGIN/]MEDIA_ID",
              help="Restore only this media (repeatable); default: every media cache.db says is offloaded.")
@store_config_option
@jobs_option
@dry_run_option
@pass_context
def restore(obj: Context, base_path: str | None, media_ids: tuple[str, ...], store_config: str | None, jobs: int,
            dry_run: bool) -> None:
    """Bring offloaded media back from the store into the local media store."""
    from synapse_objstore.cli.restore import RestoreOptions, Restorer

    store = obj.store(store_config)
    options = RestoreOptions(obj.base_path(base_path), dry_run=dry_run, jobs=jobs)
    cache = obj.cache_for(options.base_path, dry_run)
    selected = [_find_media(cache, media_id) for media_id in media_ids] or None
    summary = obj.track(Summary("restore", dry_run=dry_run))
    total = len(selected) if selected is not None else cache.count(True)
    with progress_bar(obj.progress, total) as bar:
        run_store_job(store, lambda: Restorer(store, cache, options, summary, bar).run(selected))
    obj.finish(summary)


def _find_media(cache: CacheDb, given: str) -> Media:
    origin, _, media_id = given.rpartition("/")
    media = cache.find(origin, media_id)
    if media is None:
        raise click.BadParameter(f"{printable(given)} is not in {cache.path}", param_hint="--media")
    return media


@cli.command("verify")
@store_config_option
@jobs_option
@pass_context
def verify(obj: Context, store_config: str | None, jobs: int) -> None:
    """Check that every media cache.db says is offloaded is in the store, with the right size."""
    from synapse_objstore.cli.audit import Auditor

    store = obj.store(store_config)
    cache = obj.cache()
    synapse_db = obj.optional_synapse_db()
    summary = obj.track(Summary("verify"))
    try:
        with progress_bar(obj.progress, cache.count(True)) as bar:
            run_store_job(store, lambda: Auditor(store, cache, synapse_db, jobs, summary, bar).run())
    finally:
        if synapse_db is not None:
            synapse_db.close()
    obj.finish(summary)


@cli.command("migrate")
@click.option("--to", "to_config", required=True, type=click.Path(dir_okay=False),
              help="YAML file holding the target's provider config block.")
@store_config_option
@jobs_option
@size_only_option
@dry_run_option
@pass_context
def migrate(obj: Context, to_config: str, store_config: str | None, jobs: int, size_only: bool, dry_run: bool) -> None:
    """Copy every object from the store (--store-config or --config) to another (--to), verified."""
    from synapse_objstore.cli.migrate import Migrator
    from synapse_objstore.io_loop import run

    if not obj.shard.is_whole:
        raise click.UsageError("migrate takes no --shard: it copies every object of the store, and needs no cache.db")
    source = obj.store(store_config)
    target = obj.store(to_config)
    summary = obj.track(Summary("migrate", dry_run=dry_run))
    try:
        with progress_bar(obj.progress, None, "files") as bar:
            run_store_job(source, lambda: Migrator(source, target, jobs, dry_run, not size_only, summary, bar).run())
    finally:
        run(target.close())
    obj.finish(summary)


@cli.command("reconcile")
@click.argument("base_path", required=False)
@click.option("--apply", is_flag=True, help="Delete, upload and abort for real; without it nothing changes.")
@click.option("--grace", type=Duration(allow_zero=True), default="1d", show_default=True,
              help="Touch only objects, media and uploads older than this (suffixes s, h, d, m, y).")
@click.option("--max-delete", type=click.IntRange(min=0), default=None, metavar="N",
              help="Delete at most N objects, then stop deleting and exit with code 1.")
@click.option("--max-delete-share", type=Percentage(), default=DEFAULT_MAX_DELETE_SHARE, show_default=True,
              help="Refuse to delete anything when more than this share of the media objects listed would go.")
@click.option("--replace-owner", default=None, metavar="SERVER_NAME",
              help="Hand a store recorded as another homeserver's over to this one; name the recorded owner.")
@click.option("--database-changed", is_flag=True,
              help="Accept the owner's database moved elsewhere or restored from a backup (see the README).")
@click.option("--media-on-other-hosts", is_flag=True,
              help="Media workers on other hosts keep media on disks of their own: a media neither in this "
                   "media store nor in the store is left to them, not reported lost.")
@store_config_option
@hs_path_option
@jobs_option
@size_only_option
@pass_context
def reconcile(obj: Context, base_path: str | None, apply: bool, grace: datetime.datetime, max_delete: int | None,
              max_delete_share: float, replace_owner: str | None, database_changed: bool, media_on_other_hosts: bool,
              store_config: str | None, homeserver_config_path: str, jobs: int, size_only: bool) -> None:
    """Make the store match Synapse's database; a dry run unless --apply.

    Deletes objects of media Synapse no longer has (deleted, purged, expired), thumbnails
    included; uploads, verified, local media missing from the store (failed background
    uploads); reports media that are neither local nor in the store; aborts incomplete
    multipart uploads. Objects that are not media paths are never deleted.

    Refuses (exit 2) when the store belongs to another homeserver than the database (a marker
    object under the prefix, written by the first --apply, records its owner), and when more
    than --max-delete-share of the media objects listed would be deleted.

    With --shard I/N it handles only the objects and media of that shard (each run lists the
    whole store); only shard 0 records the owner marker.
    """
    from synapse_objstore.cli.reconcile import ReconcileOptions, Reconciler, ReconcileSummary

    store = obj.store(store_config)
    options = ReconcileOptions(obj.base_path(base_path), grace.astimezone(), apply=apply, max_delete=max_delete,
                               max_delete_share=max_delete_share,
                               owner_check=OwnerCheck(replace_owner, database_changed), jobs=jobs,
                               read_back=not size_only, upload_types=obj.stored_media_types(), shard=obj.shard,
                               media_on_other_hosts=media_on_other_hosts)
    synapse_db = obj.synapse_db(homeserver_config_path)
    summary = obj.track(ReconcileSummary("reconcile", dry_run=not apply))
    try:
        with progress_bar(obj.progress, None, "objects") as bar:
            reconciler = Reconciler(store, synapse_db, obj.cache(), options, summary, bar, obj.info)
            run_store_job(store, reconciler.run)
    finally:
        synapse_db.close()
        obj.left = summary.orphans_left
    obj.finish(summary)


@cli.command("rekey")
@click.option("--apply", is_flag=True, help="Rewrite the objects for real; without it nothing changes.")
@click.option("--decrypt", is_flag=True,
              help="Confirm that --apply may store objects unencrypted: the config has no sse_customer_key.")
@store_config_option
@jobs_option
@pass_context
def rekey(obj: Context, apply: bool, decrypt: bool, store_config: str | None, jobs: int) -> None:
    """Rewrite every object under an earlier SSE-C key (or none) under the current key; a dry run unless --apply.

    Lists every object under the prefix of the store (--store-config or --config), tells which
    configured key reads each (sse_customer_key: "current"; previous_sse_customer_keys:
    "previous-1", ...; "unencrypted" with previously_unencrypted) and reports the objects and
    bytes under each. With --apply, rewrites each one not under the current key in the store
    (server-side copy where the store can, else streamed through this host), verified: the
    current key reads it, with its size, Content-Type and metadata. Also encrypts a bucket
    written without SSE-C (previously_unencrypted: true), or decrypts one (no sse_customer_key,
    the old key in previous_sse_customer_keys). A rerun after any interruption finds only what
    is left. The whole prefix is listed before anything is rewritten: one holding objects that
    are neither Synapse media nor its owner marker (another homeserver's, under a wrong prefix)
    is refused (exit code 2), nothing rewritten. S3 stores only. Once it reports every object
    under the current key, the previous keys can leave the config. Decrypting needs --decrypt
    besides --apply, so that a config that lost its sse_customer_key line does not decrypt the
    bucket.
    """
    from synapse_objstore.cli.rekey import Rekeyer, RekeySummary, check_rekeyable

    if not obj.shard.is_whole:
        raise click.UsageError("rekey takes no --shard: it rewrites every object of the store, and needs no cache.db")
    store = obj.store(store_config)
    check_rekeyable(store, apply, decrypt)
    summary = obj.track(RekeySummary("rekey", dry_run=not apply))
    try:
        with progress_bar(obj.progress, None, "objects") as bar:
            run_store_job(store, lambda: Rekeyer(store, jobs, apply, summary, bar, obj.info).run())
    except StoreUnusableError:
        if summary.stopped:  # the store failed mid-run: what was done before, then the error (exit 2)
            summary.emit(obj.as_json)
        raise
    obj.finish(summary)
