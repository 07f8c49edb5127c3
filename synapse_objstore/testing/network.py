"""A port to point a config at when a test needs a store that cannot be reached."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
