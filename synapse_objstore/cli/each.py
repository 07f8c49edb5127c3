"""Run a job for each item of a stream, a bounded number at a time: how verify, migrate and
rekey walk their media, objects, and the files a second listing did not confirm."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def each(items: AsyncIterator[T], job: Callable[[T], Awaitable[None]], jobs: int,
               catch: tuple[type[Exception], ...], failed: Callable[[T, Exception], None],
               done: Callable[[], object] = lambda: None) -> None:
    """`job` for each of `items`, at most `jobs` at a time; returns once every one has ended.
    An error in `catch` fails that item only (`failed`); `done` is called after each item.
    Cancelled, it cancels the jobs under way (a `gather` of them is, if it was waiting there);
    when `items` raises, it waits for them to end before raising that error."""
    slots = asyncio.Semaphore(jobs)
    running: set[asyncio.Task[None]] = set()

    async def one(item: T) -> None:
        try:
            await job(item)
        except catch as error:
            failed(item, error)
        finally:
            slots.release()
            done()

    try:
        async for item in items:
            await slots.acquire()
            task = asyncio.create_task(one(item))
            running.add(task)
            task.add_done_callback(running.discard)
    except asyncio.CancelledError:  # the run is stopped (cli/store_watch.py): so is every job under way
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    except BaseException:  # `items` failed (a listing): the jobs under way end first, as they would have
        await asyncio.gather(*running, return_exceptions=True)
        raise
    await asyncio.gather(*running)
