"""A real Synapse homeserver in a child process, configured for one media storage provider.

`SynapseServer` writes homeserver.yaml (and a signing key) into a directory of its own, listens
for clients on a free port of 127.0.0.1, and is started and stopped by its PID.
"""

from __future__ import annotations

import http.client
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from signedjson.key import generate_signing_key, write_signing_keys
from typing_extensions import Self

from servers.process import free_port, start_process, stop_process

PROVIDER_MODULE = "synapse_objstore.ObjectStorageProvider"
# Rate limits high enough that no test or demo step is ever throttled.
UNLIMITED = {"per_second": 10_000, "burst_count": 10_000}


def provider_entry(config: dict[str, Any], module: str = PROVIDER_MODULE,
                   store_synchronous: bool = True) -> dict[str, Any]:
    """One `media_storage_providers` item that stores local and remote media."""
    return {"module": module, "store_local": True, "store_remote": True,
            "store_synchronous": store_synchronous, "config": config}


def sqlite_database(directory: Path) -> dict[str, Any]:
    return {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}}


class SynapseServer:
    """Synapse (`python -m synapse.app.homeserver`) in `directory`, with the given media
    storage providers and database section (SQLite in `directory` unless given).

    `python` is the interpreter to run it with: another virtual environment can run the same
    directory, e.g. one with synapse-s3-storage-provider installed.
    """

    def __init__(self, directory: Path, providers: list[dict[str, Any]], database: dict[str, Any] | None = None,
                 python: str = sys.executable, extra_config: dict[str, Any] | None = None,
                 extra_listeners: list[dict[str, Any]] | None = None) -> None:
        self.directory = directory
        self.server_name = "localhost"
        self.python = python
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "homeserver.yaml"
        self.media_store_path = directory / "media_store"
        self.log_path = directory / "homeserver.log"
        self.registration_shared_secret = secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self._write_config(providers, database or sqlite_database(directory), extra_config or {},
                           extra_listeners or [])

    def _write_config(self, providers: list[dict[str, Any]], database: dict[str, Any],
                      extra_config: dict[str, Any], extra_listeners: list[dict[str, Any]]) -> None:
        signing_key = self.directory / "signing.key"
        if not signing_key.exists():
            with signing_key.open("w") as out:
                write_signing_keys(out, [generate_signing_key("a_demo")])
        config = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "pid_file": str(self.directory / "homeserver.pid"),
            "listeners": [{
                "port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}],
            }, *extra_listeners],
            "database": database,
            "media_store_path": str(self.media_store_path),
            "max_upload_size": "1G",
            "media_storage_providers": providers,
            "signing_key_path": str(signing_key),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "report_stats": False,
            "enable_registration": False,
            "registration_shared_secret": self.registration_shared_secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "bcrypt_rounds": 4,  # the least bcrypt allows: registering a user takes 10 ms, not 500
            "enable_metrics": False,
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "rc_message": UNLIMITED,
            "rc_registration": UNLIMITED,
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_media_create": UNLIMITED,
            **extra_config,
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)]

    def start(self, timeout: float = 90.0) -> Self:
        """Start Synapse and return once `/health` answers."""
        self._process = start_process(self.argv, self.log_path, cwd=self.directory)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process.poll() is not None:
                raise RuntimeError(f"Synapse exited with code {self._process.returncode} before it was ready:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Synapse was not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout=20)

    def run_expecting_failure(self, timeout: float = 60.0) -> tuple[int, str]:
        """Start Synapse for a config it should refuse; its exit code and output.

        Raises if it comes up instead (after stopping it)."""
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._process = start_process(self.argv, self.log_path, cwd=self.directory)
        deadline = time.monotonic() + timeout
        while self._process.poll() is None:
            if self._healthy():
                self.stop()
                raise AssertionError(f"Synapse started although it should have refused to:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Synapse neither exited nor started within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        with self.log_path.open("rb") as log:
            log.seek(log_start)
            return self._process.returncode, log.read().decode(errors="replace")

    def wait_for_log(self, line: str, timeout: float = 30.0) -> str:
        """The log once it holds `line`: work Synapse does after it answers /health (a
        provider's background startup check) logs late on a loaded machine."""
        deadline = time.monotonic() + timeout
        while line not in (log := self.log_path.read_text(errors="replace")):
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} is not in Synapse's log after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return log

    def log_tail(self, size: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int | None:
        """The running Synapse's PID; None before it was started."""
        return None if self._process is None else self._process.pid

    def local_media_path(self, media_id: str) -> Path:
        """Where Synapse keeps a local upload (`local_content/ab/cd/rest`)."""
        return self.media_store_path / local_content_path(media_id)

    def _healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_content_path(media_id: str) -> str:
    """Synapse's relative path of a local upload, which is also the object key after the prefix."""
    return f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}"



def local_thumbnails_dir(media_id: str) -> str:
    """Synapse's relative directory of a local upload's thumbnails (ending in '/')."""
    return f"local_thumbnails/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}/"
