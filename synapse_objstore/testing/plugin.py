"""The pytest plugin of synapse-objstore (entry point `pytest11`): a running Twisted reactor.

Synapse runs the provider on Twisted's reactor thread. These fixtures run the global reactor
in a thread of its own for the whole session and call functions on it, each under a
deadline, so a provider that never answers fails the test instead of hanging it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

# A call into the reactor that has not finished after this long is taken as a hang.
REACTOR_CALL_DEADLINE = 120.0


@pytest.fixture(scope="session")
def objstore_reactor() -> Iterator[Any]:
    """Twisted's global reactor, running in a thread of its own for the whole session."""
    pytest.importorskip("twisted.internet", reason="Twisted (which matrix-synapse brings) is not installed")
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor  # its type names only what every reactor has in common

    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True,
                              name="twisted-reactor")
    thread.start()
    yield reactor
    reactor.callFromThread(reactor.stop)
    thread.join(10)


@pytest.fixture
def objstore_in_reactor(objstore_reactor: Any) -> Callable[..., Any]:
    """`call(function, *args, timeout=REACTOR_CALL_DEADLINE, **kwargs)`: run `function` on the
    reactor thread and return its result here. A Deferred or coroutine it returns is waited
    for; one that takes longer than `timeout` seconds is cancelled and raises TimeoutError."""
    from twisted.internet import defer
    from twisted.internet.threads import blockingCallFromThread

    def call(function: Callable[..., Any], *args: Any, timeout: float = REACTOR_CALL_DEADLINE,
             **kwargs: Any) -> Any:
        def run() -> Any:
            result = function(*args, **kwargs)
            if not isinstance(result, defer.Deferred):
                if not inspect.isawaitable(result):
                    return result
                result = defer.ensureDeferred(awaited(result))
            return result.addTimeout(timeout, objstore_reactor)

        async def awaited(awaitable: Awaitable[Any]) -> Any:
            return await awaitable

        try:
            return blockingCallFromThread(objstore_reactor, run)
        except defer.TimeoutError:
            name = getattr(function, "__qualname__", repr(function))
            raise TimeoutError(f"{name} did not finish on the reactor within {timeout} s") from None

    return call
