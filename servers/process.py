"""Start a server as a child process, wait until it listens, stop it by its PID.

`ServerProcess` is what every single-process server here shares (moto, Azurite, the GCS
emulator, Redis): a free port of 127.0.0.1, a log file named after the server and its port,
start and wait for the port, stop by the server's own PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from typing_extensions import Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_process(argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start argv in its own process group (so a Ctrl-C in a terminal reaches only us, and we
    stop it), output to log."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process (by its PID), SIGKILL it if it lingers, and reap it."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout)


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


class ServerProcess:
    """A server listening on `port` of 127.0.0.1, its output in `log_path` under `log_dir`.

    A subclass names itself (`name`, the log's prefix) and gives the command line (`argv()`);
    it may set `env`, `cwd`, how long it may take to listen (`start_timeout`) and to stop after
    SIGTERM (`stop_timeout`)."""

    name = "server"
    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The server's environment (None: ours)."""
        return None

    def cwd(self) -> Path | None:
        return None

    def start(self) -> Self:
        self._process = start_process(self.argv(), self.log_path, env=self.env(), cwd=self.cwd())
        wait_for_port(self.port, self._process, timeout=self.start_timeout, log=self.log_path)
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} was not started"
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout=self.stop_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
