"""An HTTP proxy on 127.0.0.1 that plays an S3-compatible store having a bad day.

Put it in front of a store on the loopback interface (moto, Ceph RGW, MinIO...) and point
the code under test at `endpoint_url`. Each fault can be switched on and off while requests
flow (`set`, or `schedule` to switch after a number of requests):

- `rate_503`: that share of requests is answered `503 SlowDown` (S3's XML error body), not
  forwarded; `fail_first=N`: the first N requests about each object (each part) are.
- `rate_reset`: that share of connections is reset (RST), half of them in the middle of the
  request body (the store never sees the request), half after the store answered and before
  the reply reaches the client (the store did the work; the client does not know).
- `flip_byte`: one byte of every PutObject / UploadPart body is flipped on its way to the
  store, which stores the wrong bytes and answers with their ETag.
- `wrong_etag`: PutObject and CompleteMultipartUpload are answered with a wrong ETag; the
  store keeps the right bytes. `blank_etag`: they are answered with an empty ETag (Ceph RGW
  has answered a CompleteMultipartUpload so, under load). `opaque_etags`: every ETag of an object (in the replies to
  uploads, HEAD, GET and listings) is one that is not its MD5, the same each time, as a store
  encrypting with SSE-KMS gives.
- `deny="AccessDenied"` (or `InvalidAccessKeyId`, ...): every request is answered 403 with
  that code (credentials revoked); `no_bucket`: every request gets 404 NoSuchBucket.
- `silent`: requests are read and never answered; `stall`: each reply sends half its body,
  then nothing. Held connections are reset when the fault is switched off or the proxy stops.
- `throttle=N`: a slow store, not a silent one: each request body is taken from the client,
  and each reply body sent to it, at N bytes/s (per connection), so that an upload holds its
  connection for its size over N. Every request is answered in the end; a latency alone does
  not do that (bench/latency_proxy.py delays bytes, it does not limit their rate).
- `gcs_generation_match`: not a fault but what GCS does and gcp-storage-emulator does not
  (it ignores the condition on downloads): a GET carrying `ifGenerationMatch` is answered
  412 when the object's generation is another (the proxy asks the store for its metadata
  first), 404 when there is no object. For a test that an object replaced mid-stream fails a
  GCS stream; not atomic (a replacement between the two requests goes unseen).
- `ignore_conditional`: a request's If-None-Match is dropped before the store sees it, as a
  store that does not know the header (S3 before 2024, many S3-compatible ones) overwrites.
- `match`: a regular expression; the faults apply only to requests whose path it matches
  (e.g. one object's key, for a bucket policy that denies that object alone).

Faults are deterministic given `seed`: whether a request gets one is drawn from a hash of the
seed, the object it is about (key and part number, see `Request.identity`) and how many
requests about it came before, not from arrival order, so concurrent clients see the same
faults run after run.

Run it in a thread of a test (`with FaultProxy(target, Faults(rate_503=0.1)) as proxy:`), or as a
process of its own so that a benchmark does not share its GIL:

    python -m synapse_objstore.testing.fault_proxy --target 127.0.0.1:PORT --rate-503 0.1 --rate-reset 0.05

prints `LISTENING <port>` once it accepts connections and stops on SIGTERM. `FaultProxyProcess`
runs it so and switches its faults over HTTP (`POST /_fault_proxy/faults` with the changes as
JSON, `GET /_fault_proxy/stats`: no S3 bucket can be named `_fault_proxy`). Only the standard
library is used. Requests and replies are held in memory whole, so it suits test-sized objects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from typing_extensions import Self

CONTROL_PREFIX = "/_fault_proxy/"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_HEAD = 64 * 1024
PACE_CHUNK = 64 * 1024  # the step in which a throttled body moves
# Headers that describe one hop, not the message: never forwarded as they came.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "expect", "content-length"})
_ETAG_IN_XML = re.compile(rb"<ETag>(.*?)</ETag>")


@dataclass(frozen=True)
class Faults:
    """What the proxy does to the traffic. The default forwards everything untouched."""

    rate_503: float = 0.0
    rate_reset: float = 0.0
    fail_first: int = 0
    flip_byte: bool = False
    wrong_etag: bool = False
    blank_etag: bool = False
    opaque_etags: bool = False
    deny: str | None = None
    no_bucket: bool = False
    silent: bool = False
    stall: bool = False
    gcs_generation_match: bool = False
    ignore_conditional: bool = False  # If-None-Match dropped: a store that overwrites regardless
    throttle: int = 0  # bytes/s of each body, each way; 0: as fast as they come
    match: str | None = None

    def __post_init__(self) -> None:
        for name in ("rate_503", "rate_reset"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.fail_first < 0:
            raise ValueError("fail_first must not be negative")
        if self.throttle < 0:
            raise ValueError("throttle must not be negative")
        if self.match is not None:
            re.compile(self.match)

    @property
    def holds(self) -> bool:
        """Whether requests are held unanswered (silent) or replies left unfinished (stall)."""
        return self.silent or self.stall


@dataclass
class Request:
    method: str
    target: str  # as on the request line: path and query
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    @property
    def identity(self) -> str:
        """What the request is about: its object (the key, path-style: `/bucket/key`) and
        part number, whatever the bucket is called (tests make one of a random name each)
        and whatever the method (a HEAD, then a PUT of one object are its 1st and 2nd)."""
        key = self.path.lstrip("/").partition("/")[2]
        part = self.query.get("partNumber", [""])[0]
        return f"{key} {part}"

    @property
    def is_put_body(self) -> bool:
        """PutObject or UploadPart (not a copy): a request that carries object content."""
        return self.method == "PUT" and self.header("x-amz-copy-source") is None and "/" in self.path.strip("/")

    @property
    def is_put_object(self) -> bool:
        return self.is_put_body and "uploadId" not in self.query

    @property
    def is_complete_multipart(self) -> bool:
        return self.method == "POST" and "uploadId" in self.query

    @property
    def wants_close(self) -> bool:
        connection = (self.header("connection") or "").lower()
        return connection == "close" or (self.version == "HTTP/1.0" and connection != "keep-alive")


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def replace_header(self, name: str, value: str) -> None:
        self.headers = [(k, value if k.lower() == name.lower() else v) for k, v in self.headers]


class Reset(Exception):
    """Reset the client's connection now."""


