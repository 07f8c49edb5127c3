"""The S3 stream feeds a plain body to its reader past aiohttp's parser (`feed_body_unparsed`):
every byte arrives, once, in order; the connection goes back to the pool at the end of the
body; a body the parser must decode (chunked, or compressed) is left to the parser; and a
reply longer than it announced fails the read rather than pass for the body."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from synapse_objstore.backends.s3.s3fs_private import feed_body_unparsed

MiB = 1024 * 1024
BODY = os.urandom(3 * MiB + 12345)
# Written in pieces, with pauses, so that the body arrives over several socket reads
PIECE = 256 * 1024


def reply(
    body: bytes, announced: int | None = None, headers: str = ""
) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    length = len(body) if announced is None else announced

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n{headers}\r\n".encode())
        for start in range(0, len(body), PIECE):
            writer.write(body[start:start + PIECE])
            await writer.drain()
            await asyncio.sleep(0.001)

    return send


def chunked(body: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), PIECE):
            piece = body[start:start + PIECE]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    return send


class Server:
    """An HTTP/1.1 server on 127.0.0.1 that answers each GET with the next of `replies`, keeping
    the connection open; it counts the connections it accepted."""

    def __init__(self, replies: list[Callable[[asyncio.StreamWriter], Awaitable[None]]]) -> None:
        self.replies = replies
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                request = await reader.readuntil(b"\r\n\r\n")
                assert request.startswith(b"GET ")
                await self.replies.pop(0)(writer)
                await writer.drain()
            await reader.read()  # until the client closes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(*replies: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[tuple[Server, str]]:
    server = Server(list(replies))
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/object"
    finally:
        listening.close()


async def read_all(response: aiohttp.ClientResponse) -> tuple[bytes, int]:
    """The body, piece by piece as the stream reads it, and the largest piece."""
    pieces: list[bytes] = []
    while True:
        piece, _ = await response.content.readchunk()
        if not piece:
            return b"".join(pieces), max(map(len, pieces))
        pieces.append(piece)


def test_a_plain_body_arrives_whole_and_its_connection_is_reused() -> None:
    asyncio.run(a_plain_body_arrives_whole_and_its_connection_is_reused())


async def a_plain_body_arrives_whole_and_its_connection_is_reused() -> None:
    async with serving(reply(BODY), reply(b"second")) as (server, url), \
            aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url) as response:
            transport = response.connection.protocol.transport  # type: ignore[union-attr]
            feeder = feed_body_unparsed(response)
            assert feeder is not None
            feeder.read_in(4 * MiB)
            # the socket is paused once the reader holds a read, not past aiohttp's marks (a
            # pause per read)
            assert response.content.get_read_buffer_limits() == (2 * MiB, 4 * MiB)
            body, _ = await read_all(response)
            assert body == BODY
            assert transport.max_size == 256 * 1024  # type: ignore[union-attr]  # asyncio's, restored for the next request
        async with session.get(url) as response:
            assert await response.read() == b"second"
        assert server.connections == 1


def test_socket_reads_are_larger_while_the_body_lasts() -> None:
    asyncio.run(socket_reads_are_larger_while_the_body_lasts())


async def socket_reads_are_larger_while_the_body_lasts() -> None:
    async with serving(reply(BODY)) as (_, url), aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(url) as response:
        await asyncio.sleep(0.2)  # the body waits in the socket, more than 256 KiB of it
        feeder = feed_body_unparsed(response)
        assert feeder is not None
        feeder.read_in(MiB)
        body, largest = await read_all(response)
    assert body == BODY
    assert largest > 256 * 1024


@pytest.mark.parametrize("send", [chunked(BODY), reply(BODY, headers="Content-Encoding: gzip\r\n")],
                         ids=["chunked", "content-encoding"])
def test_a_body_the_parser_must_decode_is_left_to_it(send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
    asyncio.run(a_body_the_parser_must_decode_is_left_to_it(send))


async def a_body_the_parser_must_decode_is_left_to_it(send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
    async with serving(send) as (_, url), aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(url) as response:
        assert feed_body_unparsed(response) is None
        body, _ = await read_all(response)
    assert body == BODY  # the "gzip" body is passed through undecoded, as aiobotocore asks


def test_a_reply_longer_than_it_announced_fails_the_read() -> None:
    asyncio.run(a_reply_longer_than_it_announced_fails_the_read())


async def a_reply_longer_than_it_announced_fails_the_read() -> None:
    async with serving(reply(BODY, announced=len(BODY) - 10), reply(b"second")) as (server, url), \
            aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url) as response:
            assert feed_body_unparsed(response) is not None
            with pytest.raises(aiohttp.ClientPayloadError, match="more than the"):
                await read_all(response)
        async with session.get(url) as response:  # not on the connection that had the extra bytes
            assert await response.read() == b"second"
        assert server.connections == 2


def test_a_body_cut_short_fails_the_read() -> None:
    asyncio.run(a_body_cut_short_fails_the_read())


async def a_body_cut_short_fails_the_read() -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        await reply(BODY[:MiB], announced=len(BODY))(writer)
        writer.close()

    async with serving(cut) as (_, url), aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(url) as response:
        assert feed_body_unparsed(response) is not None
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_all(response)


def test_reads_shrink_back_with_the_size_the_stream_is_read_in() -> None:
    asyncio.run(reads_shrink_back_with_the_size_the_stream_is_read_in())


async def reads_shrink_back_with_the_size_the_stream_is_read_in() -> None:
    """A stream whose client paused is read in small chunks again: its reads and what its reader
    holds shrink with them, so a paused stream holds no more than with asyncio's reads."""
    async with serving(reply(BODY)) as (_, url), aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(url) as response:
        transport = response.connection.protocol.transport  # type: ignore[union-attr]
        aiohttps = response.content.get_read_buffer_limits()
        feeder = feed_body_unparsed(response)
        assert feeder is not None
        feeder.read_in(4 * MiB)
        assert transport.max_size == 4 * MiB  # type: ignore[union-attr]
        assert response.content.get_read_buffer_limits() == (2 * MiB, 4 * MiB)
        feeder.read_in(256 * 1024)
        assert transport.max_size == 256 * 1024  # type: ignore[union-attr]
        assert response.content.get_read_buffer_limits() == aiohttps
        body, _ = await read_all(response)
    assert body == BODY


def test_bytes_past_the_body_sent_later_never_answer_the_next_request() -> None:
    asyncio.run(bytes_past_the_body_sent_later_never_answer_the_next_request())


async def bytes_past_the_body_sent_later_never_answer_the_next_request() -> None:
    """A store that sends more than it announced after a pause (the feeder has handed the
    connection back by then): the extra bytes, even a whole forged reply, must not be taken for
    the reply to the next request on that pooled connection."""
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"

    async def then_more(writer: asyncio.StreamWriter) -> None:
        await reply(BODY)(writer)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"x" * len(BODY) + forged)  # what aiohttp's parser, left mid-body, still expects

    async with serving(then_more, reply(b"second")) as (_, url), \
            aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url) as response:
            feeder = feed_body_unparsed(response)
            assert feeder is not None
            body, _ = await read_all(response)
            assert body == BODY
        await asyncio.sleep(0.6)
        async with session.get(url) as response:
            assert await response.read() == b"second"
