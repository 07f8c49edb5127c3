"""gcp-storage-emulator (from .venv): Google Cloud Storage's JSON API on 127.0.0.1, in memory.

It checks no credentials: the tests connect with `token: anon`.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from servers.process import ServerProcess


class GcsEmulator(ServerProcess):
    name = "gcs-emulator"

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        emulator = Path(sys.executable).with_name("gcp-storage-emulator")
        return [str(emulator), "start", "--host", "127.0.0.1", "--port", str(self.port), "--in-memory"]

    def create_bucket(self, name: str) -> str:
        request = urllib.request.Request(f"{self.endpoint_url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            return name
