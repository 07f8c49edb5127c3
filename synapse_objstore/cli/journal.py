"""Batched, serialised writes to cache.db from the coroutines of a run.

`record_files` returns only once its rows are committed: rows arriving together share one
transaction (group commit), so a thousand files verified in parallel cost a handful of
fsyncs, and a caller may delete a local file as soon as the call returns. Every cache.db
call runs in a worker thread, one at a time, so SQLite never blocks the I/O loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from synapse_objstore.cli.cache_db import CacheDb, FileRecord
from synapse_objstore.media import Media

T = TypeVar("T")

BATCH_SIZE = 500
MAX_DELAY = 0.02  # seconds a row may wait for others to share its commit (while its job waits)


class Journal:
    def __init__(self, cache: CacheDb, batch_size: int = BATCH_SIZE, max_delay: float = MAX_DELAY) -> None:
        self.cache = cache
        self._batch_size = batch_size
        self._max_delay = max_delay
        self._lock = asyncio.Lock()
        self._files: list[FileRecord] = []
        self._deleted: list[Media] = []
        self._committed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """Run a CacheDb method in a worker thread, after any call before it."""
        async with self._lock:
            return await asyncio.to_thread(function, *args)

    async def record_files(self, records: list[FileRecord]) -> None:
        """Commit verified files; returns once they are durable in cache.db."""
        self._files.extend(records)
        await self._pending()

    def mark_deleted(self, media: Media) -> None:
        """Queue `known_deleted` for a media; committed with the next batch (losing it to a
        crash is harmless: a rerun finds no local file and marks it again)."""
        self._deleted.append(media)
        self._pending()

    def _pending(self) -> asyncio.Future[None]:
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        committed = self._committed
        if len(self._files) + len(self._deleted) >= self._batch_size:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self._start_flush)
        return committed

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._committed is None:
            return
        files, deleted, committed = self._files, self._deleted, self._committed
        self._files, self._deleted, self._committed = [], [], None
        task = asyncio.get_running_loop().create_task(self._flush(files, deleted, committed))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, files: list[FileRecord], deleted: list[Media], committed: asyncio.Future[None]) -> None:
        try:
            await self.call(self.cache.commit, files, deleted)
        except BaseException as error:
            self.errors.append(f"could not write {self.cache.path}: {error}")
            if not committed.done():
                committed.set_exception(error)
                committed.exception()  # retrieved here too: nobody may be waiting on mark_deleted alone
            if not isinstance(error, Exception):
                raise
        else:
            if not committed.done():
                committed.set_result(None)

    async def close(self) -> None:
        """Commit whatever is queued and wait for every commit under way."""
        self._start_flush()
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
