"""cache.db: the offload state, in s3_media_upload's own SQLite schema.

Table `media` is exactly the one s3_media_upload creates and uses (`known_deleted` means "no
file of this media is left on local disk"), so an admin can switch between the two tools at
any point. What this tool adds lives in tables of its own, which s3_media_upload ignores:
`objstore_files`, one row per file whose remote copy was verified, written (and committed)
before that local file is deleted. A killed run therefore never leaves a deleted file
without a record of where its verified copy is. `objstore_synced`, the cutoff of the
last update-db, so that the next one reads only the media that aged past it since.
`objstore_returned`, the media found back on local disk after they were offloaded (their
remote copy is the reference: a local copy that differs is never uploaded over it), and
`objstore_rechecked`, up to when check-deleted has looked for such media. `objstore_shard`,
the shard of the media it holds (see shard.py), so that it is never used for another.
`objstore_media_info`, the media type and sha256 Synapse's database has for each original
(filled by update-db; `upload` sets the Content-Type from it and checks the local file against
the sha256), and `objstore_files.sha256`, the sha256 of each verified file.
`objstore_files.multipart_etags`, the ETags the file has as an S3 multipart object (our part
size's and boto3's), so that `verify` tells a multipart object's content from its ETag.

The schema's version is SQLite's `user_version` (0 for s3_media_upload's files and ours before
version 1 and 2); `_migrate` brings an older file up to date when it is opened.

Every sqlite error becomes a CacheDbError naming the file (a damaged one: what to do).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from synapse_objstore.cli.shard import WHOLE, Shard
from synapse_objstore.errors import CacheDbError, OtherMediaStoreError
from synapse_objstore.media import Media, MediaType, local_media_path, printable, remote_media_path

P = ParamSpec("P")
T = TypeVar("T")

# Verbatim from s3_media_upload 1.7.0.
MEDIA_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS media_id_idx ON media(origin, media_id)",
    "CREATE INDEX IF NOT EXISTS deleted_idx ON media(known_deleted)",
)
SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS media (
        origin TEXT NOT NULL,  -- empty string if local media
        media_id TEXT NOT NULL,
        filesystem_id TEXT NOT NULL,
        -- Type is "local" or "remote"
        type TEXT NOT NULL,
        -- indicates whether the media and all its thumbnails have been deleted from the
        -- local cache
        known_deleted BOOLEAN NOT NULL
    );

    {MEDIA_INDEXES[0]};
    {MEDIA_INDEXES[1]};
"""

