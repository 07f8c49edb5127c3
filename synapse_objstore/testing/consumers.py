"""Consumers that stand in for a client's HTTP connection when Synapse streams media to it."""

from __future__ import annotations

import hashlib

from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer


class PushConsumer:
    """What every consumer here shares: it takes a push producer, as Synapse's HTTP
    connections do."""

    producer: IPushProducer | None = None

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert streaming, "the provider must be a push producer"
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


@implementer(IConsumer)
class RecordingConsumer(PushConsumer):
    """A consumer like a client's HTTP connection: records what it is sent, and can pause
    or hang up after its first write."""

    def __init__(self, pause_on_first_write: bool = False, stop_on_first_write: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.paused = False
        self.bytes_after_pause = 0
        self._pause_on_first_write = pause_on_first_write
        self._stop_on_first_write = stop_on_first_write

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, data: bytes) -> None:
        if self.paused:
            self.bytes_after_pause += len(data)
        self.chunks.append(data)
        if len(self.chunks) == 1 and self.producer is not None:
            if self._pause_on_first_write:
                self.pause()
            elif self._stop_on_first_write:
                self.producer.stopProducing()

    def pause(self) -> None:
        self.paused = True
        assert self.producer is not None
        self.producer.pauseProducing()

    def resume(self) -> None:
        self.paused = False
        assert self.producer is not None
        self.producer.resumeProducing()


@implementer(IConsumer)
class DigestingConsumer(PushConsumer):
    """A consumer that keeps only the size and MD5 of what it is sent, so that streaming a
    large object costs the consumer no memory."""

    def __init__(self) -> None:
        self.size = 0
        self._md5 = hashlib.md5()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._md5.update(data)
