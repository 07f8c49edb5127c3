"""The breaker's states, driven by a fake clock (twisted.internet.task.Clock) and hand-made
failures of each kind: no store, no reactor, no waiting."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from synapse_objstore.breaker import FAILURES_TO_OPEN, PROBE_INTERVAL, StoreBreaker
from synapse_objstore.errors import DeadlineError, FailureKind, ObjectStoreError, StoreDownError
from synapse_objstore.failures import classify

WHERE = "s3://media/ at http://127.0.0.1:9000"


def silent() -> Exception:
    """What a call to a store that accepts connections and never answers ends with."""
    error = ObjectStoreError(f"could not fetch 'a' on {WHERE}: ReadTimeoutError: Read timeout")
    error.__cause__ = ReadTimeoutError(endpoint_url="http://127.0.0.1:9000/media/a")
    return error


def refused() -> Exception:
    error: Exception = EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/media/a")
    return error


def past_deadline() -> Exception:
    error = DeadlineError(f"could not fetch 'a' on {WHERE}: the store did not answer within fetch_deadline (5 s)")
    error.__cause__ = TimeoutError("no result within 5 s")
    return error


def http_error(status: int, code: str) -> Exception:
    reply = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    error = PermissionError(code) if status == 403 else FileNotFoundError(code)
    error.__cause__ = ClientError(reply, "GetObject")
    return error


class Probes:
    """The probe function: each call starts a probe whose Deferred the test fires."""

    def __init__(self) -> None:
        self.started: list[Deferred[None]] = []

    def __call__(self) -> Deferred[None]:
        self.started.append(Deferred())
        return self.started[-1]

    @property
    def running(self) -> int:
        return sum(not probe.called for probe in self.started)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def probes() -> Probes:
    return Probes()


@pytest.fixture
def changes() -> list[bool]:
    return []


@pytest.fixture
def breaker(clock: Clock, probes: Probes, changes: list[bool]) -> StoreBreaker:
    return StoreBreaker(WHERE, probes, clock=clock, on_change=changes.append)


def open_breaker(breaker: StoreBreaker) -> None:
    for _ in range(FAILURES_TO_OPEN):
        breaker.record(silent())
    assert not breaker.up


@pytest.mark.parametrize("failure", [silent, refused, past_deadline, lambda: ConnectTimeoutError(endpoint_url="x")],
                         ids=["read-timeout", "connection-refused", "deadline", "connect-timeout"])
def test_each_kind_of_silence_counts(breaker: StoreBreaker, failure: Callable[[], Exception]) -> None:
    for _ in range(FAILURES_TO_OPEN):
        breaker.record(failure())
    assert not breaker.up


def test_it_opens_after_consecutive_failures_and_then_fails_calls_at_once(
    breaker: StoreBreaker, changes: list[bool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "synapse_objstore.breaker")
    for failure in (silent(), refused())[:FAILURES_TO_OPEN - 1]:
        breaker.record(failure)
        breaker.check("fetch", "local_content/ab/cd/ef")  # not yet
    assert breaker.up and changes == []

    breaker.record(past_deadline())
    assert not breaker.up and changes == [False]
    with pytest.raises(StoreDownError) as raised:
        breaker.check("fetch", "local_content/ab/cd/ef")
    message = str(raised.value)
    assert message.startswith(f"could not fetch 'local_content/ab/cd/ef' on {WHERE}: the store is down")
    assert "every 5 s" in message
    # it counts as the kind of failure that showed the store down
    assert classify(raised.value) == FailureKind.TIMEOUT
    assert f"{WHERE} did not answer 3 requests in a row" in caplog.text


@pytest.mark.parametrize(
    "answer",
    [None, http_error(404, "NoSuchKey"), http_error(403, "AccessDenied"), ObjectStoreError("500 InternalError")],
    ids=["success", "404", "access-denied", "5xx"],
)
def test_an_answer_of_any_kind_starts_the_count_again(breaker: StoreBreaker, answer: Exception | None) -> None:
    for _ in range(5):
        for _ in range(FAILURES_TO_OPEN - 1):
            breaker.record(silent())
            assert breaker.up
        breaker.record(answer)
    for _ in range(10):
        breaker.record(answer)
    assert breaker.up


def test_one_probe_at_a_time_until_one_gets_an_answer(
    breaker: StoreBreaker, clock: Clock, probes: Probes, changes: list[bool], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "synapse_objstore.breaker")
    open_breaker(breaker)
    clock.advance(PROBE_INTERVAL - 0.1)
    assert probes.started == []
    clock.advance(0.1)
    assert probes.running == 1

    # a probe that waits for the store (up to its deadline) is the only one, however long it waits
    clock.advance(10 * PROBE_INTERVAL)
    assert probes.running == 1 and len(probes.started) == 1
    probes.started[0].errback(silent())
    assert not breaker.up

    clock.advance(PROBE_INTERVAL)  # the next one, an interval after the last ended
    assert len(probes.started) == 2
    probes.started[1].errback(refused())
    clock.advance(PROBE_INTERVAL)
    with pytest.raises(StoreDownError):
        breaker.check("store", "local_content/ab/cd/ef")

    probes.started[2].callback(None)
    assert breaker.up and changes == [False, True]
    breaker.check("fetch", "local_content/ab/cd/ef")
    assert "answers again (a probe got an answer) after 65 s down; 1 media requests failed at once" in caplog.text
    clock.advance(10 * PROBE_INTERVAL)
    assert len(probes.started) == 3  # no probing while it is up


def test_a_probe_that_gets_an_error_answer_counts_as_the_store_answering(
    breaker: StoreBreaker, clock: Clock, probes: Probes
) -> None:
    open_breaker(breaker)
    clock.advance(PROBE_INTERVAL)
    probes.started[0].errback(http_error(403, "AccessDenied"))
    assert breaker.up


def test_a_call_already_on_its_way_that_gets_an_answer_closes_it_and_the_probe_is_dropped(
    breaker: StoreBreaker, clock: Clock, probes: Probes, changes: list[bool]
) -> None:
    open_breaker(breaker)
    breaker.record(None)
    assert breaker.up and changes == [False, True]
    clock.advance(10 * PROBE_INTERVAL)
    assert probes.started == []


def test_once_up_again_it_takes_a_full_count_to_open_again(breaker: StoreBreaker, clock: Clock,
                                                           probes: Probes) -> None:
    open_breaker(breaker)
    clock.advance(PROBE_INTERVAL)
    probes.started[0].callback(None)
    for _ in range(FAILURES_TO_OPEN - 1):
        breaker.record(silent())
    assert breaker.up
    breaker.record(silent())
    assert not breaker.up


def test_a_probe_function_that_raises_is_a_failed_probe(clock: Clock) -> None:
    def probe() -> Deferred[None]:
        raise ConnectionRefusedError("refused")

    breaker = StoreBreaker(WHERE, probe, clock=clock)
    open_breaker(breaker)
    clock.advance(PROBE_INTERVAL)
    assert not breaker.up
    breaker2 = StoreBreaker(WHERE, lambda: succeed(None), clock=clock)
    open_breaker(breaker2)
    clock.advance(PROBE_INTERVAL)
    assert breaker2.up
    breaker3 = StoreBreaker(WHERE, lambda: fail(silent()), clock=clock)
    open_breaker(breaker3)
    clock.advance(3 * PROBE_INTERVAL)
    assert not breaker3.up
