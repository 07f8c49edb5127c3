"""Debian's redis-server on a free port of 127.0.0.1, in its own process, keeping nothing on disk.

Synapse's workers replicate over Redis; the tests start one per deployment and stop it by its PID.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from servers.process import ServerProcess

REDIS_SERVER = "redis-server"


def redis_available() -> bool:
    """Whether redis-server is installed (.ci/install-redis installs it)."""
    return shutil.which(REDIS_SERVER) is not None


class RedisServer(ServerProcess):
    name = "redis"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.directory = directory

    def argv(self) -> list[str]:
        return [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no",  # no persistence: nothing written to disk
                "--dir", str(self.directory), "--daemonize", "no"]
