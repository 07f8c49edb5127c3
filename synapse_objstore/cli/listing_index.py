"""One flat listing of a store, kept on disk, to look objects up in instead of asking the store.

`restore`, `verify` and `migrate` need the size and ETag of many objects. Asked one by one,
that is a HEAD per file (and, for restore, a LIST of each media's thumbnail directory): two
requests, their signing and parsing, per file. A ListObjectsV2 page gives the same for up to
1,000 objects. The listing goes into a temporary SQLite file rather than into memory, so a
store of tens of millions of objects costs disk, not RAM, and a lookup is one indexed query.

The file is SQLite's own temporary database (an empty file name): SQLite unlinks it as soon as
it is opened, so a run that is killed (SIGKILL, the OOM killer) leaves nothing behind, where a
named file would be left, gigabytes at a time, in the temporary directory at each killed run.
It lives where SQLite puts temporary files: $SQLITE_TMPDIR, else $TMPDIR, else /var/tmp (on
disk, where /tmp is often a tmpfs, in RAM).

A listing is a snapshot: an object absent from it may have been written since. Callers treat
"not listed" as a reason to ask the store (a HEAD) before they conclude anything from it.

And an object present in it may be deleted or replaced since, before the run ends. So a run
does not count a file as verified (or migrated) from the listing alone: it hands the index each
file it found good (`counted`: path, size, and ETag where the check saw one in a listing), and
at its end lists the store a second time (`relist`). A file the second listing shows with the
same size and ETag is still there: it is counted (`confirmed`). One it lacks, or shows changed,
the run checks again the slow way (`unconfirmed`: a HEAD, a copy), since it may be gone. That
costs one more listing per run, a LIST per 1,000 objects, rather than a HEAD per file.
`restore` needs none: it counts a file only once the GET of its object has brought it back,
checked against the listed size and ETag; an object gone since the listing fails that GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from synapse_objstore.errors import CommandError, ObjectStoreError, StoreUnusableError
from synapse_objstore.store import ObjectInfo, ObjectStore

_SCHEMA = """
CREATE TABLE listed (
    path TEXT NOT NULL PRIMARY KEY,
    size INTEGER NOT NULL,
    etag TEXT,
    storage_class TEXT,
    last_modified TEXT
) WITHOUT ROWID;
CREATE TABLE counted (
    path TEXT NOT NULL PRIMARY KEY,
    size INTEGER NOT NULL,
    etag TEXT,
    note TEXT,
    confirmed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""
_COLUMNS = "path, size, etag, storage_class, last_modified"
PAGE = 1000


@dataclass(frozen=True)
class Counted:
    """A file a run found good, as it found it: to be confirmed by the second listing.
    `etag`: None compares the size alone (a HEAD's or an upload's ETag is not compared with a
    listing's, which a backend may write otherwise). `note`: the caller's, what it needs to
    check the file again."""

    path: str
    size: int
    etag: str | None = None
    note: str = ""


class ListingIndex:
    """Every object of a store under its prefix, as one listing found it."""

    def __init__(self) -> None:
        # Used from worker threads (writes of what jobs counted, the second listing) and in
        # line on the I/O loop (a lookup is one indexed query, which costs less than a thread
        # hop): one call at a time, under the lock.
        self._conn = sqlite3.connect("", check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.executescript(_SCHEMA)
        self.count = 0
        self._counted: list[Counted] = []  # not yet written

    @classmethod
    async def of(cls, store: ObjectStore, check: Callable[[ObjectInfo], None] = lambda info: None) -> ListingIndex:
        """List `store` (every page) into a new index. A listing that fails (after the client's
        retries) stops the run (StoreUnusableError, exit 2): without all of it, nothing can be
        looked up. `check` sees each object as it is listed; what it raises stops the listing."""
        index = cls()
        try:
            await _list(store, index._add, check)
        except BaseException:
            index.close()
            raise
        return index

    def _add(self, infos: Iterable[ObjectInfo]) -> None:
        rows = [(i.media_path, i.size, i.etag, i.storage_class,
                 i.last_modified.isoformat() if i.last_modified is not None else None) for i in infos]
        with self._written(f"the temporary listing of the store ({self.count} objects so far)"):
            self._conn.executemany(f"INSERT OR REPLACE INTO listed ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows)
        self.count += len(rows)

    @contextlib.contextmanager
    def _written(self, what: str) -> Iterator[None]:
        """The lock, held for a write; a write that finds no room is a CommandError saying where to make room."""
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as error:  # "database or disk is full", "disk I/O error"
                raise CommandError(f"{what} could not be written in {_where()}: {error}. Give it room there, "
                                   f"or set SQLITE_TMPDIR to a directory with room (about 150 bytes per object, "
                                   f"twice that for verify and migrate)") from error

    def get(self, media_path: str) -> ObjectInfo | None:
        """The listed object at `media_path` (blocking, but one indexed query)."""
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM listed WHERE path = ?", (media_path,)).fetchone()
        return _info(row) if row is not None else None

    async def listed(self) -> AsyncIterator[ObjectInfo]:
        """Every listed object, in key order, a page at a time."""
        after = None
        while page := await asyncio.to_thread(self._listed_page, after):
            after = page[-1].media_path
            for info in page:
                yield info

    def _listed_page(self, after: str | None) -> list[ObjectInfo]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM listed WHERE ?1 IS NULL OR path > ?1 ORDER BY path "
                                      "LIMIT ?2", (after, PAGE)).fetchall()
        return [_info(row) for row in rows]

    def under(self, media_dir: str) -> list[ObjectInfo]:
        """The listed objects under `media_dir` (ending in '/'), in key order."""
        # '/' + 1 is '0': every key that starts with media_dir sorts in [media_dir, media_dir[:-1] + '0')
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM listed WHERE path >= ? AND path < ? ORDER BY path",
                                      (media_dir, media_dir[:-1] + "0")).fetchall()
        return [_info(row) for row in rows]

    async def counted(self, entry: Counted) -> None:
        """Remember a file the run found good, for `relist` to confirm (written a page at a time)."""
        self._counted.append(entry)
        if len(self._counted) >= PAGE:
            await self._write_counted()

    async def _write_counted(self) -> None:
        rows, self._counted = [(c.path, c.size, c.etag, c.note) for c in self._counted], []
        await asyncio.to_thread(self._insert_counted, rows)

    def _insert_counted(self, rows: list[tuple[str, int, str | None, str]]) -> None:
        with self._written("the files counted so far, kept beside the temporary listing of the store,"):
            self._conn.executemany("INSERT OR REPLACE INTO counted (path, size, etag, note) VALUES (?, ?, ?, ?)", rows)

    async def relist(self, store: ObjectStore) -> None:
        """List `store` a second time, at the end of the run, and confirm each counted file it
        shows with the size and ETag it was counted with. Fails as `of` does (exit 2)."""
        await self._write_counted()
        await _list(store, self._confirm)

    def _confirm(self, infos: Iterable[ObjectInfo]) -> None:
        rows = [(i.media_path, i.size, i.etag) for i in infos]
        with self._written("the files confirmed by the second listing"):
            self._conn.executemany("UPDATE counted SET confirmed = 1 WHERE path = ?1 AND size = ?2 "
                                   "AND (etag IS NULL OR etag = ?3)", rows)

    def confirmed(self) -> tuple[int, int]:
        """How many counted files `relist` confirmed, and their bytes."""
        with self._lock:
            files, size = self._conn.execute(
                "SELECT count(*), COALESCE(sum(size), 0) FROM counted WHERE confirmed").fetchone()
        return int(files), int(size)

    async def unconfirmed(self) -> AsyncIterator[Counted]:
        """The counted files `relist` did not find as they were counted, in path order, a page at a time."""
        after = ""
        while page := await asyncio.to_thread(self._unconfirmed_page, after):
            after = page[-1].path
            for entry in page:
                yield entry

    def _unconfirmed_page(self, after: str) -> list[Counted]:
        with self._lock:
            rows = self._conn.execute("SELECT path, size, etag, note FROM counted WHERE path > ? AND NOT confirmed "
                                      "ORDER BY path LIMIT ?", (after, PAGE)).fetchall()
        return [Counted(*row) for row in rows]

    def close(self) -> None:
        self._conn.close()


async def _list(store: ObjectStore, write: Callable[[list[ObjectInfo]], None],
                check: Callable[[ObjectInfo], None] = lambda info: None) -> None:
    """List `store`, handing `write` (in a worker thread) a page at a time, `check` each object.
    A listing that fails (after the client's retries) is a StoreUnusableError."""
    seen = 0
    page: list[ObjectInfo] = []
    try:
        async for info in store.list():
            check(info)
            page.append(info)
            if len(page) >= PAGE:
                await asyncio.to_thread(write, page)
                seen, page = seen + len(page), []
        await asyncio.to_thread(write, page)
    except ObjectStoreError as error:
        raise StoreUnusableError(f"the listing of the store failed after {seen + len(page)} objects: "
                                 f"{error}") from error


def _where() -> str:
    """The directory SQLite puts its temporary files in (unix VFS: the first that is set)."""
    return os.environ.get("SQLITE_TMPDIR") or os.environ.get("TMPDIR") or "/var/tmp"


def _info(row: tuple[str, int, str | None, str | None, str | None]) -> ObjectInfo:
    path, size, etag, storage_class, modified = row
    return ObjectInfo(path, size, etag, storage_class, datetime.fromisoformat(modified) if modified else None)
