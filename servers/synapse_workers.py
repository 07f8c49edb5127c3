"""Synapse as big homeservers run it: a main process that serves no media, and `media_repository`
workers (`synapse.app.generic_worker` with the `media` resource), each with a media store of its
own as if on a host of its own, replicating over Redis.

The main process is a `SynapseServer` (servers/synapse.py) with a replication listener, an
`instance_map` naming it, Redis, `enable_media_repo: false` and the worker that runs the media
background jobs. Each `MediaWorker` reads the main's homeserver.yaml and a file of its own (its
name, its listener, its `media_store_path`, its media storage providers), as Synapse's workers
documentation has it: `python -m synapse.app.generic_worker -c homeserver.yaml -c worker.yaml`.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from typing_extensions import Self

from servers.process import free_port
from servers.synapse import SynapseServer

MAIN_INSTANCE = "main"


def main_process_config(replication_port: int, redis_port: int, background_worker: str) -> dict[str, Any]:
    """What the main process's homeserver.yaml, shared with every worker, adds for media workers."""
    return {
        "enable_media_repo": False,  # the workers serve media; the main process serves none
        "media_instance_running_background_jobs": background_worker,
        "instance_map": {MAIN_INSTANCE: {"host": "127.0.0.1", "port": replication_port}},
        "redis": {"enabled": True, "host": "127.0.0.1", "port": redis_port},
        "worker_replication_secret": secrets.token_hex(16),
    }


def replication_listener(port: int) -> dict[str, Any]:
    return {"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
            "resources": [{"names": ["replication"], "compress": False}]}


class MediaWorker(SynapseServer):
    """A `media_repository` worker of `main`, with its own listener on a free port of 127.0.0.1,
    its own media store in `directory` and `providers`. It runs, answers /health and is stopped
    like the main process; its config is the main's homeserver.yaml plus its own worker.yaml."""

    def __init__(self, main: SynapseServer, name: str, directory: Path, providers: list[dict[str, Any]],
                 extra_config: dict[str, Any] | None = None) -> None:
        self.main = main
        self.name = name
        self.directory = directory
        self.server_name = main.server_name
        self.python = main.python
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "worker.yaml"
        self.media_store_path = directory / "media_store"
        self.log_path = directory / "worker.log"
        self.registration_shared_secret = main.registration_shared_secret
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "worker_app": "synapse.app.generic_worker",
            "worker_name": name,
            "worker_listeners": [{
                "port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                # "client" too: older Synapse (1.111 is tested) serves /_matrix/client/v1/media
                # only from the client resource; later ones take it with "media" as well.
                "x_forwarded": False, "resources": [{"names": ["client", "media"], "compress": False}],
            }],
            # The shared file turns the media repository off for the main process; a generic
            # worker serving media turns it on again for itself.
            "enable_media_repo": True,
            "media_store_path": str(self.media_store_path),
            "media_storage_providers": providers,
            "pid_file": str(directory / "worker.pid"),
            **(extra_config or {}),
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def config_paths(self) -> list[Path]:
        """The files this worker's config is read from, in Synapse's order (later keys win)."""
        return [self.main.config_path, self.config_path]

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "synapse.app.generic_worker",
                *(argument for path in self.config_paths for argument in ("-c", str(path)))]


class MediaWorkerDeployment:
    """The main process and a media worker for each item of `workers` (its name, and the media
    storage providers it runs), on one database and the Redis at `redis_port`; the first worker
    runs the media background jobs. `extra_config` goes into the shared homeserver.yaml.
    Started main first, stopped workers first."""

    def __init__(self, directory: Path, database: dict[str, Any], redis_port: int,
                 workers: Mapping[str, list[dict[str, Any]]], extra_config: dict[str, Any] | None = None,
                 python: str = sys.executable) -> None:
        replication_port = free_port()
        background_worker = next(iter(workers))
        self.main = SynapseServer(
            directory / MAIN_INSTANCE, [], database, python,
            extra_config={**main_process_config(replication_port, redis_port, background_worker),
                          **(extra_config or {})},
            extra_listeners=[replication_listener(replication_port)],
        )
        self.workers = [MediaWorker(self.main, name, directory / name, providers)
                        for name, providers in workers.items()]

    def start(self, timeout: float = 90.0) -> Self:
        try:
            self.main.start(timeout)
            for worker in self.workers:
                worker.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in [*self.workers, self.main]:
            process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
