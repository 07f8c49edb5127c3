"""Shared fixtures: the servers of the session (moto, Ceph RGW, Azurite, the GCS emulator), each
started once, buckets on them, and a running Twisted reactor. The objstore-offload tests'
fixtures come from the plugin tests/support/offload_fixtures.py; helpers from tests/support/."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.azurite import Azurite
from servers.ceph_rgw import CephRGW
from servers.gcs_emulator import GcsEmulator
from servers.moto import MotoServer
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.required import require_azurite, require_ceph
from tests.support.s3 import rgw_client, s3_client

pytest_plugins = ["tests.support.offload_fixtures"]

# Credentials for the local servers, and no fallback to a cloud metadata service: tests
# only ever talk to 127.0.0.1.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing-key-id",
    AWS_SECRET_ACCESS_KEY="testing-secret-key",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)
for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(variable, None)


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def frozen_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server of the test's own, stopped (SIGSTOP) while the test runs: it accepts
    connections (the kernel does) and never answers."""
    with MotoServer(tmp_path) as server:
        s3_client(server.endpoint_url).create_bucket(Bucket="frozen")
        os.kill(server.pid, signal.SIGSTOP)
        try:
            yield server
        finally:
            os.kill(server.pid, signal.SIGCONT)


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"media-{uuid.uuid4().hex[:12]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def open_store() -> Iterator[Callable[[dict[str, Any]], ObjectStore]]:
    """Make stores from config blocks; each is closed after the test."""
    stores: list[ObjectStore] = []

    def make(config: dict[str, Any]) -> ObjectStore:
        stores.append(ObjectStore(parse_store_config(config)))
        return stores[-1]

    yield make
    for store in stores:
        run(store.close(), timeout=30)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRGW]:
    """Ceph's RADOS Gateway (enforces SSE-C and checks signatures), one for the session."""
    require_ceph()
    with CephRGW(tmp_path_factory.mktemp("ceph")) as server:
        yield server


@pytest.fixture
def rgw_bucket(rgw: CephRGW) -> str:
    """A fresh, empty bucket on the session's Ceph RGW."""
    name = f"media-{uuid.uuid4().hex[:10]}"
    rgw_client(rgw).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's Blob service, one for the session (skipped where it is not installed, unless
    OBJSTORE_REQUIRE_AZURITE is set)."""
    require_azurite()
    with Azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """gcp-storage-emulator, one for the session."""
    with GcsEmulator(tmp_path_factory.mktemp("gcs")) as server:
        yield server


@pytest.fixture(scope="session")
def reactor(objstore_reactor: Any) -> Any:
    """Twisted's global reactor, running in a thread of its own for the whole session (the
    fixture of synapse_objstore.testing.plugin, which the conformance suite uses too)."""
    return objstore_reactor


@pytest.fixture
def in_reactor(objstore_in_reactor: Callable[..., Any]) -> Callable[..., Any]:
    """Run a function (which may return a Deferred or coroutine) on the reactor thread and
    return its result here."""
    return objstore_in_reactor


@pytest.fixture
def media_store(tmp_path: Path) -> Path:
    path = tmp_path / "media_store"
    path.mkdir()
    return path
