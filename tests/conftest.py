"""Shared fixtures: a moto S3 server over HTTP, buckets, and a running Twisted reactor."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.servers.ceph_rgw import CephRGW, ceph_available
from tests.servers.moto import MotoServer

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


def s3_client(endpoint_url: str, **kwargs: Any) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", **kwargs)


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


def require_ceph() -> None:
    """Skip the test when Ceph RGW is not installed; fail it when OBJSTORE_REQUIRE_CEPH is set."""
    if not ceph_available():
        if os.environ.get("OBJSTORE_REQUIRE_CEPH"):
            pytest.fail("Ceph RGW is required here (OBJSTORE_REQUIRE_CEPH) but not installed: run .ci/install-ceph")
        pytest.skip("Ceph RGW is not installed (.ci/install-ceph installs it)")


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRGW]:
    """Ceph's RADOS Gateway (enforces SSE-C and checks signatures), one for the session."""
    require_ceph()
    with CephRGW(tmp_path_factory.mktemp("ceph")) as server:
        yield server


def rgw_client(rgw: CephRGW) -> Any:
    from botocore.config import Config

    return s3_client(rgw.endpoint_url, aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key,
                     config=Config(request_checksum_calculation="when_required",
                                   response_checksum_validation="when_required", s3={"addressing_style": "path"}))


@pytest.fixture
def rgw_bucket(rgw: CephRGW) -> str:
    """A fresh, empty bucket on the session's Ceph RGW."""
    name = f"media-{uuid.uuid4().hex[:10]}"
    rgw_client(rgw).create_bucket(Bucket=name)
    return name


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