OBJSTORE_SCHEMA = """
    CREATE TABLE IF NOT EXISTS objstore_files (
        path TEXT NOT NULL PRIMARY KEY,  -- media path: the object key without the prefix
        origin TEXT NOT NULL,
        media_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        md5 TEXT,                        -- hex MD5 of the verified content, when computed
        store TEXT NOT NULL,             -- the store it was verified on
        verified_ts INTEGER NOT NULL     -- milliseconds since the epoch
    );
    CREATE INDEX IF NOT EXISTS objstore_files_media_idx ON objstore_files(origin, media_id);
    -- The cutoff (ms) of the last complete update-db from each Synapse database: every media
    -- last accessed before it is in `media`, so the next run reads only what aged past it since.
    CREATE TABLE IF NOT EXISTS objstore_synced (
        source TEXT NOT NULL PRIMARY KEY,  -- the database, as SynapseDb describes it
        before_ts INTEGER NOT NULL
    );
    -- Media found back on local disk after they were offloaded (Synapse downloads an
    -- original again to make a thumbnail of it), by the key of their media paths.
    CREATE TABLE IF NOT EXISTS objstore_returned (
        origin TEXT NOT NULL,
        filesystem_id TEXT NOT NULL,
        found_ts INTEGER NOT NULL,       -- milliseconds since the epoch
        PRIMARY KEY (origin, filesystem_id)
    );
    -- check-deleted has looked for offloaded media back on disk among those Synapse's
    -- database (`source`) says were accessed since `since_ts` (ms).
    CREATE TABLE IF NOT EXISTS objstore_rechecked (
        source TEXT NOT NULL PRIMARY KEY,
        since_ts INTEGER NOT NULL
    );
    -- The shard (--shard I/N) whose media this cache.db holds; no row: every media.
    CREATE TABLE IF NOT EXISTS objstore_shard (
        one INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
        shard_index INTEGER NOT NULL,
        shard_count INTEGER NOT NULL
    );
    -- The media store (its real path) whose offload this cache.db records: one row at most.
    CREATE TABLE IF NOT EXISTS objstore_media_store (
        path TEXT NOT NULL PRIMARY KEY
    );
    -- The id of that media store (its MEDIA_STORE_ID_FILE): one row at most. Media workers on
    -- several hosts keep their media at the same path, each on a disk of its own.
    CREATE TABLE IF NOT EXISTS objstore_media_store_id (
        id TEXT NOT NULL PRIMARY KEY
    );
    -- What Synapse's database records of a media's original (SynapseDb.media_accessed_between):
    -- its media type and (Synapse 1.128+) the hex sha256 of its content. A row only where one is known.
    CREATE TABLE IF NOT EXISTS objstore_media_info (
        origin TEXT NOT NULL,
        media_id TEXT NOT NULL,
        media_type TEXT,
        sha256 TEXT,
        PRIMARY KEY (origin, media_id)
    );
"""
# Media looked up per query by `media_infos` (two SQL variables each; SQLite before 3.32 takes 999).
INFO_CHUNK = 400
# The columns of objstore_files a FileRecord holds, in its order.
FILE_COLUMNS = "path, origin, media_id, size, md5, store, sha256, multipart_etags"
# The version of the schema this code writes (`PRAGMA user_version`).
SCHEMA_VERSION = 2
# Rows of objstore_media_info from a batch (see `_info_json`).
INSERT_MEDIA_INFO = """
    INSERT OR REPLACE INTO objstore_media_info (origin, media_id, media_type, sha256)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]')
    FROM json_each(?)
"""

PAGE_SIZE = 1000

# Rows of `media` from a batch of SynapseDb.media_accessed_between as one JSON list (see
# `_as_json`): json_each reads it in C, with the GIL let go, twice as fast as an executemany.
# known_deleted is 0, as s3_media_upload stores its False.
INSERT_SYNCED = {
    "local": """
        INSERT OR IGNORE INTO media (origin, media_id, filesystem_id, type, known_deleted)
        SELECT '', value, value, 'local', 0 FROM json_each(?)
    """,
    "remote": """
        INSERT OR IGNORE INTO media (origin, media_id, filesystem_id, type, known_deleted)
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
               'remote', 0
        FROM json_each(?)
    """,
}


# What `offloaded_among` reads: the media of a synced batch that cache.db marks offloaded. CROSS
# JOIN keeps the batch the outer loop (one index lookup per row): left to itself, SQLite walks
# every local media of `media` and reads the whole batch for each.
OFFLOADED_AMONG = {
    "local": """
        SELECT m.origin, m.media_id, m.filesystem_id, m.type FROM json_each(?) AS j
        CROSS JOIN media AS m ON m.origin = '' AND m.media_id = j.value
        WHERE m.known_deleted
    """,
    "remote": """
        SELECT m.origin, m.media_id, m.filesystem_id, m.type FROM json_each(?) AS j
        CROSS JOIN media AS m
            ON m.origin = json_extract(j.value, '$[0]') AND m.media_id = json_extract(j.value, '$[1]')
        WHERE m.known_deleted
    """,
}


def _is_damaged(error: sqlite3.Error) -> bool:
    name = getattr(error, "sqlite_errorname", "")
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


