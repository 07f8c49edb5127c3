"""A store whose connection drops or stalls in the middle of a body: the fetch fails, never a
short file, and never hangs.

The S3 backend reads the body's pieces straight from aiohttp (see `S3BodyStream`), past the
length check of aiobotocore's own `read` and with its own read timeout. A proxy in front of
moto forwards each GET but sends only half of the body it announced, then closes the
connection, or holds it open and sends nothing more.
"""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.front_proxy import FrontProxy, running
from servers.moto import MotoServer
from synapse_objstore.errors import ObjectStoreError
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.synapse_harness import load_provider, local_media, start_streaming, wait_for
from tests.support.s3 import s3_client

MiB = 1024 * 1024


class BodyCuttingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FrontProxy

    def do_GET(self) -> None:
        data = self.send_half()
        if data is not None:
            self.close_connection = True

    def send_half(self) -> bytes | None:
        """Forward the GET; of a 200's body send only the first half. The body, or None."""
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=30)
        upstream.request("GET", self.path, headers=dict(self.headers))
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if reply.status == 200 else data)
        self.wfile.flush()
        return data if reply.status == 200 else None

    def log_message(self, format: str, *args: object) -> None:
        pass


class BodyStallingHandler(BodyCuttingHandler):
    """Sends half of a body, then nothing, with the connection open until the test ends."""

    def do_GET(self) -> None:
        if self.send_half() is not None:
            ending.wait(60)
        self.close_connection = True


ending = threading.Event()


@pytest.fixture
def cutting_proxy(moto: MotoServer) -> Iterator[FrontProxy]:
    with running(FrontProxy(moto.endpoint_url, BodyCuttingHandler)) as server:
        yield server


@pytest.fixture
def stalling_proxy(moto: MotoServer) -> Iterator[FrontProxy]:
    ending.clear()
    try:
        with running(FrontProxy(moto.endpoint_url, BodyStallingHandler)) as server:
            yield server
            ending.set()
    finally:
        ending.set()


def test_a_body_cut_short_fails_the_fetch(reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer,
                                          cutting_proxy: FrontProxy, bucket: str, media_store: Path) -> None:
    provider = load_provider(reactor, media_store, {
        "bucket": bucket, "endpoint_url": cutting_proxy.endpoint_url, "check_on_startup": False, "retries": 0,
    })
    path, info = local_media("cutshortmedia")
    data = os.urandom(3 * MiB)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    consumer = RecordingConsumer()

    with pytest.raises(ObjectStoreError, match="could not stream"):
        wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))
    assert len(consumer.data) < len(data) and data.startswith(consumer.data)


def test_a_body_that_stalls_fails_the_fetch_within_the_read_timeout(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, stalling_proxy: FrontProxy, bucket: str,
    media_store: Path,
) -> None:
    provider = load_provider(reactor, media_store, {
        "bucket": bucket, "endpoint_url": stalling_proxy.endpoint_url, "check_on_startup": False, "retries": 0,
        "read_timeout": 1,
    })
    path, info = local_media("stalledmedia")
    data = os.urandom(3 * MiB)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    consumer = RecordingConsumer()

    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match=r"could not stream.*no data from the store for 1 s"):
        wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))
    # The bound is the feature: the read timeout (1 s), with a margin for a loaded machine; a
    # stall nothing timed would hang until wait_for's 30 s.
    assert 1 <= time.monotonic() - started < 1 + 9
    assert len(consumer.data) < len(data) and data.startswith(consumer.data)
