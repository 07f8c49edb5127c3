"""Streams an object to a Synapse HTTP response with backpressure and no thread.

The responder is a Twisted push producer. Its pump is a coroutine on the I/O loop that
reads a chunk (the pieces the HTTP client received, never copied into one buffer), hands it
to the reactor thread, and keeps at most CHUNKS_IN_FLIGHT chunks on their way there (the next
one is read meanwhile). Chunks grow while the consumer keeps up and shrink back when it
pauses: every chunk costs a thread hop, and every chunk on its way to a paused consumer is
memory held.

The reactor counts the chunks it has written, and a pause sets a flag; the pump reads both
before it hands over each chunk, and the reactor wakes the loop only when the pump is
waiting: a chunk written while the next is read, or a pause and resume meanwhile, costs no
hop back. What was already on its way when the consumer paused (a chunk, or the rest of one)
is held on the reactor side and written on resume, so nothing reaches a paused consumer. A
consumer that goes away stops the pump, which closes the object and gives its connection back.

Metrics (synapse_objstore/metrics.py) are updated on the reactor thread: bytes as each chunk
is written, time to first byte with the first one, and the in-flight gauge from the start of
streaming to its end, however it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from synapse.logging.context import PreserveLoggingContext, make_deferred_yieldable
from synapse.media._base import Responder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorFromThreads
from zope.interface import implementer

from synapse_objstore.backends.base import ObjectStream
from synapse_objstore.errors import ConsumerPausedTooLongError, ObjectStoreError
from synapse_objstore.failures import store_error
from synapse_objstore.io_loop import io_loop, submit
from synapse_objstore.metrics import ProviderMetrics
from synapse_objstore.redaction import redact
from synapse_objstore.synapse_compat import ConsumerRequestedStopError

logger = logging.getLogger(__name__)

# The least handed to the reactor at once: the size of a stream's first chunks, and of every
# chunk after the consumer paused. Small enough that a paused response holds little memory.
CHUNK_SIZE = 512 * 1024
# Each chunk after one that a consumer took without pausing is twice the size, up to this:
# a consumer that keeps up costs a quarter of the thread hops (bench/README.md has the trade-off).
MAX_CHUNK_SIZE = 2 * 1024 * 1024
# Chunks on their way to the reactor before the pump waits for the oldest to be written:
# two lets one chunk's thread hop overlap the next one's read.
CHUNKS_IN_FLIGHT = 2
# A consumer paused this long gives back the store connection (the stream resumes with a
# ranged read), so stalled clients cannot exhaust the connection pool.
RELEASE_CONNECTION_AFTER = 5.0
# A consumer paused this long is taken as gone (Synapse's own file sender uses 90 s).
PAUSE_TIMEOUT = 90.0


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
        self._bytes_read = 0
        self._streaming = False
        self._loop = io_loop()
        self._paused = False  # set on the reactor thread, read by the pump
        self._pauses = 0  # pause requests so far, counted on the reactor thread
        self._pauses_seen = 0  # ... as the pump last sized a chunk
        self._delivered = 0  # chunks the reactor has begun to write (or dropped, the consumer gone)
        self._written = 0  # chunks the reactor has written to the end (or dropped)
        self._backlog: deque[deque[bytes]] = deque()  # chunks that reached a paused consumer
        self._writing: deque[bytes] = deque()  # the rest of the chunk being written
        self._waiter: asyncio.Future[None] | None = None  # the pump, waiting for the reactor
        self._wanted: Callable[[], bool] = lambda: True  # what the pump waits for
        self._consumer: IConsumer | None = None
        self._pump_future: concurrent.futures.Future[None] | None = None
        self._finished: Deferred[None] = Deferred()

    def write_to_consumer(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._streaming = True
        self._metrics.downloads_in_flight.inc()
        consumer.registerProducer(self, True)
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
        self._pauses += 1

    def resumeProducing(self) -> None:
        self._paused = False
        self._write_backlog()
        self._wake_pump()

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
        sent = 0
        size = CHUNK_SIZE
        try:
            chunk = await self._read_chunk(size)
            while chunk:
                await self._wait_until_resumed()
                self._reactor.callFromThread(self._deliver, chunk)
                sent += 1
                size = self._next_chunk_size(size)
                chunk = await self._read_chunk(size)  # while the reactor writes the one just sent
                await self._until_delivered(sent - CHUNKS_IN_FLIGHT + 1)
            await self._until_delivered(sent, whole=True)
        except asyncio.CancelledError:
            return  # stopProducing: the consumer is gone and has been told
        except ConsumerPausedTooLongError as error:
            outcome = error
        except Exception as error:
            # where a stream's failure (the client library's) crosses into the store
            detail = redact(f"{type(error).__name__}: {error}")
            outcome = store_error(f"could not stream {self._media_path!r}: {detail}", error)
        finally:
            await self._stream.close()
        self._reactor.callFromThread(self._finish, outcome)

    async def _read_chunk(self, size: int) -> deque[bytes]:
        """Pieces adding up to at least `size` (or the rest of the object), each at most
        `size`: a body's read returns only what is buffered, and every chunk costs a thread
        hop, so small chunks would cap the rate. Joining the pieces would cost a copy and a
        fresh buffer per chunk, so the consumer gets them one by one; asking each read for a
        whole `size` lets a stream hand over its pieces as they are, never cut."""
        parts: deque[bytes] = deque()
        have = 0
        while have < size:
            data = await self._stream.read(size)
            if not data:
                break
            parts.append(data)
            have += len(data)
        self._bytes_read += have
        total = self._stream.size
        if total is not None and (self._bytes_read > total or (have < size and self._bytes_read < total)):
            raise ConnectionError(f"the object is {total} bytes, but its stream gave {self._bytes_read}")
        return parts

    def _next_chunk_size(self, size: int) -> int:
        """CHUNK_SIZE after a pause; twice `size` (up to MAX_CHUNK_SIZE) once the consumer has
        taken a chunk whole and not paused since. A pause that races with this check is seen at
        the next chunk."""
        pauses = self._pauses
        if pauses != self._pauses_seen:
            self._pauses_seen = pauses
            return CHUNK_SIZE
        return min(2 * size, MAX_CHUNK_SIZE) if self._written else size

    async def _until_delivered(self, count: int, whole: bool = False) -> None:
        """Wait until the reactor has begun to write `count` chunks (`whole`: written them to the
        end). A chunk that reaches a paused consumer waits on the reactor side, so a long wait
        here is a paused consumer."""
        await self._until(lambda: self._reached(count, whole))

    async def _wait_until_resumed(self) -> None:
        await self._until(lambda: not self._paused)

    async def _until(self, wanted: Callable[[], bool]) -> None:
        """Wait until `wanted()`, a state the reactor changes. The reactor wakes the loop only
        when the pump waits (the waiter is published before `wanted` is checked again, so no
        wake-up is lost): a chunk written while the next one is read, or a client that pauses
        and resumes meanwhile, costs no hop. A consumer that keeps the pump waiting for
        RELEASE_CONNECTION_AFTER gets the store connection given back (the stream resumes with
        a ranged read); one that keeps it waiting for PAUSE_TIMEOUT is taken as gone."""
        started = self._loop.time()
        suspended = False
        try:
            while not wanted():
                self._wanted = wanted  # published before the waiter, read after it
                future = self._waiter = self._loop.create_future()
                if wanted():
                    return
                limit = PAUSE_TIMEOUT if suspended else min(RELEASE_CONNECTION_AFTER, PAUSE_TIMEOUT)
                try:
                    await asyncio.wait_for(future, started + limit - self._loop.time())
                except asyncio.TimeoutError:
                    if suspended:
                        raise ConsumerPausedTooLongError(f"consumer paused for over {PAUSE_TIMEOUT:.0f} s") from None
                    await self._stream.suspend()
                    suspended = True
        finally:
            self._waiter = None

    # back on the reactor thread

    def _deliver(self, chunk: deque[bytes]) -> None:
        if self._consumer is None:  # gone: the pump is being cancelled
            self._delivered += 1
            self._written += 1
        else:
            self._backlog.append(chunk)
            self._write_backlog()
        self._wake_pump()

    def _write_backlog(self) -> None:
        """Write the pieces that have arrived, in order, until the consumer pauses. A chunk counts
        as delivered once its first piece is written: a pause inside that write is then seen by
        the pump before it reads on, and the rest of the chunk waits here for the resume. The
        bytes metric is counted once per call, not per piece: it takes a lock."""
        written_before = self._bytes_written
        try:
            while not self._paused and self._consumer is not None:
                if not self._writing:
                    if not self._backlog:
                        return
                    self._writing = self._backlog.popleft()
                    self._delivered += 1
                self._write(self._writing.popleft())
                if not self._writing:
                    self._written += 1
        finally:
            if self._bytes_written > written_before:
                self._metrics.fetched_bytes.inc(self._bytes_written - written_before)

    def _reached(self, count: int, whole: bool) -> bool:
        return (self._written if whole else self._delivered) >= count

    def _wake_pump(self) -> None:
        waiter = self._waiter
        if waiter is not None and self._wanted():
            self._loop.call_soon_threadsafe(_resolve, waiter)

    def _write(self, data: bytes) -> None:
        assert self._consumer is not None
        self._bytes_written += len(data)
        self._consumer.write(data)
        if self._awaiting_first_byte:
            self._awaiting_first_byte = False
            self._metrics.first_byte_duration.observe(time.perf_counter() - self._requested_at)

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
            self._finished.errback(error)

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