def _cache_db_error(path: str, error: sqlite3.Error) -> CacheDbError:
    if _is_damaged(error):
        return CacheDbError(
            f"{path} is damaged (sqlite: {error}). Restore it from a backup, or move it aside and run "
            f"`objstore-offload update DURATION` to build a new one from Synapse's database and the media store"
        )
    return CacheDbError(f"Could not use {path!r} as sqlite DB: {error}")


def _sqlite_errors(method: Callable[Concatenate[CacheDb, P], T]) -> Callable[Concatenate[CacheDb, P], T]:
    """Turn an sqlite error of a CacheDb method into a CacheDbError naming the file."""

    def wrapper(self: CacheDb, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise _cache_db_error(self.path, error) from None

    return wrapper


def check_synced(
    media_type: MediaType, rows: list[tuple[str, ...]]
) -> tuple[list[tuple[str, ...]], list[tuple[str, str]]]:
    """The rows of a batch of SynapseDb.media_accessed_between that make media paths, and
    (media, problem) for those that do not (a media id too long for a file name, or holding
    '..', a NUL, a newline: no file Synapse could have written), printable."""
    good: list[tuple[str, ...]] = []
    bad: list[tuple[str, str]] = []
    for row in rows:
        try:
            if media_type == "local":
                local_media_path(row[0])
            else:
                origin, media_id, filesystem_id = row[:3]
                remote_media_path(origin, filesystem_id)
                if not isinstance(media_id, str) or "\0" in media_id:
                    raise ValueError(f"invalid media id {media_id!r}")
        except ValueError as error:
            name = row[0] if media_type == "local" else f"{row[0]}/{row[1]}"
            bad.append((printable(name), str(error)))
            continue
        good.append(row)
    return good, bad


@dataclass(frozen=True)
class FileRecord:
    """A file whose remote copy was verified to hold the local file's content."""

    path: str
    origin: str
    media_id: str
    size: int
    md5: str | None
    store: str
    sha256: str | None = None
    # the ETags ("hex-N") the file has as a multipart object; none known: empty
    multipart_etags: frozenset[str] = frozenset()


def _file_record(row: tuple[Any, ...]) -> FileRecord:
    """A FileRecord of a row of FILE_COLUMNS (its multipart ETags space-separated, or NULL)."""
    path, origin, media_id, size, md5, store, sha256, multipart_etags = row
    return FileRecord(path, origin, media_id, size, md5, store, sha256, frozenset((multipart_etags or "").split()))


@dataclass(frozen=True)
class MediaInfo:
    """What Synapse's database records of a media's original."""

    media_type: str | None
    sha256: str | None


class CacheDb:
    """cache.db. Not thread-safe: one caller at a time (the offload engine serialises its calls)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False)
            self._conn.executescript(SCHEMA + OBJSTORE_SCHEMA)
            self._migrate()
        except sqlite3.Error as error:
            raise _cache_db_error(path, error) from None

    def _migrate(self) -> None:
        """Bring a cache.db of an older schema version up to SCHEMA_VERSION (the new tables
        are made by OBJSTORE_SCHEMA already). A newer version is left alone: its additions are
        tables and columns this code does not read.

        1: objstore_files.sha256, and objstore_media_info. The media synced before have no
        info row, and an update-db reads only media that aged past its last cutoff: the
        cutoffs are dropped, so the next update-db reads every media again (inserting none
        twice) and fills in their media types and sha256s.
        2: objstore_files.multipart_etags (NULL for the files verified before: verify judges
        those as before)."""
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version >= SCHEMA_VERSION:
            return
        with self._conn:
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(objstore_files)")}
            if "sha256" not in columns:
                self._conn.execute("ALTER TABLE objstore_files ADD COLUMN sha256 TEXT")
            if "multipart_etags" not in columns:
                self._conn.execute("ALTER TABLE objstore_files ADD COLUMN multipart_etags TEXT")
            if version < 1 and self._conn.execute("SELECT 1 FROM objstore_media_info LIMIT 1").fetchone() is None:
                self._conn.execute("DELETE FROM objstore_synced")
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    @_sqlite_errors
    def shard(self) -> Shard:
        """The shard whose media this cache.db holds (WHOLE: every media)."""
        row = self._conn.execute("SELECT shard_index, shard_count FROM objstore_shard").fetchone()
        return Shard(int(row[0]), int(row[1])) if row else WHOLE

    @_sqlite_errors
    def is_empty(self) -> bool:
        return self._conn.execute("SELECT 1 FROM media LIMIT 1").fetchone() is None

    def use_for(self, shard: Shard, record: bool) -> None:
        """Check that this run's shard is the one this cache.db holds; on a cache.db with no
        media yet, `record` it. Raises CacheDbError otherwise: a cache.db of one shard used for
        another would offload, verify or restore the wrong media, and one that holds every
        media would make a shard's run handle the others' too."""
        held = self.shard()
        if held == shard:
            return
        if held.is_whole and self.is_empty():
            if record:
                self._record_shard(shard)
            return
        what = "every media (it was written without --shard)" if held.is_whole else f"the media of --shard {held}"
        given = "no --shard (every media)" if shard.is_whole else f"--shard {shard}"
        raise CacheDbError(
            f"{self.path} holds {what}, and this run was given {given}: each shard keeps a cache.db of its own. "
            f"Give the --shard this cache.db was written with, or another --cache-db (a new one is filled by "
            f"`update DURATION`)"
        )

    @_sqlite_errors
    def _record_shard(self, shard: Shard) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO objstore_shard (one, shard_index, shard_count) VALUES (1, ?, ?)",
                               (shard.index, shard.count))

    @_sqlite_errors
    def media_store(self) -> str | None:
        """The media store whose offload this cache.db records, if it records one."""
        row = self._conn.execute("SELECT path FROM objstore_media_store").fetchone()
        return None if row is None else str(row[0])

    @_sqlite_errors
    def media_store_id(self) -> str | None:
        """The id of the media store this cache.db records (see `bind_media_store`), if it records one."""
        row = self._conn.execute("SELECT id FROM objstore_media_store_id").fetchone()
        return None if row is None else str(row[0])

    @_sqlite_errors
    def set_media_store(self, path: str, store_id: str | None = None) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM objstore_media_store")
            self._conn.execute("INSERT INTO objstore_media_store (path) VALUES (?)", (path,))
            self._conn.execute("DELETE FROM objstore_media_store_id")
            if store_id is not None:
                self._conn.execute("INSERT INTO objstore_media_store_id (id) VALUES (?)", (store_id,))

    @_sqlite_errors
    def count(self, deleted: bool) -> int:
        (count,) = self._conn.execute(
            "SELECT COALESCE(count(*), 0) FROM media WHERE known_deleted = ?", (deleted,)
        ).fetchone()
        return int(count)

    @_sqlite_errors
    def media_page(self, deleted: bool, after: int, limit: int = PAGE_SIZE) -> list[tuple[int, Media]]:
        """Up to `limit` media with that `known_deleted` whose rowid is above `after`, in rowid order.

        Each page is its own short query, so rows may be updated (and committed) between
        pages without disturbing the walk and without holding a read lock for long.
        """
        rows = self._conn.execute(
            """
            SELECT rowid, origin, media_id, filesystem_id, type FROM media
            WHERE rowid > ? AND known_deleted = ? ORDER BY rowid LIMIT ?
            """,
            (after, deleted, limit),
        ).fetchall()
        return [(rowid, Media(origin, media_id, fs_id, mtype)) for rowid, origin, media_id, fs_id, mtype in rows]

    @_sqlite_errors
    def media_infos(self, media: list[Media]) -> dict[tuple[str, str], MediaInfo | None]:
        """`media_info` of each of `media` by (origin, media_id), in a query per INFO_CHUNK."""
        infos: dict[tuple[str, str], MediaInfo | None] = dict.fromkeys(((m.origin, m.media_id) for m in media), None)
        rows = self._rows_of("SELECT origin, media_id, media_type, sha256 FROM objstore_media_info", list(infos))
        infos.update(((origin, media_id), MediaInfo(mtype, sha256)) for origin, media_id, mtype, sha256 in rows)
        return infos

    @_sqlite_errors
    def offloaded_before(self, media: list[Media]) -> set[tuple[str, str]]:
        """Those of `media` (by (origin, media_id)) that cache.db knows a copy of in the store
        of: a file of theirs verified and recorded, or found back on disk after an offload."""
        keys = [(m.origin, m.media_id) for m in media]
        found = set(self._rows_of("SELECT DISTINCT origin, media_id FROM objstore_files", keys))
        by_file_id = {(m.origin, m.filesystem_id): (m.origin, m.media_id) for m in media}
        found.update(by_file_id[(origin, fs_id)] for origin, fs_id in self._rows_of(
            "SELECT origin, filesystem_id FROM objstore_returned", list(by_file_id), columns="origin, filesystem_id"))
        return found

    def _rows_of(self, select: str, keys: list[tuple[str, str]], then: str = "",
                 columns: str = "origin, media_id") -> Iterator[tuple[Any, ...]]:
        """The rows of `select` about the media `keys` ((origin, media_id) pairs, or the pairs of
        `columns`), a query per INFO_CHUNK of them; `then`: what follows the WHERE clause (an ORDER BY)."""
        for start in range(0, len(keys), INFO_CHUNK):
            chunk = keys[start:start + INFO_CHUNK]
            yield from self._conn.execute(
                f"{select} WHERE ({columns}) IN (VALUES {', '.join(['(?, ?)'] * len(chunk))}) {then}",
                [value for key in chunk for value in key],
            ).fetchall()

    def iter_media(self, deleted: bool) -> Iterator[Media]:
        """Every media with that `known_deleted`, page by page."""
        after = -1
        while page := self.media_page(deleted, after):
            after = page[-1][0]
            yield from (media for _, media in page)

    @_sqlite_errors
    def add_media(self, rows: Iterable[tuple[str, str, str, str]]) -> int:
        """Insert (origin, media_id, filesystem_id, type) rows not yet known; returns how many were new."""
        before = self._conn.total_changes
        with self._conn:
            self._conn.executemany(
                """
                INSERT OR IGNORE INTO media (origin, media_id, filesystem_id, type, known_deleted)
                VALUES (?, ?, ?, ?, ?)
                """,
                ((origin, media_id, fs_id, mtype, False) for origin, media_id, fs_id, mtype in rows),
            )
        return self._conn.total_changes - before

    @_sqlite_errors
    def add_synced_media(self, batches: Iterable[tuple[MediaType, list[tuple[str, ...]]]]) -> int:
        """Insert the media of SynapseDb.media_accessed_between not yet known; returns how many were new.

        Into an empty `media` (a first run), all go in one transaction that drops the indexes
        and builds them again at the end, about twice as fast as inserting into them; a crash
        rolls it all back. Synapse's own unique indexes rule out duplicates. Otherwise each
        batch is committed as it comes: a crash keeps what was done, and the next run adds the rest.
        """
        added = 0
        if self._conn.execute("SELECT 1 FROM media LIMIT 1").fetchone() is not None:
            for media_type, rows in batches:
                with self._conn:
                    added += self._insert_synced(media_type, rows)
            return added
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")  # else sqlite3 would commit each DDL statement at once
            self._conn.execute("DROP INDEX media_id_idx")
            self._conn.execute("DROP INDEX deleted_idx")
            for media_type, rows in batches:
                added += self._insert_synced(media_type, rows)
            for statement in MEDIA_INDEXES:
                self._conn.execute(statement)
        return added

    def _insert_synced(self, media_type: MediaType, rows: list[tuple[str, ...]]) -> int:
        """Insert a batch's media (counting those that were new) and its media info, in the caller's transaction."""
        before = self._conn.total_changes
        self._conn.execute(INSERT_SYNCED[media_type], (_as_json(media_type, rows),))
        added = self._conn.total_changes - before
        info = _info_json(media_type, rows)
        if info != "[]":
            self._conn.execute(INSERT_MEDIA_INFO, (info,))
        return added

    @_sqlite_errors
    def media_info(self, origin: str, media_id: str) -> MediaInfo | None:
        """The media type and sha256 update-db recorded for a media's original, if it recorded any."""
        row = self._conn.execute("SELECT media_type, sha256 FROM objstore_media_info WHERE origin = ? AND media_id = ?",
                                 (origin, media_id)).fetchone()
        return MediaInfo(row[0], row[1]) if row else None

    @_sqlite_errors
    def synced_before(self, source: str) -> int:
        """The cutoff (ms) of the last complete update-db from `source`; 0 if none (a cache.db
        of s3_media_upload, or a new one)."""
        sql = "SELECT before_ts FROM objstore_synced WHERE source = ?"
        row = self._conn.execute(sql, (source,)).fetchone()
        return int(row[0]) if row else 0

    @_sqlite_errors
    def set_synced_before(self, source: str, before_ts: int) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO objstore_synced (source, before_ts) VALUES (?, ?)",
                               (source, before_ts))

    @_sqlite_errors
    def rechecked_since(self, source: str) -> int:
        """Since when (ms) check-deleted has looked for media of `source` back on disk; 0 if never."""
        row = self._conn.execute("SELECT since_ts FROM objstore_rechecked WHERE source = ?", (source,)).fetchone()
        return int(row[0]) if row else 0

    @_sqlite_errors
    def set_rechecked_since(self, source: str, since_ts: int) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO objstore_rechecked (source, since_ts) VALUES (?, ?)",
                               (source, since_ts))

    @_sqlite_errors
    def offloaded_among(self, media_type: MediaType, rows: list[tuple[str, ...]]) -> list[Media]:
        """The media of a batch of SynapseDb.media_accessed_between (checked by `check_synced`)
        that cache.db marks offloaded."""
        found = self._conn.execute(OFFLOADED_AMONG[media_type], (_as_json(media_type, rows),)).fetchall()
        return [Media(*row) for row in found]

    @_sqlite_errors
    def mark_returned(self, media: list[Media]) -> None:
        """These offloaded media have files on local disk again: not deleted, so that `write`
        lists them and `upload` handles them; and remembered as offloaded before."""
        now = int(time.time() * 1000)
        with self._conn:
            self._conn.executemany(
                "UPDATE media SET known_deleted = ? WHERE origin = ? AND media_id = ?",
                ((False, m.origin, m.media_id) for m in media),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO objstore_returned (origin, filesystem_id, found_ts) VALUES (?, ?, ?)",
                ((m.origin, m.filesystem_id, now) for m in media),
            )

    @_sqlite_errors
    def file_record(self, path: str) -> FileRecord | None:
        """The verified copy of the file at this media path, if one was recorded."""
        row = self._conn.execute(f"SELECT {FILE_COLUMNS} FROM objstore_files WHERE path = ?", (path,)).fetchone()
        return _file_record(row) if row else None

    @_sqlite_errors
    def was_returned(self, origin: str, filesystem_id: str) -> bool:
        """Whether the media with these paths was found back on disk after it was offloaded."""
        sql = "SELECT 1 FROM objstore_returned WHERE origin = ? AND filesystem_id = ?"
        return self._conn.execute(sql, (origin, filesystem_id)).fetchone() is not None

    @_sqlite_errors
    def count_new_synced(self, batches: Iterable[tuple[MediaType, list[tuple[str, ...]]]]) -> int:
        """How many media of these batches `add_synced_media` would insert."""
        sql = "SELECT 1 FROM media WHERE origin = ? AND media_id = ?"
        new = 0
        for media_type, rows in batches:
            keys = [("", row[0]) for row in rows] if media_type == "local" else [(row[0], row[1]) for row in rows]
            new += sum(self._conn.execute(sql, key).fetchone() is None for key in keys)
        return new

    @_sqlite_errors
    def find(self, origin: str, media_id: str) -> Media | None:
        row = self._conn.execute(
            "SELECT origin, media_id, filesystem_id, type FROM media WHERE origin = ? AND media_id = ?",
            (origin, media_id),
        ).fetchone()
        return Media(*row) if row else None

    @_sqlite_errors
    def set_deleted(self, media: Iterable[Media], deleted: bool = True) -> None:
        with self._conn:
            self._conn.executemany(
                "UPDATE media SET known_deleted = ? WHERE origin = ? AND media_id = ?",
                ((deleted, m.origin, m.media_id) for m in media),
            )

    @_sqlite_errors
    def commit(self, records: Iterable[FileRecord], deleted: Iterable[Media]) -> None:
        """Record verified files and mark media deleted in one transaction; returns once durable."""
        now = int(time.time() * 1000)
        with self._conn:
            self._conn.executemany(
                "UPDATE media SET known_deleted = ? WHERE origin = ? AND media_id = ?",
                ((True, m.origin, m.media_id) for m in deleted),
            )
            self._conn.executemany(
                """
                INSERT OR REPLACE INTO objstore_files
                    (path, origin, media_id, size, md5, store, verified_ts, sha256, multipart_etags)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                ((r.path, r.origin, r.media_id, r.size, r.md5, r.store, now, r.sha256,
                  " ".join(sorted(r.multipart_etags)) or None) for r in records),
            )

    @_sqlite_errors
    def forget(self, paths: Iterable[str], local_media_ids: Iterable[str],
               remote_files: Iterable[tuple[str, str]]) -> None:
        """Drop what cache.db knows of objects deleted from the store and of their media (local
        by media id; remote by (origin, filesystem_id), which cache.db does not index: one scan
        of the table per call, so pass many at once)."""
        remote_keys = json.dumps([f"{origin}/{filesystem_id}" for origin, filesystem_id in remote_files])
        with self._conn:
            self._conn.executemany("DELETE FROM objstore_files WHERE path = ?", ((path,) for path in paths))
            self._conn.executemany(
                "DELETE FROM media WHERE origin = '' AND media_id = ?", ((media_id,) for media_id in local_media_ids)
            )
            self._conn.execute(
                """
                DELETE FROM media
                WHERE type = 'remote' AND origin || '/' || filesystem_id IN (SELECT value FROM json_each(?))
                """,
                (remote_keys,),
            )

    @_sqlite_errors
    def files_of_many(self, media: list[Media]) -> dict[tuple[str, str], list[FileRecord]]:
        """`files_of` each of `media` by (origin, media_id), in a query per INFO_CHUNK."""
        files: dict[tuple[str, str], list[FileRecord]] = {(m.origin, m.media_id): [] for m in media}
        for row in self._rows_of(f"SELECT {FILE_COLUMNS} FROM objstore_files",
                                 list(files), then="ORDER BY path"):
            files[(row[1], row[2])].append(_file_record(row))
        return files

    @_sqlite_errors
    def files_of(self, media: Media) -> list[FileRecord]:
        rows = self._conn.execute(
            f"""
            SELECT {FILE_COLUMNS} FROM objstore_files
            WHERE origin = ? AND media_id = ? ORDER BY path
            """,
            (media.origin, media.media_id),
        ).fetchall()
        return [_file_record(row) for row in rows]


def _as_json(media_type: MediaType, rows: list[tuple[str, ...]]) -> str:
    """A batch as INSERT_SYNCED reads it: local media ids as a flat list (json_extract on each
    would cost as much as the insert), remote rows as lists."""
    return json.dumps([row[0] for row in rows] if media_type == "local" else [row[:3] for row in rows])


def _info_json(media_type: MediaType, rows: list[tuple[str, ...]]) -> str:
    """[origin, media_id, media_type, sha256] of the rows of a batch that carry any, as
    INSERT_MEDIA_INFO reads them (rows without them, as s3_media_upload-era callers give, have none)."""
    if media_type == "local":
        keyed = (("", row[0], row[1:3]) for row in rows)
    else:
        keyed = ((row[0], row[1], row[3:5]) for row in rows)
    return json.dumps([[origin, media_id, *info] for origin, media_id, info in keyed
                       if any(value is not None for value in info)])


# A file at the top of a media store naming it: the same path on two hosts is two media stores.
MEDIA_STORE_ID_FILE = ".objstore-media-store-id"


def read_media_store_id(media_store: str) -> str | None:
    """The id the media store's MEDIA_STORE_ID_FILE holds; None if it has none."""
    try:
        fd = os.open(os.path.join(media_store, MEDIA_STORE_ID_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read(200).decode("ascii", "replace").strip() or None


def create_media_store_id(media_store: str) -> str:
    """Give the media store an id (or take the one a concurrent run just gave it). The file
    appears whole or not at all: written aside, then linked into place (a run killed half-way
    leaves at most the file aside, which the next run replaces)."""
    store_id = uuid.uuid4().hex
    final = os.path.join(media_store, MEDIA_STORE_ID_FILE)
    aside = f"{final}.{os.getpid()}.tmp"
    with open(aside, "wb") as file:
        file.write(store_id.encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(aside, final)
    except FileExistsError:
        existing = read_media_store_id(media_store)
        if existing is None:
            raise
        return existing
    finally:
        os.unlink(aside)
    return store_id


def bind_media_store(cache: CacheDb, media_store: str, record: bool, moved: bool = False) -> None:
    """Make sure `cache` records the offload of `media_store`: compared by real path, and by
    the id in its MEDIA_STORE_ID_FILE (media workers keep their media at the same path on every
    host, and a disk that is not mounted leaves an empty directory at its path).

    `upload` and `check-deleted` take a media of cache.db without files in the media store for
    offloaded, and `restore` brings media back into it, so a cache.db serves one media store:
    media workers on several hosts, each with a disk of its own, keep a cache.db each, and a run
    given another host's cache.db is refused rather than take this host's media for done. A
    cache.db that records no media store yet (a new one, or one of an older version or of
    s3_media_upload) records this one, giving it an id if it has none, unless `record` is false
    (a dry run); `moved` replaces the recorded one.
    """
    path = os.path.realpath(media_store)
    recorded = cache.media_store()
    recorded_id = cache.media_store_id()
    on_disk = read_media_store_id(path)
    if recorded == path and recorded_id is not None and on_disk != recorded_id and not moved:
        found = f"one with the id {on_disk}" if on_disk is not None else f"one without its {MEDIA_STORE_ID_FILE}"
        raise OtherMediaStoreError(
            f"{cache.path} records the offload of the media store at {path} with the id {recorded_id} (in its "
            f"{MEDIA_STORE_ID_FILE}), but the media store there now is another: {found}, such as another host's "
            "disk at the same path. A cache.db takes media without files in its media store for offloaded, so "
            "each media store (each host of media workers with a disk of its own) needs a cache.db of its own: "
            "give this one another --cache-db. If this is the same media store (copied to a new disk, or its id "
            "file was deleted), run once with --media-store-moved."
        )
    if recorded == path and (recorded_id is not None or not record or not os.path.isdir(path)):
        return
    if recorded is not None and recorded != path and not moved:
        raise OtherMediaStoreError(
            f"{cache.path} records the offload of the media store {recorded}, not of this run's {path}. A cache.db "
            "takes media without files in its media store for offloaded, so each media store (each host of media "
            "workers with a disk of its own) needs a cache.db of its own: give this one another --cache-db. If the "
            f"media store moved from {recorded} to {path}, run once with --media-store-moved."
        )
    if record:
        store_id = on_disk if on_disk is not None or not os.path.isdir(path) else create_media_store_id(path)
        cache.set_media_store(path, store_id)
