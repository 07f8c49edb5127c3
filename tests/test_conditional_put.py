"""`If-None-Match: *` on stores that do not implement it, or refuse it without naming it.

objstore-offload sends the original of each media with If-None-Match, to save a lookup. A
store that answers 501 Not Implemented must not fail the offload: the backend looks first from
then on. A 412 that does not name the condition (s3fs then reports it as a generic error) must
still read as "there already". A proxy in front of moto plays such a store.
"""

from __future__ import annotations

import http.client
import http.server
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.front_proxy import FrontProxy, running
from servers.moto import MotoServer
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.files import write
from tests.support.s3 import s3_client

ANSWERS = {
    501: b"<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is "
         b"not implemented</Message></Error>",
    412: b"<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified "
         b"did not hold</Message></Error>",
}


class ConditionRefusingProxy(FrontProxy):
    """Forwards every request to moto, but answers a PUT with If-None-Match itself."""

    def __init__(self, upstream: str, status: int) -> None:
        self.status = status
        self.conditional_puts = 0
        super().__init__(upstream, ProxyHandler)


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ConditionRefusingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "PUT" and "If-None-Match" in self.headers:
            self.server.conditional_puts += 1
            self._reply(self.server.status, {"Content-Type": "application/xml"}, ANSWERS[self.server.status])
            return
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        reply = upstream.getresponse()
        data = reply.read()
        headers = {k: v for k, v in reply.getheaders() if k.lower() not in ("content-length", "connection")}
        self._reply(reply.status, headers, data)
        upstream.close()

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=[501, 412])
def proxy(request: pytest.FixtureRequest, moto: MotoServer) -> Iterator[ConditionRefusingProxy]:
    with running(ConditionRefusingProxy(moto.endpoint_url, request.param)) as server:
        yield server


def test_a_store_without_if_none_match_still_gets_the_file_once(
    proxy: ConditionRefusingProxy, moto: MotoServer, bucket: str, tmp_path: Path,
    open_store: Callable[[dict[str, Any]], ObjectStore],
) -> None:
    store = open_store({"bucket": bucket, "endpoint_url": proxy.endpoint_url})
    data = os.urandom(50_000)
    local = write(tmp_path / "original", data)
    media = "local_content/co/nd/itional"

    if proxy.status == 412:  # the store says "there already", without naming the condition
        with pytest.raises(FileExistsError):
            run(store.put_file(local, media, if_absent=True))
        return

    assert run(store.put_file(local, media, if_absent=True)) is not None  # 501: looked, then put
    assert s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=media)["Body"].read() == data
    with pytest.raises(FileExistsError):  # there now: found by the lookup
        run(store.put_file(local, media, if_absent=True))
    run(store.put_file(write(tmp_path / "other", b"x"), "local_content/ot/he/r", if_absent=True))
    assert proxy.conditional_puts == 1  # asked once, then never again
