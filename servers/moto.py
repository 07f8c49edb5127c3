"""A moto S3 server speaking real HTTP on 127.0.0.1, in its own process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from servers.process import ServerProcess


class MotoServer(ServerProcess):
    """moto's server (from this interpreter's environment); `log_path` has one line per
    request it served (method, path, status)."""

    name = "moto"

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
