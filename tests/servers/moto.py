"""A moto S3 server speaking real HTTP on 127.0.0.1, in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers.process import free_port, start_process, stop_process, wait_for_port


class MotoServer:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log = log_dir / f"moto-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        moto_server = Path(sys.executable).with_name("moto_server")
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        self._process = start_process([str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)], self._log, env=env)
        wait_for_port(self.port, self._process, timeout=30, log=self._log)
        return self

    @property
    def log_path(self) -> Path:
        """moto's log: one line per request it served (method, path, status)."""
        return self._log

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