def error_reply(status: int, code: str, message: str, resource: str) -> Reply:
    """An S3 error reply, with the XML body S3 sends."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>fault-proxy</RequestId></Error>").encode()
    reasons = {403: "Forbidden", 404: "Not Found", 503: "Slow Down"}
    return Reply(status, reasons.get(status, "Error"), [("Content-Type", "application/xml"),
                                                        ("x-amz-request-id", "fault-proxy")], body)


def _json_reply(status: int, reason: str, message: str) -> Reply:
    """An error reply with the JSON body of GCS's JSON API."""
    body = json.dumps({"error": {"code": status, "message": message}}).encode()
    return Reply(status, reason, [("Content-Type", "application/json")], body)


class FaultEngine:
    """The faults in force, the deterministic draws, the schedule and the counts. Thread-safe:
    the proxy's loop reads it, a test's thread changes it."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self._lock = threading.Lock()
        self._faults = faults
        self._seed = seed
        self._seen: Counter[str] = Counter()
        self._streaks: Counter[str] = Counter()
        self._scheduled: list[tuple[int, dict[str, Any]]] = []
        self._stats: Counter[str] = Counter()
        self.changed = asyncio.Event()  # set (on the loop) whenever the faults change

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set(self, **changes: Any) -> Faults:
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            return self._faults

    def schedule(self, after_requests: int, **changes: Any) -> None:
        """Apply `changes` to the requests after the first `after_requests` (at once if they came)."""
        dataclasses.replace(self.faults, **changes)  # refuse a bad change now, not later
        with self._lock:
            self._scheduled.append((after_requests, changes))
            self._apply_due()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def count(self, name: str, request: Request | None = None) -> None:
        """Count one `name`; with the request of a storm fault (503, reset), also its object's run
        of storm faults in a row, whose longest is the stat `most faults in a row`."""
        with self._lock:
            self._stats[name] += 1
            if request is not None:
                streak = self._streaks[request.identity] = self._streaks[request.identity] + 1
                self._stats["most faults in a row"] = max(self._stats["most faults in a row"], streak)

    def answered(self, request: Request) -> None:
        """The store's reply to the request reached the client: its object's run of faults ends."""
        with self._lock:
            self._streaks.pop(request.identity, None)

    def begin(self, request: Request) -> tuple[Faults, int]:
        """Count one request; the faults that apply to it and how many requests about its object
        came before it, this one included."""
        with self._lock:
            self._apply_due()
            self._stats["requests"] += 1
            self._stats[f"requests {request.method}"] += 1
            faults = self._faults
            self._seen[request.identity] += 1
            nth = self._seen[request.identity]
        if faults.match is not None and not re.search(faults.match, request.path):
            faults = Faults()
        return faults, nth

    def draw(self, fault: str, request: Request, nth: int) -> float:
        """A number in [0, 1) fixed by the seed, the fault, the object and `nth`."""
        digest = hashlib.sha256(f"{self._seed}|{fault}|{request.identity}|{nth}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _apply_due(self) -> None:
        due = [changes for after, changes in self._scheduled if self._stats["requests"] >= after]
        self._scheduled = [(after, changes) for after, changes in self._scheduled
                           if self._stats["requests"] < after]
        for changes in due:
            self._faults = dataclasses.replace(self._faults, **changes)


class ProxyServer:
    """The proxy on an asyncio loop: one connection to the store per request."""

    def __init__(self, target: tuple[str, int], engine: FaultEngine) -> None:
        self.target = target
        self.engine = engine
        self._stopping = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port, backlog=1024,
                                                  limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, and reset every connection still open (held ones included)."""
        self._stopping.set()
        self.engine.changed.set()
        if self._server is not None:
            self._server.close()
        for task, writer in list(self._connections.items()):
            reset(writer)
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await self._serve(reader, writer)
        finally:
            del self._connections[task]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self._stopping.is_set():
                request = await read_request_head(reader)
                if request is None:
                    break
                if request.path.startswith(CONTROL_PREFIX):
                    request.body = await read_body(reader, request.header("content-length"),
                                                   request.header("transfer-encoding"))
                    write_reply(writer, self._control(request))
                else:
                    await self._proxy(request, reader, writer)
                await writer.drain()
                if request.wants_close:
                    break
        except Reset:
            reset(writer)
            return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            reset(writer)
            return
        writer.close()

    async def _proxy(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine = self.engine
        faults, nth = engine.begin(request)
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        length, chunked = request.header("content-length"), request.header("transfer-encoding")
        resetting = faults.rate_reset and engine.draw("reset", request, nth) < faults.rate_reset
        if resetting and engine.draw("reset-when", request, nth) < 0.5:
            engine.count("reset mid-request", request)
            if length and int(length) > 1:
                await reader.readexactly(int(length) // 2)
            raise Reset
        request.body = await read_body(reader, length, chunked, rate=faults.throttle)
        if faults.silent:
            engine.count("silenced")
            await self._hold(lambda: engine.faults.silent)
            raise Reset
        refusal = self._refusal(request, faults, nth)
        if refusal is None and faults.gcs_generation_match and "ifGenerationMatch" in request.query:
            refusal = await self._generation_mismatch(request)
        if refusal is not None:
            write_reply(writer, refusal, head_only=request.method == "HEAD")
            return
        if faults.flip_byte and request.is_put_body and request.body:
            position = int(engine.draw("flip-at", request, nth) * len(request.body))
            body = bytearray(request.body)
            body[position] ^= 0xFF
            request.body = bytes(body)
            engine.count("flipped")
        if faults.ignore_conditional and request.header("if-none-match") is not None:
            request.headers = [(k, v) for k, v in request.headers if k.lower() != "if-none-match"]
            engine.count("condition ignored")
        reply = await self._forward(request)
        if resetting:
            engine.count("reset before reply", request)
            raise Reset
        if (faults.wrong_etag or faults.blank_etag or faults.opaque_etags) and 200 <= reply.status < 300:
            self._falsify_etag(request, reply, everywhere=faults.opaque_etags,
                               replace=(lambda _: '""') if faults.blank_etag else wrong_etag)
        if faults.stall and reply.body and request.method != "HEAD":
            engine.count("stalled")
            write_reply(writer, reply, body_part=len(reply.body) // 2)
            await writer.drain()
            await self._hold(lambda: engine.faults.stall)
            raise Reset
        if faults.throttle and (request.body or reply.body):
            engine.count("throttled")
        if faults.throttle and reply.body and request.method != "HEAD":
            await write_paced_reply(writer, reply, faults.throttle)
        else:
            write_reply(writer, reply, head_only=request.method == "HEAD")
        engine.answered(request)

    def _refusal(self, request: Request, faults: Faults, nth: int) -> Reply | None:
        """The error the proxy answers itself with, if any."""
        engine = self.engine
        if faults.deny is not None:
            engine.count("denied")
            return error_reply(403, faults.deny, "Access Denied", request.path)
        if faults.no_bucket:
            engine.count("no bucket")
            return error_reply(404, "NoSuchBucket", "The specified bucket does not exist", request.path)
        if nth <= faults.fail_first or (faults.rate_503 and engine.draw("503", request, nth) < faults.rate_503):
            engine.count("slowdown", request)
            return error_reply(503, "SlowDown", "Please reduce your request rate.", request.path)
        return None

    async def _generation_mismatch(self, request: Request) -> Reply | None:
        """GCS's answer to a request whose `ifGenerationMatch` is not the object's generation:
        412 (404 for no object), or None when it is, from the object's metadata."""
        wanted = request.query["ifGenerationMatch"][0]
        metadata_path = request.path.removeprefix("/download")  # a media download's object
        metadata = await self._forward(Request("GET", metadata_path, "HTTP/1.1",
                                               [(k, v) for k, v in request.headers if k.lower() == "host"]))
        if metadata.status == 404:
            return _json_reply(404, "Not Found", "No such object")
        if metadata.status == 200 and str(json.loads(metadata.body).get("generation")) == wanted:
            return None
        self.engine.count("generation mismatch", request)
        return _json_reply(412, "Precondition Failed", "At least one of the pre-conditions you specified did not hold.")

    def _falsify_etag(self, request: Request, reply: Reply, everywhere: bool, replace: Callable[[str], str]) -> None:
        """Replace the ETags of an upload's reply (and, `everywhere`, of any reply but an
        UploadPart's, whose ETags the client sends back) by `replace`'s, the same for the same."""
        if request.is_put_body and not request.is_put_object:
            return
        if reply.header("etag") and (everywhere or request.is_put_object):
            reply.replace_header("ETag", replace(reply.header("etag") or ""))
            self.engine.count("wrong etag")
        elif (everywhere or request.is_complete_multipart) and _ETAG_IN_XML.search(reply.body):
            reply.body = _ETAG_IN_XML.sub(lambda m: b"<ETag>" + replace(m.group(1).decode()).encode() + b"</ETag>",
                                          reply.body)
            self.engine.count("wrong etag")

    async def _hold(self, still: Any) -> None:
        """Wait until `still()` is false or the proxy stops."""
        while still() and not self._stopping.is_set():
            self.engine.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.engine.changed.wait(), 0.2)

    async def _forward(self, request: Request) -> Reply:
        """Send the request to the store on a connection of its own; its whole reply."""
        self.engine.count("forwarded")
        up_reader, up_writer = await asyncio.open_connection(*self.target, limit=MAX_HEAD)
        try:
            head = [f"{request.method} {request.target} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in request.headers if k.lower() not in HOP_HEADERS]
            if request.body or request.method in ("PUT", "POST"):
                head.append(f"Content-Length: {len(request.body)}")
            head.append("Connection: close")
            up_writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.body)
            await up_writer.drain()
            while True:
                reply = await read_reply_head(up_reader)
                if reply.status >= 200:
                    break
            if request.method != "HEAD" and reply.status not in (204, 304):
                reply.body = await read_body(up_reader, reply.header("content-length"),
                                             reply.header("transfer-encoding"), until_eof=True)
            return reply
        finally:
            up_writer.close()

    def _control(self, request: Request) -> Reply:
        """The control API of a proxy running as a process."""
        action = request.path[len(CONTROL_PREFIX):]
        try:
            if action == "stats" and request.method == "GET":
                data: Any = self.engine.stats()
            elif action == "faults" and request.method == "POST":
                data = dataclasses.asdict(self.engine.set(**json.loads(request.body or b"{}")))
                self.engine.changed.set()
            elif action == "schedule" and request.method == "POST":
                order = json.loads(request.body)
                self.engine.schedule(int(order["after_requests"]), **order["changes"])
                data = {"scheduled": order}
            else:
                return Reply(404, "Not Found", [("Content-Type", "text/plain")], b"no such control action\n")
        except (TypeError, ValueError, KeyError, re.error) as error:
            return Reply(400, "Bad Request", [("Content-Type", "text/plain")], f"{error}\n".encode())
        return Reply(200, "OK", [("Content-Type", "application/json")], json.dumps(data).encode())


# ---------------------------------------------------------------- HTTP/1.1 framing


async def read_request_head(reader: asyncio.StreamReader) -> Request | None:
    """The next request's line and headers; None when the client closed between requests."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            raise
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    return Request(method, target, version, _headers(lines[1:]))


async def read_reply_head(reader: asyncio.StreamReader) -> Reply:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    _, status, *reason = lines[0].split(" ", 2)
    return Reply(int(status), reason[0] if reason else "", _headers(lines[1:]))


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return headers


async def read_body(reader: asyncio.StreamReader, length: str | None, transfer_encoding: str | None,
                    until_eof: bool = False, rate: int = 0) -> bytes:
    """A message body by its Content-Length, chunked encoding, or (a reply) the end of the
    connection; with `rate`, a request body read no faster than that many bytes/s."""
    pace = Pace(rate)
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(await pace.read(reader, size))
            await reader.readexactly(2)
    if length is not None:
        return await pace.read(reader, int(length))
    return await reader.read() if until_eof else b""


class Pace:
    """Bytes moved no faster than `rate` bytes/s (0: unlimited), counted from its creation, in
    PACE_CHUNK steps: the socket's buffers fill and TCP holds the sender back, as on a slow link."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._moved = 0

    async def read(self, reader: asyncio.StreamReader, size: int) -> bytes:
        if not self._rate:
            return await reader.readexactly(size)
        parts = []
        while size:
            part = await reader.readexactly(min(size, PACE_CHUNK))
            parts.append(part)
            size -= len(part)
            await self.moved(len(part))
        return b"".join(parts)

    async def moved(self, count: int) -> None:
        """Count `count` bytes moved; wait until the rate allows them."""
        self._moved += count
        wait = self._start + self._moved / self._rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


def write_reply(writer: asyncio.StreamWriter, reply: Reply, head_only: bool = False,
                body_part: int | None = None) -> None:
    """Write a reply. `head_only` (a HEAD): headers as the store sent them, no body; `body_part`:
    announce the whole body, send only that many bytes of it."""
    head = [f"HTTP/1.1 {reply.status} {reply.reason}"]
    if head_only:
        head += [f"{k}: {v}" for k, v in reply.headers if k.lower() not in HOP_HEADERS - {"content-length"}]
    else:
        head += [f"{k}: {v}" for k, v in reply.headers if k.lower() not in HOP_HEADERS]
        head.append(f"Content-Length: {len(reply.body)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(reply.body if body_part is None else reply.body[:body_part])


async def write_paced_reply(writer: asyncio.StreamWriter, reply: Reply, rate: int) -> None:
    """Write a reply whose body goes out at `rate` bytes/s."""
    write_reply(writer, reply, body_part=0)
    pace = Pace(rate)
    for start in range(0, len(reply.body), PACE_CHUNK):
        part = reply.body[start:start + PACE_CHUNK]
        writer.write(part)
        await writer.drain()
        await pace.moved(len(part))


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset, as a crashed server or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def wrong_etag(etag: str) -> str:
    """Another ETag of the same form (quoted, with any "-N" part count kept)."""
    bare = etag.replace("&quot;", "").strip('"')
    digest, dash, parts = bare.partition("-")
    other = hashlib.md5(f"not {digest}".encode()).hexdigest()
    return f'"{other}{dash}{parts}"'


def parse_target(target: str) -> tuple[str, int]:
    """HOST:PORT or http://HOST:PORT of a store on the loopback interface."""
    parts = urlsplit(target if "://" in target else f"http://{target}")
    if parts.scheme != "http" or parts.hostname not in LOOPBACK or parts.port is None:
        raise ValueError(f"the target must be http://HOST:PORT on the loopback interface, not {target!r}")
    return parts.hostname, parts.port


# ---------------------------------------------------------------- running it


class FaultProxy:
    """The proxy in a thread of this process, on a loop of its own.

        with FaultProxy(moto.endpoint_url, Faults(rate_503=0.1), seed=1) as proxy:
            ... proxy.endpoint_url ...
            proxy.set(deny="AccessDenied")
    """

    def __init__(self, target: str, faults: Faults | None = None, seed: int = 0, port: int = 0) -> None:
        self._target = parse_target(target)
        self._engine = FaultEngine(faults or Faults(), seed)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ProxyServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not running"
        return self._server.port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> Faults:
        return self._engine.faults

    def start(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._engine.changed = asyncio.Event()
            self._server = ProxyServer(self._target, self._engine)
            try:
                loop.run_until_complete(self._server.start(self._port))
            except BaseException as error:  # raised again in the caller of start()
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._server.stop())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = self._thread = None

    def set(self, **changes: Any) -> Faults:
        """Change faults now, e.g. `set(rate_503=0, deny="AccessDenied")`."""
        faults = self._engine.set(**changes)
        self._wake()
        return faults

    def schedule(self, after_requests: int, **changes: Any) -> None:
        """Change faults once that many requests have been seen."""
        self._engine.schedule(after_requests, **changes)

    def stats(self) -> dict[str, int]:
        """Counts: `requests`, `requests PUT`..., `forwarded`, one per fault injected (`slowdown`,
        `reset mid-request`, `reset before reply`, `flipped`, `wrong etag`, `denied`, `no bucket`,
        `silenced`, `stalled`, `throttled`: a body either way), and `most faults in a row`: the
        longest run of 503s and resets that requests about one object met (a client with fewer
        retries gives up on it)."""
        return self._engine.stats()

    def _wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._engine.changed.set)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class FaultProxyProcess:
    """The proxy in a child process of its own (stopped by its PID), controlled over HTTP."""

    def __init__(self, target: str, faults: Faults | None = None, seed: int = 0, log: Path | None = None,
                 python: str = sys.executable) -> None:
        parse_target(target)
        self._argv = [python, "-m", "synapse_objstore.testing.fault_proxy", "--target", target, "--seed", str(seed)]
        self._faults = faults or Faults()
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxyProcess:
        err = self._log.open("ab") if self._log is not None else subprocess.DEVNULL
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            self._process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=err, env=env,
                                             start_new_session=True)
        finally:
            if self._log is not None:
                err.close()  # type: ignore[union-attr]
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the fault proxy did not start{f' (see {self._log})' if self._log else ''}")
        self.port = int(line.split()[1])
        self.set(**dataclasses.asdict(self._faults))
        return self

    def set(self, **changes: Any) -> dict[str, Any]:
        return dict(self._call("POST", "faults", changes))

    def schedule(self, after_requests: int, **changes: Any) -> None:
        self._call("POST", "schedule", {"after_requests": after_requests, "changes": changes})

    def stats(self) -> dict[str, int]:
        return dict(self._call("GET", "stats"))

    def _call(self, method: str, action: str, data: Mapping[str, Any] | None = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.endpoint_url + CONTROL_PREFIX + action, data=body, method=method)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


async def _serve(target: tuple[str, int], faults: Faults, seed: int, port: int) -> None:
    engine = FaultEngine(faults, seed)
    server = ProxyServer(target, engine)
    await server.start(port)
    print(f"LISTENING {server.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synapse_objstore.testing.fault_proxy",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="the store: HOST:PORT or http://HOST:PORT on the loopback")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, on 127.0.0.1 (default: a free one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-503", type=float, default=0.0, help="share of requests answered 503 SlowDown")
    parser.add_argument("--rate-reset", type=float, default=0.0, help="share of connections reset")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N requests about each object 503")
    parser.add_argument("--flip-byte", action="store_true", help="flip a byte of each PUT body")
    parser.add_argument("--wrong-etag", action="store_true", help="answer uploads with a wrong ETag")
    parser.add_argument("--opaque-etags", action="store_true", help="give every object an ETag that is not its MD5")
    parser.add_argument("--deny", metavar="CODE", help="answer everything 403 with this code, e.g. AccessDenied")
    parser.add_argument("--no-bucket", action="store_true", help="answer everything 404 NoSuchBucket")
    parser.add_argument("--silent", action="store_true", help="never answer")
    parser.add_argument("--stall", action="store_true", help="send half of each reply body, then nothing")
    parser.add_argument("--gcs-generation-match", action="store_true",
                        help="answer a GET whose ifGenerationMatch is not the object's generation 412, as GCS does")
    parser.add_argument("--throttle", type=int, default=0, metavar="BYTES_PER_S",
                        help="carry each request and reply body at that many bytes/s")
    parser.add_argument("--match", metavar="REGEX", help="apply the faults only to request paths matching REGEX")
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.target)
        faults = Faults(rate_503=args.rate_503, rate_reset=args.rate_reset, fail_first=args.fail_first,
                        flip_byte=args.flip_byte, wrong_etag=args.wrong_etag, opaque_etags=args.opaque_etags,
                        deny=args.deny,
                        no_bucket=args.no_bucket, silent=args.silent, stall=args.stall,
                        gcs_generation_match=args.gcs_generation_match, throttle=args.throttle,
                        match=args.match)
    except (ValueError, re.error) as error:
        parser.error(str(error))
    asyncio.run(_serve(target, faults, args.seed, args.port))


if __name__ == "__main__":
    main()
