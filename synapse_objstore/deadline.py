"""A deadline around one store call on the I/O loop, all of its retries included.

The client's own timeouts bound each attempt (botocore's connect and read timeouts), and only
each attempt: three attempts at a store that accepts connections and never answers wait three
read timeouts, and a request body that the store stops taking waits for no timeout at all. The
deadline bounds the whole call. When it passes, the call is cancelled and the caller gets its
error at once: it does not wait for the cancelled call to clean up (an upload's abort of its
parts is a request of its own, which the same silent store would hold). Whatever the call
opens after its deadline (a stream) is handed to `release`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from synapse_objstore.errors import DeadlineError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Clean-ups started here, kept so that the loop does not drop them before they end.
_cleanups: set[asyncio.Future[Any]] = set()


async def within_deadline(
    coro: Coroutine[Any, Any, T],
    seconds: float,
    message: str,
    release: Callable[[T], Awaitable[object] | None] | None = None,
) -> T:
    """`coro`'s result, or DeadlineError(`message`) once `seconds` have passed. Run on the I/O
    loop. Cancelling this cancels `coro` too, without waiting for it either."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        _abandon(task, release)
        raise
    if task.done():
        return task.result()
    _abandon(task, release)
    raise DeadlineError(message) from TimeoutError(f"no result within {seconds:g} s")


def _abandon(task: asyncio.Future[T], release: Callable[[T], Awaitable[object] | None] | None) -> None:
    """Cancel `task` and let it end by itself; give `release` a result it still produces."""
    task.cancel()

    def ended(task: asyncio.Future[T]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # retrieved, so that asyncio does not log it as lost
        if error is None and release is not None:
            _keep(release(task.result()))
        elif error is not None:
            logger.debug("a store call past its deadline ended with %s", type(error).__name__)

    task.add_done_callback(ended)


def _keep(cleanup: Awaitable[object] | None) -> None:
    if cleanup is not None:
        future = asyncio.ensure_future(cleanup)
        _cleanups.add(future)
        future.add_done_callback(_cleanups.discard)
