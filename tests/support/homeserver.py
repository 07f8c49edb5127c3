"""A real Synapse with our provider for the end-to-end tests: its config, a user logged in to it,
the bucket behind it (`Homeserver`), on SQLite or PostgreSQL (`homeserver_on`), and its metrics
listener (`MonitoredHomeserver`)."""

from __future__ import annotations

import http.client
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from servers.matrix_client import MatrixClient, Mxc
from servers.media import make_image
from servers.postgres import PostgresUnavailable, ensure_postgres_running, postgres_database, temporary_database
from servers.process import free_port
from servers.synapse import SynapseServer, local_content_path, local_thumbnails_dir, provider_entry, sqlite_database
from tests.support.s3 import s3_client

PREFIX = "e2e/"
STORAGE_CLASS = "STANDARD_IA"
DATABASE_KINDS = ["sqlite", "postgresql"]


def child_pids() -> set[int]:
    """PIDs of this process's living (not zombie) children."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after its ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z":
            children.add(int(entry))
    return children


def provider_config(endpoint_url: str, bucket: str, **extra: Any) -> dict[str, Any]:
    """Our provider's config; timeouts short enough that a dead store fails a request fast."""
    return {"bucket": bucket, "endpoint_url": endpoint_url, "prefix": PREFIX, "storage_class": STORAGE_CLASS,
            "connect_timeout": 2, "read_timeout": 10, "retries": 1, **extra}


@dataclass
class Homeserver:
    """A running Synapse, a user logged in to it, and the bucket behind it."""

    server: SynapseServer
    client: MatrixClient
    s3: Any
    bucket: str

    def key(self, mxc: Mxc) -> str:
        return PREFIX + local_content_path(mxc.media_id)

    def object_bytes(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def upload_image(self) -> tuple[Mxc, bytes]:
        data = make_image()
        return self.client.upload(data, "image/jpeg", "picture.jpg"), data

    def delete_local_copies(self, mxc: Mxc) -> None:
        """Remove the upload and its thumbnails from media_store_path, as an offload would."""
        self.server.local_media_path(mxc.media_id).unlink()
        shutil.rmtree(self.server.media_store_path / local_thumbnails_dir(mxc.media_id), ignore_errors=True)


def start_homeserver(directory: Path, database: dict[str, Any], providers: list[dict[str, Any]],
                     endpoint_url: str, bucket: str) -> Iterator[Homeserver]:
    with SynapseServer(directory, providers, database) as server:
        client = MatrixClient.register(server.base_url, server.registration_shared_secret, "alice", "password")
        yield Homeserver(server, client, s3_client(endpoint_url), bucket)


def homeserver_on(kind: str, directory: Path, endpoint_url: str, bucket: str,
                  database_prefix: str = "synapse_e2e") -> Iterator[Homeserver]:
    """Synapse with our provider (store_synchronous) on `bucket`, on a database of `kind`
    (a PostgreSQL one is made and dropped; skipped if PostgreSQL cannot run)."""
    providers = [provider_entry(provider_config(endpoint_url, bucket))]
    if kind == "sqlite":
        yield from start_homeserver(directory, sqlite_database(directory), providers, endpoint_url, bucket)
        return
    try:
        ensure_postgres_running()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    with temporary_database(database_prefix) as connection_args:
        yield from start_homeserver(directory, postgres_database(connection_args), providers, endpoint_url, bucket)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MonitoredHomeserver(Homeserver):
    """A running Synapse with its metrics listener on `metrics_port`."""

    metrics_port: int

    def scrape(self) -> Samples:
        """Every sample Synapse's metrics listener serves, by name and labels."""
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            connection.request("GET", "/_synapse/metrics")
            response = connection.getresponse()
            assert response.status == 200
            text = response.read().decode()
        finally:
            connection.close()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def scrape_until(self, condition: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
        deadline = time.monotonic() + timeout
        while not condition(samples := self.scrape()):
            assert time.monotonic() < deadline, f"the metrics did not get there within {timeout} s"
            time.sleep(0.05)
        return samples

    def ours(self, samples: Samples, name: str, **labels: str) -> float:
        key = (name, frozenset({"backend": "s3", "server_name": self.server.server_name, **labels}.items()))
        assert key in samples, f"{name} {labels} is not on the metrics listener"
        return samples[key]


def enable_metrics_listener(server: SynapseServer) -> int:
    """Turn Synapse's metrics on, with a metrics listener on 127.0.0.1; its port."""
    port = free_port()
    config = yaml.safe_load(server.config_path.read_text())
    config["enable_metrics"] = True
    config["listeners"].append({"type": "metrics", "port": port, "bind_addresses": ["127.0.0.1"]})
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return port
