"""Streams an object to a Synapse HTTP response with backpressure and no thread.

The responder is a Twisted push producer. Its pump is a coroutine on the I/O loop that
reads a chunk, hands it to the reactor thread, and keeps at most CHUNKS_IN_FLIGHT chunks
on their way there (the next one is read meanwhile). The reactor counts the chunks it has
written and wakes the loop only when the pump is waiting for one: a chunk written while the
next is read costs no hop back. Pausing sets a flag the pump reads before it hands over each
chunk (and clears an event it then waits on). A chunk that was already on its way when the
consumer paused is held on the reactor side and written on resume, so nothing reaches a
paused consumer. A consumer that goes away stops the pump, which closes the object and gives
its connection back.

Metrics (synapse_objstore/metrics.py) are updated on the reactor thread: bytes as each chunk
is written, time to first byte with the first one, and the in-flight gauge from the start of
streaming to its end, however it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from types import TracebackType
from typing import Any

from synapse.logging.context import PreserveLoggingContext, make_deferred_yieldable
from synapse.media._base import ConsumerRequestedStopError, Responder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorFromThreads
from twisted.python.failure import Failure
from zope.interface import implementer

from synapse_objstore.backends.base import ObjectStream
from synapse_objstore.io_loop import io_loop, submit
from synapse_objstore.metrics import ProviderMetrics
from synapse_objstore.redaction import redact
from synapse_objstore.store import ObjectStoreError

logger = logging.getLogger(__name__)

# The chunk handed to the reactor at once: big enough that thread hops are rare, small
# enough that a paused response holds little memory (bench/README.md has the trade-off).
CHUNK_SIZE = 512 * 1024
# Chunks on their way to the reactor before the pump waits for the oldest to be written:
# two lets one chunk's thread hop overlap the next one's read.
CHUNKS_IN_FLIGHT = 2
# A consumer paused this long gives back the store connection (the stream resumes with a
# ranged read), so stalled clients cannot exhaust the connection pool.
RELEASE_CONNECTION_AFTER = 5.0
# A consumer paused this long is taken as gone (Synapse's own file sender uses 90 s).
PAUSE_TIMEOUT = 90.0


class ConsumerPausedTooLongError(Exception):
    """The consumer paused and did not resume within PAUSE_TIMEOUT."""


@implementer(IPushProducer)
class ObjectResponder(Responder):
    def __init__(
        self,
        reactor: IReactorFromThreads,
        stream: ObjectStream,
        media_path: str,
        metrics: ProviderMetrics,
        requested_at: float,
    ) -> None:
        """`requested_at` is when Synapse asked for the object (`time.perf_counter()`), for
        the time to first byte."""
        self._reactor = reactor
        self._stream = stream
        self._media_path = media_path
        self._metrics = metrics
        self._requested_at = requested_at
        self._awaiting_first_byte = True
        self._bytes_written = 0
        self._streaming = False
        self._loop = io_loop()
        self._resume = asyncio.Event()
        self._paused = False  # set on the reactor thread, read by the pump
        self._delivered = 0  # chunks the reactor has written (or dropped, the consumer gone)
        self._held: list[bytes] = []  # chunks that reached a paused consumer, written on resume
        self._waiter: asyncio.Future[None] | None = None  # the pump, waiting for a delivery
        self._consumer: IConsumer | None = None
        self._pump_future: concurrent.futures.Future[None] | None = None
        self._finished: Deferred[None] = Deferred()

    def write_to_consumer(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._streaming = True
        self._metrics.downloads_in_flight.inc()
        consumer.registerProducer(self, True)
        self._loop.call_soon_threadsafe(self._resume.set)
        self._pump_future = submit(self._pump())
        return make_deferred_yieldable(self._finished)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pump_future is None:  # never streamed: the pump will not close the object
            submit(self._stream.close())

    # IPushProducer, called on the reactor thread

    def pauseProducing(self) -> None:
        self._paused = True
        self._loop.call_soon_threadsafe(self._resume.clear)

    def resumeProducing(self) -> None:
        self._paused = False
        while self._held and not self._paused and self._consumer is not None:
            self._write(self._held.pop(0))
        if not self._paused:
            self._loop.call_soon_threadsafe(self._resume.set)

    def stopProducing(self) -> None:
        if self._pump_future is not None:
            self._pump_future.cancel()
        # A client may hang up right after the last byte, before the pump reports itself done.
        self._end_stream(complete=self._bytes_written == self._stream.size)
        self._detach()
        if not self._finished.called:
            with PreserveLoggingContext():
                self._finished.errback(ConsumerRequestedStopError("the client went away"))

    # the pump, on the I/O loop

    async def _pump(self) -> None:
        outcome: BaseException | None = None
        next_read: asyncio.Future[bytes] | None = None
        sent = 0
        try:
            chunk = await self._read_chunk()
            while chunk:
                await self._wait_until_resumed()
                self._reactor.callFromThread(self._deliver, chunk)
                sent += 1
                next_read = asyncio.ensure_future(self._read_chunk())
                await self._until_delivered(sent - CHUNKS_IN_FLIGHT + 1)
                chunk = await next_read
                next_read = None
            await self._until_delivered(sent)
        except asyncio.CancelledError:
            return  # stopProducing: the consumer is gone and has been told
        except ConsumerPausedTooLongError as error:
            outcome = error
        except Exception as error:
            outcome = ObjectStoreError(f"could not stream {self._media_path!r}: {redact(f'{type(error).__name__}: {error}')}")
            outcome.__cause__ = error
        finally:
            if next_read is not None:
                next_read.cancel()
            await self._stream.close()
        self._reactor.callFromThread(self._finish, outcome)

    async def _read_chunk(self) -> bytes:
        """A full CHUNK_SIZE (or the rest of the object): a body's read returns only what is
        buffered, and every chunk costs two thread hops, so small chunks would cap the rate."""
        parts: list[bytes] = []
        have = 0
        while have < CHUNK_SIZE:
            data = await self._stream.read(CHUNK_SIZE - have)
            if not data:
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    async def _until_delivered(self, count: int) -> None:
        """Wait until the reactor has delivered `count` chunks. It wakes the loop only when the
        pump waits: a chunk written while the next one is read costs no hop back. A chunk is
        held while its consumer is paused, so a wait this long means a consumer that left."""
        while self._delivered < count:
            waiter = self._waiter = self._loop.create_future()
            try:
                if self._delivered < count:  # published before this re-check: no wake-up is lost
                    await asyncio.wait_for(waiter, PAUSE_TIMEOUT)
            except asyncio.TimeoutError:
                raise ConsumerPausedTooLongError(f"consumer paused for over {PAUSE_TIMEOUT:.0f} s") from None
            finally:
                self._waiter = None

    async def _wait_until_resumed(self) -> None:
        if self._paused:
            self._resume.clear()  # the reactor's own clear may still be on its way
        elif self._resume.is_set():
            return
        try:
            await asyncio.wait_for(self._resume.wait(), RELEASE_CONNECTION_AFTER)
            return
        except asyncio.TimeoutError:
            await self._stream.suspend()
        try:
            await asyncio.wait_for(self._resume.wait(), PAUSE_TIMEOUT - RELEASE_CONNECTION_AFTER)
        except asyncio.TimeoutError:
            raise ConsumerPausedTooLongError(f"consumer paused for over {PAUSE_TIMEOUT:.0f} s") from None

    # back on the reactor thread

    def _deliver(self, chunk: bytes) -> None:
        if self._paused and self._consumer is not None:
            self._held.append(chunk)  # counted once written, by resumeProducing
            return
        self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        """Write a chunk (unless the consumer is gone), count it, and wake the pump if it waits."""
        if self._consumer is not None:
            self._bytes_written += len(chunk)
            self._consumer.write(chunk)
            self._metrics.fetched_bytes.inc(len(chunk))
            if self._awaiting_first_byte:
                self._awaiting_first_byte = False
                self._metrics.first_byte_duration.observe(time.perf_counter() - self._requested_at)
        self._delivered += 1
        waiter = self._waiter
        if waiter is not None:
            self._loop.call_soon_threadsafe(_resolve, waiter)

    def _finish(self, error: BaseException | None) -> None:
        self._end_stream(complete=error is None)
        self._detach()
        if self._finished.called:
            return
        if error is None:
            self._finished.callback(None)
        else:
            if isinstance(error, ObjectStoreError):  # not a consumer that paused for too long
                self._metrics.count_error("stream", error)
            logger.warning("streaming %s failed: %s", self._media_path, error)
            self._finished.errback(Failure(error))

    def _end_stream(self, complete: bool) -> None:
        """Count the end of streaming, once, however it ends; `complete`: every byte was written."""
        if not self._streaming:
            return
        self._streaming = False
        if complete:
            self._metrics.fetched_objects.inc()
        self._metrics.downloads_in_flight.dec()

    def _detach(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.unregisterProducer()

    def __repr__(self) -> str:
        return f"<ObjectResponder {self._media_path}>"


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
