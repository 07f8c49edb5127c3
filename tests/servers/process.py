"""Start a server as a child process, wait until it listens, stop it by its PID.

Starting and stopping live in demo/process.py, which the demo (that cannot import tests/)
shares with the tests; waiting for a port with the server's log on failure is the tests' own.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from demo.process import free_port, start_process, stop_process

__all__ = ["free_port", "start_process", "stop_process", "wait_for_port"]


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout: float, log: Path | None = None) -> None:
    """Block until 127.0.0.1:port accepts a connection; fail with the server's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with code {process.returncode} before listening on {port}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")
