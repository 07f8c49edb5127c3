"""A resumed read of a paused S3 stream is a ranged GET (`bytes=offset-`). A store, or a cache
or proxy in front of it, that ignores Range answers 200 with the whole object: taken as the
rest, it would splice the object's start after the bytes already sent (a copy that is
neither the object nor cut short, as long as the reader stops at the object's size)."""

from __future__ import annotations

import http.client
import http.server
import os
from collections.abc import Iterator

import pytest

from servers.front_proxy import FrontProxy, running
from servers.moto import MotoServer
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.s3 import s3_client

MiB = 1024 * 1024


class RangeIgnoringHandler(http.server.BaseHTTPRequestHandler):
    """Forwards each GET to moto without its Range header, and answers with moto's reply."""

    protocol_version = "HTTP/1.1"
    server: FrontProxy

    def do_GET(self) -> None:
        host = self.server.upstream.hostname or "127.0.0.1"
        upstream = http.client.HTTPConnection(host, self.server.upstream.port, timeout=30)
        upstream.request("GET", self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "range"})
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def range_ignoring_proxy(moto: MotoServer) -> Iterator[FrontProxy]:
    with running(FrontProxy(moto.endpoint_url, RangeIgnoringHandler)) as server:
        yield server


def test_a_resumed_read_answered_with_the_whole_object_fails(
        moto: MotoServer, range_ignoring_proxy: FrontProxy, bucket: str) -> None:
    path = "local_content/ra/ng/eignored"
    data = os.urandom(3 * MiB)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    store = ObjectStore(parse_store_config({
        "bucket": bucket, "endpoint_url": range_ignoring_proxy.endpoint_url, "retries": 0}))

    async def paused_read() -> bytes:
        stream = await store.open_read(path)
        assert stream is not None
        got = await stream.read(64 * 1024)
        await stream.suspend()  # what the provider's responder does while its client is paused
        try:
            while len(got) < len(data) and (chunk := await stream.read(MiB)):
                got += chunk
        finally:
            await stream.close()
            await store.close()
        return got

    with pytest.raises(OSError, match="answered the read of bytes 65536-3145727/3145728 with the whole object"):
        got = run(paused_read())
        assert got == data[:len(got)], "the resumed read spliced other bytes after those already read"
