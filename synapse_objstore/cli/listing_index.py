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
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterable
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
) WITHOUT ROWID
"""
_COLUMNS = "path, size, etag, storage_class, last_modified"


class ListingIndex:
    """Every object of a store under its prefix, as one listing found it."""

    def __init__(self) -> None:
        # Used one call at a time, from worker threads or in line on the I/O loop (a lookup is
        # one indexed query, which costs less than a thread hop).
        self._conn = sqlite3.connect("", check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute(_SCHEMA)
        self.count = 0

    @classmethod
    async def of(cls, store: ObjectStore) -> ListingIndex:
        """List `store` (every page) into a new index. A listing that fails (after the client's
        retries) stops the run (StoreUnusableError, exit 2): without all of it, nothing can be
        looked up."""
        index = cls()
        try:
            page: list[ObjectInfo] = []
            async for info in store.list():
                page.append(info)
                if len(page) >= 1000:
                    await asyncio.to_thread(index._add, page)
                    page = []
            await asyncio.to_thread(index._add, page)
        except ObjectStoreError as error:
            index.close()
            raise StoreUnusableError(f"the listing of the store failed after {index.count + len(page)} objects: "
                                     f"{error}") from error
        except BaseException:
            index.close()
            raise
        return index

    def _add(self, infos: Iterable[ObjectInfo]) -> None:
        rows = [(i.media_path, i.size, i.etag, i.storage_class,
                 i.last_modified.isoformat() if i.last_modified is not None else None) for i in infos]
        try:
            self._conn.executemany(f"INSERT OR REPLACE INTO listed ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.OperationalError as error:  # "database or disk is full", "disk I/O error"
            raise CommandError(f"the temporary listing of the store ({self.count} objects so far) could not be "
                               f"written in {_where()}: {error}. Give it room there, or set SQLITE_TMPDIR "
                               f"to a directory with room (about 150 bytes per object)") from error
        self.count += len(rows)

    def get(self, media_path: str) -> ObjectInfo | None:
        """The listed object at `media_path` (blocking, but one indexed query)."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM listed WHERE path = ?", (media_path,)).fetchone()
        return _info(row) if row is not None else None

    def under(self, media_dir: str) -> list[ObjectInfo]:
        """The listed objects under `media_dir` (ending in '/'), in key order."""
        # '/' + 1 is '0': every key that starts with media_dir sorts in [media_dir, media_dir[:-1] + '0')
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM listed WHERE path >= ? AND path < ? ORDER BY path",
                                  (media_dir, media_dir[:-1] + "0")).fetchall()
        return [_info(row) for row in rows]

    def close(self) -> None:
        self._conn.close()


def _where() -> str:
    """The directory SQLite puts its temporary files in (unix VFS: the first that is set)."""
    return os.environ.get("SQLITE_TMPDIR") or os.environ.get("TMPDIR") or "/var/tmp"


def _info(row: tuple[str, int, str | None, str | None, str | None]) -> ObjectInfo:
    path, size, etag, storage_class, modified = row
    return ObjectInfo(path, size, etag, storage_class, datetime.fromisoformat(modified) if modified else None)
