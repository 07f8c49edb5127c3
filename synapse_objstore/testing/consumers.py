"""Consumers that stand in for a client's HTTP connection when Synapse streams media to it."""

from __future__ import annotations

import hashlib
import time

from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from zope.interface import implementer


class PushConsumer:
    """What every consumer here shares: it takes a push producer, as Synapse's HTTP
    connections do."""

    producer: IPushProducer | None = None

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        assert streaming and IPushProducer.providedBy(producer), "the provider must be a push producer"
        self.producer = IPushProducer(producer)

    def unregisterProducer(self) -> None:
        self.producer = None


@implementer(IConsumer)
class RecordingConsumer(PushConsumer):
    """A consumer like a client's HTTP connection: records what it is sent, and can pause
    or hang up after its first write.

    `first_write_takes`: seconds the first write holds the reactor thread before it pauses or
    hangs up, as a slow socket or TLS write would. Meanwhile the producer goes on reading, so
    that the pause comes while more data is on its way to the consumer: what a producer must
    then hold back, rather than write to a paused consumer."""

    def __init__(self, pause_on_first_write: bool = False, stop_on_first_write: bool = False,
                 first_write_takes: float = 0.0) -> None:
        self.chunks: list[bytes] = []
        self.paused = False
        self.bytes_after_pause = 0
        self._pause_on_first_write = pause_on_first_write
        self._stop_on_first_write = stop_on_first_write
        self._first_write_takes = first_write_takes

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, data: bytes) -> None:
        if self.paused:
            self.bytes_after_pause += len(data)
        self.chunks.append(data)
        if len(self.chunks) == 1 and self.producer is not None:
            time.sleep(self._first_write_takes)
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
