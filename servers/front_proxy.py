"""A small HTTP server on 127.0.0.1 in front of moto, playing a store that misbehaves.

A test gives the handler class (a `BaseHTTPRequestHandler` whose methods reach the upstream
through `self.server.upstream`), and points the code under test at `endpoint_url`. The server
runs in a thread of the test process and is shut down when the `running` block ends.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

Proxy = TypeVar("Proxy", bound="FrontProxy")


class FrontProxy(http.server.ThreadingHTTPServer):
    def __init__(self, upstream: str, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.upstream = urlsplit(upstream)
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def running(server: Proxy) -> Iterator[Proxy]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
