"""Azurite's Blob service (installed from npm into tests/servers/azurite by `make test`) on
127.0.0.1, in memory, with its well-known development account."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from tests.servers.process import free_port, start_process, stop_process, wait_for_port

AZURITE_BIN = Path(__file__).with_name("azurite") / "node_modules" / ".bin" / "azurite-blob"

# Azurite's fixed development account (published in its documentation, not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_available() -> bool:
    return AZURITE_BIN.exists() and shutil.which("node") is not None


class Azurite:
    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.account_url = f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"
        self.account_name, self.account_key = ACCOUNT_NAME, ACCOUNT_KEY
        self._dir = work_dir
        self._log = work_dir / f"azurite-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};BlobEndpoint={self.account_url};"

    def start(self) -> Azurite:
        if not azurite_available():
            raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}: run `make test` (or `npm ci` in "
                               f"{AZURITE_BIN.parents[2]})")
        argv = [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
                "--skipApiVersionCheck", "--loose", "--silent"]
        self._process = start_process(argv, self._log, cwd=self._dir)
        wait_for_port(self.port, self._process, timeout=60, log=self._log)
        return self

    def create_container(self, name: str) -> str:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.create_container(name)
        return name

    def stop(self) -> None:
        """On SIGTERM Azurite waits for clients' idle keep-alive connections to close; its data
        is in memory, so killing it after a short wait loses nothing."""
        if self._process is not None:
            stop_process(self._process, timeout=2)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
