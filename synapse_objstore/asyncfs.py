"""One coroutine interface over both kinds of fsspec filesystem.

An async filesystem (s3fs, gcsfs, adlfs, ...) built on the I/O loop is awaited directly. A
blocking one (local disk, SFTP, ...) runs in a bounded thread pool, so a slow disk or link
never stalls the loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsspec import AbstractFileSystem


class AsyncFs:
    """Awaitable calls to an fsspec filesystem's methods, by their public name."""

    def __init__(self, fs: AbstractFileSystem, max_threads: int) -> None:
        self.fs = fs
        self.is_async = bool(getattr(fs, "async_impl", False) and getattr(fs, "asynchronous", False))
        self._executor = None if self.is_async else ThreadPoolExecutor(max_threads, thread_name_prefix="objstore")
        # When the store last answered one step of a longer call (a part of a multipart upload),
        # as time.monotonic(): ObjectStore.last_heard counts it as an answer (cli/store_watch.py).
        self.step_answered = 0.0

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`fs.<method>(*args, **kwargs)`, awaited (async fs) or run in a thread (blocking fs)."""
        if self.is_async:
            return await getattr(self.fs, "_" + method)(*args, **kwargs)
        return await self.in_thread(getattr(self.fs, method), *args, **kwargs)

    async def in_thread(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run any blocking callable in this filesystem's thread pool (or the loop's default one)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    def step_answers(self) -> None:
        """Note that the store answered one step of a longer call."""
        self.step_answered = time.monotonic()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
