"""Run object-store coroutines on the I/O loop and get their results on Twisted's reactor.

Synapse's reactor thread never blocks on the store: it submits a coroutine to the I/O loop
and receives a Deferred, fired from the reactor thread when the coroutine is done.
Cancelling the Deferred cancels the coroutine.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from synapse_objstore.io_loop import submit

T = TypeVar("T")


def run_on_io_loop(
    reactor: IReactorFromThreads,
    coro: Coroutine[Any, Any, T],
    release: Callable[[T], object] | None = None,
) -> Deferred[T]:
    """A Deferred for `coro`, run on the I/O loop.

    `release` is called (on the reactor thread) with a result that arrives after the
    Deferred was cancelled, so that whatever it holds, such as an open stream, is let go.
    """
    future = submit(coro)

    def cancel(_: Deferred[T]) -> None:
        future.cancel()

    deferred: Deferred[T] = Deferred(canceller=cancel)

    def fire(done: concurrent.futures.Future[T]) -> None:
        if deferred.called:
            if release is not None and not done.cancelled() and done.exception() is None:
                release(done.result())
            return
        if done.cancelled():
            deferred.cancel()
        elif (error := done.exception()) is not None:
            deferred.errback(error)
        else:
            deferred.callback(done.result())

    future.add_done_callback(lambda done: reactor.callFromThread(fire, done))
    return deferred
