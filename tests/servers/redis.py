"""Debian's redis-server on a free port of 127.0.0.1, in its own process, keeping nothing on disk.

Synapse's workers replicate over Redis; the tests start one per deployment and stop it by its PID.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.servers.process import free_port, start_process, stop_process, wait_for_port

REDIS_SERVER = "redis-server"


def redis_available() -> bool:
    """Whether redis-server is installed (.ci/install-redis installs it)."""
    return shutil.which(REDIS_SERVER) is not None


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self._log = directory / f"redis-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no",  # no persistence: nothing written to disk
                "--dir", str(self.directory), "--daemonize", "no"]
        self._process = start_process(argv, self._log)
        wait_for_port(self.port, self._process, timeout=30, log=self._log)
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
