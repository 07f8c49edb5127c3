"""gcp-storage-emulator (from .venv): Google Cloud Storage's JSON API on 127.0.0.1, in memory.

It checks no credentials: the tests connect with `token: anon`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.servers.process import free_port, start_process, stop_process, wait_for_port


class GcsEmulator:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log = log_dir / f"gcs-emulator-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> GcsEmulator:
        emulator = Path(sys.executable).with_name("gcp-storage-emulator")
        argv = [str(emulator), "start", "--host", "127.0.0.1", "--port", str(self.port), "--in-memory"]
        self._process = start_process(argv, self._log)
        wait_for_port(self.port, self._process, timeout=30, log=self._log)
        return self

    def create_bucket(self, name: str) -> str:
        request = urllib.request.Request(f"{self.endpoint_url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            return name

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
