"""Every member of s3fs, aiobotocore, botocore and aiohttp that the s3 backend uses outside their
public, documented API: here alone, each with what it does for us and why no public call does it.

Checked against s3fs 2026.9.0 (with aiobotocore 3.10.0 and botocore 1.43.117, which it
pins) and aiohttp 3.14.5; the s3fs members are also present in s3fs 2025.2.0, the oldest
release the lower bound admits (only their presence was checked there). pyproject.toml
bounds s3fs above at the release tested: before raising that bound, check each function here
against the new s3fs, the aiobotocore it pins and the aiohttp that comes with it (the tests
of the s3 backend, the SSE-C tests and tests/test_read_watchdog.py exercise all of them).
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import s3fs
from aiobotocore.response import AioStreamingBody
from aiobotocore.session import AioSession
from botocore import handlers
from botocore.exceptions import ClientError
from s3fs.errors import translate_boto_error


async def call_s3(s3: s3fs.S3FileSystem, method: str, **kwargs: Any) -> dict[str, Any]:
    """`S3FileSystem._call_s3`: one S3 API call on s3fs's client, which adds the filesystem's
    `s3_additional_kwargs` (SSE-C key, storage class) where the call's API shape accepts them
    and turns botocore's errors into OSErrors (FileNotFoundError, PermissionError, ...).

    s3fs's public methods make other requests than we need (`info` lists after a 404,
    `pipe_file` cannot send If-None-Match, `open` reads by ranges with no ETag check) and its
    multipart upload holds no shared memory limit; the client `set_session()` returns adds
    neither the SSE-C arguments nor the error translation."""
    reply: dict[str, Any] = await s3._call_s3(method, **kwargs)
    return reply


def translate_error(error: ClientError) -> OSError:
    """`s3fs.errors.translate_boto_error` (public name, undocumented): the OSError `call_s3`
    would raise, for an error of a paginator we drive on the client ourselves (s3fs has no
    listing that yields page by page)."""
    translated: OSError = translate_boto_error(error)
    return translated


def no_expect_continue(session: AioSession) -> None:
    """Unregister botocore's `handlers.add_expect_header` (a built-in handler that each session
    registers and each client copies at its creation; no option turns it off), so that no
    request asks for `Expect: 100-continue`.

    botocore asks for it on every PUT and UploadPart of more than 1 MB. aiohttp then sends the
    headers alone and waits for the store's "100 Continue" before the body, with no timeout:
    the read timeout starts only once the body is sent, so a store or a proxy on the way that
    never answers the headers (a hostile review's fault proxy did) held the upload, and the run
    with it, for good (10 minutes and counting, no retry). Without it a request that gets no
    answer fails within the read timeout and is retried. And every PUT costs a round trip less
    (at 20 ms from the store, more than the PUT of a thumbnail takes otherwise) and one reply
    and half the loop turns fewer. What it gave up: a body the store refuses anyway (a refused
    signature, an If-None-Match: * that finds the object) is sent whole first, at most a part
    (8 MiB by default). Idempotent (a session may serve more than one filesystem)."""
    session.unregister("before-call.s3", handlers.add_expect_header)


def disable_s3fs_retries(s3: s3fs.S3FileSystem) -> None:
    """`S3FileSystem.retries` (a class attribute, no constructor option): s3fs's own retry
    loop around each call, on top of botocore's, would multiply the configured retries."""
    s3.retries = 1


async def close_client(s3: s3fs.S3FileSystem) -> None:
    """`S3FileSystem._s3creator`, the aiobotocore client's context manager: s3fs closes it
    itself only from a finalizer at exit (and only when synchronous), when the loop may be
    gone; it has no public close for an asynchronous filesystem."""
    creator = getattr(s3, "_s3creator", None)
    if creator is not None:
        await creator.__aexit__(None, None, None)


def aiohttp_response(body: Any) -> aiohttp.ClientResponse | None:
    """The aiohttp response under a plain GetObject body (`AioStreamingBody._raw_stream`;
    newer aiobotocore also names it `raw_stream`), or None for a body aiobotocore wraps to
    validate a checksum. Read directly, its pieces come as aiohttp received them: the body's
    public `read(n)` joins them into a new buffer, a copy of every byte."""
    if type(body) is not AioStreamingBody:
        return None
    raw = getattr(body, "_raw_stream", None)
    return raw if isinstance(raw, aiohttp.ClientResponse) else None


def stop_aiohttp_read_timeout(response: aiohttp.ClientResponse) -> None:
    """Switch off aiohttp's `sock_read` timer for the rest of this response
    (`ResponseHandler.read_timeout` of the connection's protocol): it re-arms the timer for
    every piece received, and a `TimedPieceReader` times the reads instead. aiohttp has no
    public way to change a response's read timeout once sent; it sets the timeout again for
    the connection's next request."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:  # None: all received already
        connection.protocol.read_timeout = None


def body_finished(reader: aiohttp.StreamReader) -> bool:
    """Whether the body has all come, or failed (`StreamReader.is_eof`, `exception`)."""
    return reader.is_eof() or reader.exception() is not None


def fail_body(reader: aiohttp.StreamReader, error: BaseException) -> None:
    """Fail the body's waiting read and every later one with `error`
    (`StreamReader.set_exception`, as aiohttp's own read timeout does)."""
    reader.set_exception(error)


def feed_body_unparsed(response: aiohttp.ClientResponse) -> BodyFeeder | None:
    """Have the rest of a plain body (a Content-Length, no Transfer-Encoding nor Content-Encoding)
    go into `response.content` as the socket gives it, past aiohttp's HTTP parser; the feeder
    that does it, or None where the body is left to the parser.

    aiohttp's C parser copies every piece of a body into a new bytes object before the reader
    gets it: a second copy of each byte (after the kernel's) into a fresh buffer to fault in,
    a sixth of a stream's CPU and more. It is bypassed the way aiohttp bypasses it for a
    WebSocket (`ResponseHandler.set_parser`, whose `_payload_parser` gets every received piece
    in `data_received`). The reader's flow control is kept. The feeder hands the connection
    back at the end of the body, which aiohttp then reuses as usual (each request gets a new
    parser); a connection lost mid-body fails the read as the parser would, and a reply longer
    than it announced fails it and is closed."""
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    reader = response.content
    length = response.headers.get("Content-Length")
    if (protocol is None or protocol.transport is None or protocol.upgraded
            or not isinstance(reader, aiohttp.StreamReader) or reader.is_eof() or reader.exception() is not None
            or length is None or not length.isdigit() or "Transfer-Encoding" in response.headers
            or "Content-Encoding" in response.headers or reader.total_bytes >= int(length)):
        return None
    feeder = BodyFeeder(protocol, reader, int(length) - reader.total_bytes)
    protocol.set_parser(feeder, reader)
    return feeder


class BodyFeeder:
    """What `ResponseHandler.data_received` hands each received piece to, in place of the HTTP
    parser, for the rest of one body (see `feed_body_unparsed`)."""

    def __init__(self, protocol: Any, reader: aiohttp.StreamReader, remaining: int) -> None:
        self._protocol, self._reader, self._remaining = protocol, reader, remaining
        self._transport: Any = protocol.transport  # asyncio's socket transport has `max_size`
        self._socket_read_size = getattr(self._transport, "max_size", None)
        self._marks = reader.get_read_buffer_limits()

    def read_in(self, size: int) -> None:
        """Read the socket up to `size` at a time from now on (asyncio's 256 KiB at least), and
        pause it once the reader holds that much (aiohttp's mark at least: twice its
        read_bufsize, 512 KiB in aiohttp 3.14).

        Each read of the socket (`_SelectorSocketTransport.max_size`) is a turn of the I/O loop
        with its Python around it, and the reader pauses the socket past its mark
        (`StreamReader._high_water`): with larger reads and the same mark, nearly every read
        would cost a pause and a resume (two epoll_ctl, a seventh of the I/O thread's Python).
        A reader whose consumer paused holds two reads at most."""
        if self._remaining == 0:
            return
        if isinstance(self._socket_read_size, int):
            self._transport.max_size = max(self._socket_read_size, size)
        low, high = self._marks
        self._reader._high_water = max(high, size)
        self._reader._low_water = max(low, size // 2)

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """(False, b"") whatever comes: aiohttp 3.9 takes the first as the end of a WebSocket, 3.14
        as a protocol error; both are handled here."""
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            self._reader.feed_data(data)
        elif remaining == 0:  # after a reply that was longer than announced: dropped, being closed
            pass
        elif len(data) > remaining:
            self._remaining = 0
            self._reader.set_exception(aiohttp.ClientPayloadError(
                f"the store sent more than the {self._reader.total_bytes + remaining} bytes it announced"))
            self._protocol.force_close()
            self._transport.close()
        else:
            self._remaining = 0
            self._done()
            self._protocol._payload_parser = None  # the connection may go back to the pool
            self._reader.feed_data(data)
            self._reader.feed_eof()  # hands the connection back (ClientResponse._response_eof)
        return False, b""

    def feed_eof(self) -> None:
        """The connection was lost (aiohttp's parser then fails the reader if the body is short)."""
        self._done()
        if self._remaining:
            self._reader.set_exception(aiohttp.ClientPayloadError(
                f"Response payload is not completed: {self._remaining} bytes missing"))

    def _done(self) -> None:
        if isinstance(self._socket_read_size, int):  # the connection's next request reads as usual
            self._transport.max_size = self._socket_read_size


class SentAsIsBody(io.BytesIO):
    """A request body of bytes that aiohttp sends without copying them whole first.

    botocore turns a bytes Body of PutObject and UploadPart into a BytesIO
    (`convert_body_to_file_like_object`), and aiohttp's `BytesIOPayload` takes the body's size
    from `getbuffer()`; on a BytesIO made from bytes, which shares them, that call copies them
    all (a writable view must not write into the bytes): a second copy of every body in flight,
    up to the whole upload memory limit, held until the reply. This view is read-only, over the
    same bytes (`getvalue` returns the shared bytes object itself); aiohttp only measures it, and
    then sends the body a chunk at a time with `read`, as before."""

    def getbuffer(self) -> memoryview:
        return memoryview(self.getvalue())


def send_bytes_bodies_as_is(params: dict[str, Any], **_: Any) -> None:
    """botocore's `before-parameter-build` handler for the calls with a Body: a bytes Body becomes
    a `SentAsIsBody` (botocore's own conversion, registered last, then leaves it alone)."""
    body = params.get("Body")
    if isinstance(body, bytes):
        params["Body"] = SentAsIsBody(body)
