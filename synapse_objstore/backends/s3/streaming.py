"""Streaming an object's body from S3: one GET read as consumed, resumed by a ranged GET after
a pause, and timed by a watchdog rather than by aiohttp's per-piece timer."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import s3fs

from synapse_objstore.backends.base import ObjectMetadata, ObjectStream, changed_error, metadata_from
from synapse_objstore.backends.s3.keys import THE_CURRENT_KEY, SseKey, call_with_key, key_did_not_fit, read_with_keys
from synapse_objstore.backends.s3.s3fs_private import (
    BodyFeeder,
    aiohttp_response,
    body_finished,
    fail_body,
    feed_body_unparsed,
    stop_aiohttp_read_timeout,
)
from synapse_objstore.errors import UnknownKeyError

# The most one read of the body's socket takes (asyncio's 256 KiB by default): each read is a
# turn of the I/O loop, with its Python around it. Reads are half the size the stream is read
# in (`BodyFeeder.read_in`), so the small chunks after a client paused keep a paused stream's
# memory as it was, and never need cutting.
SOCKET_READ_SIZE = 1024 * 1024


class S3BodyStream(ObjectStream):
    """The body of a GET, read as consumed. Suspended, it closes the connection; the next
    read continues with a ranged GET that must match the same ETag, so a reader paused for
    long holds no pooled connection and never splices two versions of an object. Should the
    key that opened it no longer fit (the same object rewritten under the current key, its
    ETag kept, as Ceph RGW keeps it), the ranged GET goes with the other keys, still pinned
    to the ETag.

    A read returns the next piece of the body as aiohttp received it. aiobotocore's
    `body.read(n)` joins every piece buffered into one new buffer: a copy of each byte, a
    quarter of the CPU of a stream. Only a plain body is read this way; one that aiobotocore
    wraps to validate a checksum (`response_checksum_validation`) is read through that wrapper.
    A plain body's reads are timed by a `TimedPieceReader` rather than by aiohttp, and its
    pieces reach the reader as the socket gave them, past aiohttp's parser and its copy
    (`feed_body_unparsed`).
    """

    def __init__(
        self, s3: s3fs.S3FileSystem, bucket: str, key: str, reply: dict[str, Any], read_timeout: float,
        sse_key: SseKey = THE_CURRENT_KEY, keys: tuple[SseKey, ...] = (),
    ) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._sse_key = sse_key  # the key the GET was read with: a resumed GET sends it again
        self._keys = keys  # every key reads may use, for an object rewritten under another one
        self._etag: str | None = reply.get("ETag")
        self.size: int = int(reply["ContentLength"])
        self.metadata: ObjectMetadata | None = metadata_from(reply.get("ContentType"), reply.get("Metadata"))
        self._read_timeout = read_timeout
        self._offset = 0
        self._rest = b""  # what is left of a piece longer than a read asked for
        self._open(reply)

    def _open(self, reply: dict[str, Any]) -> None:
        self._body: Any = reply["Body"]
        raw = aiohttp_response(self._body)
        self._pieces: TimedPieceReader | None = None
        self._feeder: BodyFeeder | None = None
        self._read_in = 0  # the max_bytes the feeder's reads were last sized for
        if raw is not None:
            self._feeder = feed_body_unparsed(raw)
            self._pieces = TimedPieceReader(raw, self._read_timeout)

    async def read(self, max_bytes: int) -> bytes:
        if self._body is None:
            if self._offset >= self.size:
                return b""
            condition = {"IfMatch": self._etag} if self._etag else {}
            request = {"Bucket": self._bucket, "Key": self._key, "Range": f"bytes={self._offset}-", **condition}
            try:
                try:
                    reply = await call_with_key(self._s3, self._sse_key, "get_object", **request)
                except OSError as error:
                    if not (key_did_not_fit(error) and len(self._keys) > 1):
                        raise
                    reply, self._sse_key = await read_with_keys(self._s3, self._keys, "get_object", **request)
            except OSError as error:
                if isinstance(error, (FileNotFoundError, UnknownKeyError)) or _status(error) == 412:
                    raise changed_error(f"{self._bucket}/{self._key}", error) from error
                raise
            expected = f"bytes {self._offset}-{self.size - 1}/{self.size}"
            if reply.get("ContentRange") != expected:
                # A store (or a cache in front of it) that ignores Range answers 200 with the
                # whole object: taken as the rest, its start would follow the bytes already read.
                reply["Body"].close()
                raise OSError(f"{self._bucket}/{self._key}: the store answered the read of {expected} "
                              f"with {reply.get('ContentRange') or 'the whole object'}")
            self._open(reply)
        data = await self._next_piece(max_bytes)
        self._offset += len(data)
        return data

    async def _next_piece(self, max_bytes: int) -> bytes:
        if self._pieces is None:
            data: bytes = await self._body.read(max_bytes)
            return data
        if self._feeder is not None and max_bytes != self._read_in:
            self._read_in = max_bytes
            self._feeder.read_in(min(max_bytes // 2, SOCKET_READ_SIZE))
        piece = self._rest
        if not piece:
            piece = await self._pieces.read_piece()
        piece, self._rest = (piece[:max_bytes], piece[max_bytes:]) if len(piece) > max_bytes else (piece, b"")
        return piece

    async def suspend(self) -> None:
        await self.close()

    async def close(self) -> None:
        body, self._body = self._body, None
        if self._pieces is not None:
            self._pieces.stop()
        self._pieces, self._rest = None, b""
        if body is not None:
            body.close()


def _status(error: OSError) -> Any:
    """The HTTP status of the botocore error s3fs translated into `error`."""
    response = getattr(error.__cause__, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None


class TimedPieceReader:
    """Reads a response's body piece by piece, and fails a read that has waited `timeout`
    for its next piece (the read timeout, as aiohttp's `sock_read` would).

    aiohttp re-arms a timer for every piece it receives, two timer operations per 256 KiB:
    about a seventh of the I/O thread's time in a fast stream. This one looks at most every
    half `timeout` instead, and when it finds a read waiting, looks again when that read's
    `timeout` is up: a stall fails `timeout` after the read began to wait, never later. Only a
    read that waits is timed: a reader that stops reading (its client paused) is never failed
    by it.
    """

    def __init__(self, response: aiohttp.ClientResponse, timeout: float) -> None:
        self._reader = response.content
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        stop_aiohttp_read_timeout(response)  # this times the reads instead
        self._check = self._loop.call_later(timeout / 2, self._look)

    async def read_piece(self) -> bytes:
        self._waiting_since = self._loop.time()
        try:
            piece, _ = await self._reader.readchunk()
        finally:
            self._waiting_since = None
        return piece

    def _look(self) -> None:
        if body_finished(self._reader):
            return  # nothing more to time
        delay = self._timeout / 2
        since = self._waiting_since
        if since is not None:
            left = since + self._timeout - self._loop.time()
            if left <= 0:
                fail_body(self._reader, aiohttp.ServerTimeoutError(f"no data from the store for {self._timeout:g} s"))
                return
            delay = min(delay, left)
        self._check = self._loop.call_later(delay, self._look)

    def stop(self) -> None:
        self._check.cancel()
