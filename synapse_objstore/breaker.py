"""Fail fast while the store is down: a circuit breaker over the provider's store calls.

Without it, every download from a store that does not answer waits out the whole
`fetch_deadline`, and a homeserver under load piles up a deadline's worth of waiting requests.
With it, once FAILURES_TO_OPEN calls in a row found the store unreachable or silent (a
timeout, a refused or dropped connection, a deadline passed), the store is taken as down:
every call fails at once with StoreDownError, without asking the store, while one probe at a
time asks it, the first PROBE_INTERVAL seconds after it went down and then PROBE_INTERVAL
seconds after each failed probe. The first answer (a probe's, or one that a call already on
its way gets) takes it as up again, and calls go through.

Only the store's silence counts: a missing object, refused credentials or a 5xx are answers
(synapse_objstore.failures.classify tells them apart), and any answer starts the count again.

It knows nothing of Synapse: it is given the clock (Twisted's IReactorTime; the global
reactor by default) and a function that starts a probe. Everything here runs on the thread
of that clock, Synapse's reactor thread: it never blocks, the probe runs elsewhere and
reports back through its Deferred.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from synapse_objstore.errors import FailureKind, StoreDownError
from synapse_objstore.failures import classify, is_outage
from synapse_objstore.redaction import redact

logger = logging.getLogger(__name__)

# Calls in a row that must find the store silent or unreachable before it is taken as down.
FAILURES_TO_OPEN = 3
# Seconds between the store going down (or a failed probe ending) and the next probe.
PROBE_INTERVAL = 5.0


class DelayedCall(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What is used of Twisted's IReactorTime (a reactor, or twisted.internet.task.Clock)."""

    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[[], object]) -> DelayedCall: ...


class StoreBreaker:
    def __init__(
        self,
        where: str,
        probe: Callable[[], Deferred[Any]],
        *,
        failures_to_open: int = FAILURES_TO_OPEN,
        probe_interval: float = PROBE_INTERVAL,
        clock: Clock | None = None,
        on_change: Callable[[bool], object] | None = None,
    ) -> None:
        """`where` names the store in messages; `probe()` asks it something cheap, and its
        Deferred fails when it gets no answer; `on_change(up)` is told each change of state."""
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self._clock: Clock = clock
        self._where = where
        self._probe = probe
        self._failures_to_open = failures_to_open
        self._probe_interval = probe_interval
        self._on_change = on_change
        self.up = True
        self._failures = 0  # calls in a row that found the store silent
        self._last_failure: BaseException | None = None
        self._down_since = 0.0
        self.failed_fast = 0  # calls refused since the store went down
        self._next_probe: DelayedCall | None = None
        self.probing = False

    def check(self, action: str, media_path: str) -> None:
        """Raise StoreDownError if the store is down; else the call may go ahead."""
        if self.up:
            return
        self.failed_fast += 1
        down_for = self._clock.seconds() - self._down_since
        error = StoreDownError(
            f"could not {action} {media_path!r} on {self._where}: the store is down (no answer to "
            f"{self._failures_to_open} requests in a row, {down_for:.0f} s ago; "
            f"the last: {describe(self._last_failure)}); "
            f"failing at once until a probe, every {self._probe_interval:g} s, gets an answer",
            kind=FailureKind.OTHER if self._last_failure is None else classify(self._last_failure),
        )
        raise error from self._last_failure

    def record(self, error: BaseException | None) -> None:
        """The outcome of a call that went to the store: None if it got an answer, else the
        error it failed with."""
        if error is None or not is_outage(error):
            self._failures = 0
            if not self.up:
                self._set_up("a request got an answer")
            return
        self._failures += 1
        self._last_failure = error
        if self.up and self._failures >= self._failures_to_open:
            self._set_down()

    def stop(self) -> None:
        """Cancel a probe that is waiting to start (at shutdown, and in tests)."""
        if self._next_probe is not None and self._next_probe.active():
            self._next_probe.cancel()
        self._next_probe = None

    def _set_down(self) -> None:
        self.up = False
        self._down_since = self._clock.seconds()
        self.failed_fast = 0
        logger.error(
            "%s did not answer %d requests in a row (the last: %s): media requests fail at once "
            "until it answers again; asking it every %g s",
            self._where, self._failures, describe(self._last_failure), self._probe_interval,
        )
        self._schedule_probe()
        if self._on_change is not None:
            self._on_change(False)

    def _set_up(self, how: str) -> None:
        self.stop()
        self.up = True
        self._failures = 0
        logger.warning(
            "%s answers again (%s) after %.0f s down; %d media requests failed at once meanwhile",
            self._where, how, self._clock.seconds() - self._down_since, self.failed_fast,
        )
        if self._on_change is not None:
            self._on_change(True)

    def _schedule_probe(self) -> None:
        self._next_probe = self._clock.callLater(self._probe_interval, self._start_probe)

    def _start_probe(self) -> None:
        self._next_probe = None
        if self.up:
            return
        self.probing = True
        maybeDeferred(self._probe).addBoth(self._probe_ended)

    def _probe_ended(self, result: object) -> None:
        self.probing = False
        if self.up:  # a call's answer came first
            return
        error = result.value if isinstance(result, Failure) else None
        if error is not None and is_outage(error):
            self._last_failure = error
            self._schedule_probe()
        else:
            self._set_up("a probe got an answer")


def describe(error: BaseException | None) -> str:
    if error is None:
        return "none"
    return redact(f"{type(error).__name__}: {error}")
