"""Diagnostic variants of synapse_objstore.responder.ObjectResponder._pump, for measuring a
proposed change without editing the package (bench/run --variant ours+window=2,fill=1,...).

`window`: chunks handed to the reactor before the pump waits for the oldest one to be
written (the shipped pump: 1). With 2, reading the next chunk and the thread hop of the
previous one overlap; a consumer that pauses inside `write` gets at most one more chunk.
`fill`: read until CHUNK_SIZE bytes (or the end) before handing a chunk over; the body's
read(n) returns only what is buffered, often less than n.
`hold`: the reactor side keeps a chunk that arrives while the consumer is paused and writes
it on resumeProducing, so that even with window 2 nothing is written after a pause.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


def install(window: int = 1, fill: bool = False, hold: bool = False) -> None:
    import synapse_objstore.responder as module
    from synapse_objstore.redaction import redact
    from synapse_objstore.store import ObjectStoreError

    async def read_chunk(stream: Any) -> bytes:
        size = module.CHUNK_SIZE
        data = await stream.read(size)
        if not fill or not data or len(data) >= size:
            return data
        parts = [data]
        have = len(data)
        while have < size:
            more = await stream.read(size - have)
            if not more:
                break
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    async def _pump(self: Any) -> None:
        outcome: BaseException | None = None
        next_read: asyncio.Future[bytes] | None = None
        in_flight: collections.deque[asyncio.Future[None]] = collections.deque()
        try:
            chunk = await read_chunk(self._stream)
            while chunk:
                await self._wait_until_resumed()
                written = self._loop.create_future()
                self._reactor.callFromThread(self._deliver, chunk, written)
                in_flight.append(written)
                next_read = asyncio.ensure_future(read_chunk(self._stream))
                while len(in_flight) >= window:
                    await in_flight.popleft()
                chunk = await next_read
                next_read = None
            while in_flight:
                await in_flight.popleft()
            if hold:
                await self._wait_until_resumed()  # held chunks are written before the end
        except asyncio.CancelledError:
            return
        except module.ConsumerPausedTooLongError as error:
            outcome = error
        except Exception as error:  # noqa: BLE001 (as the shipped pump: any failure ends the stream)
            outcome = ObjectStoreError(
                f"could not stream {self._media_path!r}: {redact(f'{type(error).__name__}: {error}')}"
            )
            outcome.__cause__ = error
        finally:
            if next_read is not None:
                next_read.cancel()
            await self._stream.close()
        self._reactor.callFromThread(self._finish, outcome)

    module.ObjectResponder._pump = _pump  # type: ignore[method-assign]
    if hold:
        install_hold(module)


def install_hold(module: Any) -> None:
    """A chunk that reaches a paused consumer is kept on the reactor side (and counted as
    taken, so the pump is never stuck waiting for it) and written on resumeProducing."""
    cls = module.ObjectResponder
    original_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._paused = False
        self._held = collections.deque()

    def pauseProducing(self: Any) -> None:
        self._paused = True
        self._loop.call_soon_threadsafe(self._resume.clear)

    def resumeProducing(self: Any) -> None:
        self._paused = False
        while self._held and not self._paused and self._consumer is not None:
            self._consumer.write(self._held.popleft())
        if not self._paused:
            self._loop.call_soon_threadsafe(self._resume.set)

    def _deliver(self: Any, chunk: bytes, written: Any) -> None:
        if self._consumer is not None:
            if self._paused:
                self._held.append(chunk)
            else:
                self._consumer.write(chunk)
        self._loop.call_soon_threadsafe(module._resolve, written)

    cls.__init__ = __init__
    cls.pauseProducing = pauseProducing
    cls.resumeProducing = resumeProducing
    cls._deliver = _deliver
