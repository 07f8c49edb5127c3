"""Waiting for a stream's state instead of sleeping: a loaded machine is slow, not wrong, so a
test polls (on the reactor thread, which is what moves a stream on) until the state it
asserts has come, with a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from synapse_objstore.backends.s3 import S3BodyStream
from synapse_objstore.testing.consumers import RecordingConsumer


def wait_until(in_reactor: Callable[..., Any], condition: Callable[[], bool], what: str,
               timeout: float = 30) -> None:
    """Poll `condition` on the reactor thread until it holds. The deadline is generous: a
    loaded machine is slow, not wrong."""
    deadline = time.monotonic() + timeout
    while not in_reactor(condition):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def waits_for_the_client(consumer: RecordingConsumer) -> bool:
    """The responder streaming into `consumer` is waiting for its client, and nothing but the
    client can move it on (read on the reactor thread, which is what would move it on): what
    it has read and sent until now is all it reads and sends while the client stays paused.
    Uses the responder's private state; a test of the streaming tells the same story by the
    bytes alone, but only after a sleep that a loaded machine can outlast."""
    responder: Any = consumer.producer
    return responder is not None and responder._waiter is not None and not responder._wanted()


def waiting_for_a_paused_client(consumer: RecordingConsumer) -> Callable[[], bool]:
    return lambda: consumer.paused and waits_for_the_client(consumer)


def record_suspends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store streams that give their connection back (`suspend`), as they do."""
    suspends: list[int] = []
    suspend = S3BodyStream.suspend

    async def recording_suspend(self: S3BodyStream) -> None:
        await suspend(self)
        suspends.append(1)

    monkeypatch.setattr(S3BodyStream, "suspend", recording_suspend)
    return suspends
