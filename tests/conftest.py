"""Shared fixtures: a moto S3 server over HTTP, buckets, and a running Twisted reactor."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.threads import blockingCallFromThread

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

T = TypeVar("T")


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


def s3_client(endpoint_url: str, **kwargs: Any) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", **kwargs)


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"media-{uuid.uuid4().hex[:12]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def reactor() -> Iterator[Any]:
    """Twisted's global reactor, running in a thread of its own for the whole session."""
    thread = threading.Thread(target=global_reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    yield global_reactor
    global_reactor.callFromThread(global_reactor.stop)
    thread.join(10)


@pytest.fixture
def in_reactor(reactor: Any) -> Callable[..., Any]:
    """Run a function (which may return a Deferred or coroutine) on the reactor thread and
    return its result here."""
    from twisted.internet.defer import ensureDeferred

    def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> Any:
            result = function(*args, **kwargs)
            if hasattr(result, "__await__") and not hasattr(result, "addCallback"):
                return ensureDeferred(result)
            return result

        return blockingCallFromThread(reactor, run)

    return call


@pytest.fixture
def media_store(tmp_path: Path) -> Path:
    path = tmp_path / "media_store"
    path.mkdir()
    return path
