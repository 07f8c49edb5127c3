"""The one asyncio loop, in its own thread, on which all object-store I/O runs.

It is fsspec's own I/O loop (`fsspec.asyn.get_loop()`): async filesystems such as s3fs are
bound to it, it starts on first use (after Synapse may have forked) and fsspec resets it in
a forked child. Synapse's reactor thread and the CLI only ever submit coroutines to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

import fsspec.asyn

T = TypeVar("T")


def io_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = fsspec.asyn.get_loop()
    return loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule `coro` on the I/O loop from any other thread."""
    return asyncio.run_coroutine_threadsafe(coro, io_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the I/O loop and block this (non-loop) thread until it is done."""
    future = submit(coro)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"object store call did not finish within {timeout} s") from None
