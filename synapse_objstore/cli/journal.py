"""Batched, serialised writes to cache.db from the coroutines of a run.

`record_files` returns only once its rows are committed: rows arriving together share one
transaction (group commit), so a thousand files verified in parallel cost a handful of
fsyncs, and a caller may delete a local file as soon as the call returns. Better still, it
hands the deletion over (`then`): it runs in the commit's own worker-thread turn, right after
the commit, with those of every other caller of that commit, rather than in a turn of its
own per caller once each has woken up. Every cache.db call runs in a worker thread, one at a
time, so SQLite never blocks the I/O loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar, cast

from synapse_objstore.cli.cache_db import CacheDb, FileRecord
from synapse_objstore.media import Media

T = TypeVar("T")

# A `then` of `record_files`, and the future its caller waits on for its result.
_After = tuple[Callable[[], object], asyncio.Future[object]]

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
        self._after: list[_After] = []
        self._committed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """Run a CacheDb method in a worker thread, after any call before it."""
        async with self._lock:
            return await asyncio.to_thread(function, *args)

    async def record_files(self, records: list[FileRecord], then: Callable[[], T] | None = None) -> T | None:
        """Commit verified files; returns once they are durable in cache.db, with what `then`
        returned: a blocking call run in the commit's worker thread once the commit has
        succeeded (never when it failed: the commit's error is raised instead). A caller
        cancelled before its `then` ran has it skipped."""
        self._files.extend(records)
        committed = self._pending()
        if then is None:
            await committed
            return None
        after: _After = (then, asyncio.get_running_loop().create_future())
        self._after.append(after)
        return cast(T, await after[1])  # what `then` returned

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
        files, deleted, after, committed = self._files, self._deleted, self._after, self._committed
        self._files, self._deleted, self._after, self._committed = [], [], [], None
        task = asyncio.get_running_loop().create_task(self._flush(files, deleted, after, committed))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, files: list[FileRecord], deleted: list[Media], after: list[_After],
                     committed: asyncio.Future[None]) -> None:
        try:
            results = await self.call(self._commit_then, files, deleted, after)
        except BaseException as error:
            self.errors.append(f"could not write {self.cache.path}: {error}")
            waiting: list[asyncio.Future[Any]] = [committed, *(done for _, done in after)]
            for future in waiting:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved here too: nobody may be waiting on mark_deleted alone
            if not isinstance(error, Exception):
                raise
        else:
            if not committed.done():
                committed.set_result(None)
            for (_, done), (result, failure) in zip(after, results, strict=True):
                if done.done():
                    continue
                if failure is not None:
                    done.set_exception(failure)
                else:
                    done.set_result(result)

    def _commit_then(self, files: list[FileRecord], deleted: list[Media],
                     after: list[_After]) -> list[tuple[object, Exception | None]]:
        """Blocking: the commit, then (once it succeeded) each `then` whose caller still
        waits, with its result or error."""
        self.cache.commit(files, deleted)
        results: list[tuple[object, Exception | None]] = []
        for then, done in after:
            if done.cancelled():  # its caller is gone (the run stops): the next run sees to it
                results.append((None, None))
                continue
            try:
                results.append((then(), None))
            except Exception as error:  # that caller's alone
                results.append((None, error))
        return results

    async def close(self) -> None:
        """Commit whatever is queued and wait for every commit under way."""
        self._start_flush()
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
