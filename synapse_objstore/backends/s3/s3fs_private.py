"""Every member of s3fs, aiobotocore and aiohttp that the s3 backend uses outside their public,
documented API: here alone, each with what it does for us and why no public call does it.

Checked against s3fs 2026.9.0 (with aiobotocore 3.10.0 and botocore 1.43.117, which it
pins) and aiohttp 3.14.5; the s3fs members are also present in s3fs 2025.2.0, the oldest
release the lower bound admits (only their presence was checked there). pyproject.toml
bounds s3fs above at the release tested: before raising that bound, check each function here
against the new s3fs, the aiobotocore it pins and the aiohttp that comes with it (the tests
of the s3 backend, the SSE-C tests and tests/test_read_watchdog.py exercise all of them).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import s3fs
from aiobotocore.response import AioStreamingBody
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
