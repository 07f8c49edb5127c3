"""End-to-end fixtures: a real Synapse (SQLite and PostgreSQL) with our provider, over moto.

One Synapse per test module and database kind: a start costs 2-4 s, a test well under one.
Every test module is marked `e2e` (select with `-m e2e`, skip with `-m "not e2e"`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from demo.matrix_client import MatrixClient, Mxc
from demo.media import make_image
from tests.conftest import s3_client
from tests.servers.moto import MotoServer
from tests.servers.postgres import temporary_database
from tests.servers.synapse import (
    PostgresUnavailable,
    SynapseServer,
    ensure_postgres_running,
    local_content_path,
    local_thumbnails_dir,
    postgres_database,
    provider_entry,
    sqlite_database,
)

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


@pytest.fixture(scope="module", autouse=True)
def no_processes_left(moto: MotoServer) -> Iterator[None]:
    """Each module stops every process it started (the session's moto is started before)."""
    before = child_pids()
    yield
    left = child_pids() - before
    assert not left, f"processes still running after the module: {sorted(left)}"


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


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def homeserver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               moto: MotoServer) -> Iterator[Homeserver]:
    """Synapse with our provider on the session's moto, on each database kind, each with a bucket
    of its own: two homeservers must never share one (objstore-offload refuses the second)."""
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    directory = tmp_path_factory.mktemp(f"synapse-{request.param}")
    yield from homeserver_on(request.param, directory, moto.endpoint_url, bucket)
