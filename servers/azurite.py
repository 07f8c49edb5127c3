"""Azurite's Blob service (installed from npm into servers/azurite by `make test`) on
127.0.0.1, in memory, with its well-known development account."""

from __future__ import annotations

import shutil
from pathlib import Path

from servers.process import ServerProcess

AZURITE_DIR = Path(__file__).with_name("azurite")
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"

# Azurite's fixed development account (published in its documentation, not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_available() -> bool:
    """Whether Azurite (`npm ci --prefix servers/azurite`, which `make test` runs) and Node.js are installed."""
    return AZURITE_BIN.exists() and shutil.which("node") is not None


class Azurite(ServerProcess):
    name = "azurite"
    start_timeout = 60.0
    # On SIGTERM Azurite waits for clients' idle keep-alive connections to close; its data is
    # in memory, so killing it after a short wait loses nothing.
    stop_timeout = 2.0

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.account_url = f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"
        self.account_name, self.account_key = ACCOUNT_NAME, ACCOUNT_KEY
        self._dir = work_dir

    @property
    def connection_string(self) -> str:
        return f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};BlobEndpoint={self.account_url};"

    def argv(self) -> list[str]:
        if not azurite_available():
            raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}: run `make test` (or `npm ci` in "
                               f"{AZURITE_DIR})")
        return [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
                "--skipApiVersionCheck", "--loose", "--silent"]

    def cwd(self) -> Path:
        return self._dir

    def create_container(self, name: str) -> str:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.create_container(name)
        return name
