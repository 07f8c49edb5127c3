"""A Synapse whose S3 server (a moto of its own) goes away and comes back on the same port;
and `store_synchronous: false`, which the same Synapse is configured with."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import s3_client
from tests.e2e.conftest import Homeserver, provider_config, start_homeserver
from tests.servers.moto import MotoServer
from tests.servers.synapse import provider_entry, sqlite_database

pytestmark = pytest.mark.e2e

# The provider is given connect_timeout 2 s, read_timeout 3 s and one retry: a fetch from a
# dead or frozen store must fail well within this.
ERROR_BOUND = 30.0


@pytest.fixture(scope="module")
def own_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("own-moto")) as server:
        yield server


@pytest.fixture(scope="module")
def homeserver(tmp_path_factory: pytest.TempPathFactory, own_moto: MotoServer) -> Iterator[Homeserver]:
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    s3_client(own_moto.endpoint_url).create_bucket(Bucket=bucket)
    directory = tmp_path_factory.mktemp("synapse-outage")
    config = provider_config(own_moto.endpoint_url, bucket, read_timeout=3)
    providers = [provider_entry(config, store_synchronous=False)]
    yield from start_homeserver(directory, sqlite_database(directory), providers, own_moto.endpoint_url, bucket)


def wait_for_object(homeserver: Homeserver, key: str, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        listing = homeserver.s3.list_objects_v2(Bucket=homeserver.bucket, Prefix=key).get("Contents", [])
        if any(item["Key"] == key for item in listing):
            return homeserver.object_bytes(key)
        assert time.monotonic() < deadline, f"{key} did not appear in the bucket within {timeout} s"
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_asynchronous_store_answers_the_upload_and_the_object_follows(homeserver: Homeserver) -> None:
    data = os.urandom(300_000)
    mxc = homeserver.client.upload(data, "application/octet-stream", "async.bin")
    assert wait_for_object(homeserver, homeserver.key(mxc)) == data


def test_store_down_fails_downloads_promptly_and_recovers_on_the_same_port(homeserver: Homeserver,
                                                                          own_moto: MotoServer) -> None:
    data = os.urandom(200_000)
    mxc = homeserver.client.upload(data, "application/octet-stream", "outage.bin")
    wait_for_object(homeserver, homeserver.key(mxc))
    homeserver.delete_local_copies(mxc)
    assert homeserver.client.download(mxc).check().body == data  # the provider has a connection now

    pid = own_moto.pid
    own_moto.stop()
    assert not pid_alive(pid)
    try:
        start = time.monotonic()
        failed = homeserver.client.download(mxc, timeout=ERROR_BOUND + 10)
        elapsed = time.monotonic() - start
        assert failed.status >= 500, failed
        assert elapsed < ERROR_BOUND, f"the error took {elapsed:.1f} s"

        # Uploads do not wait for the store when store_synchronous is false.
        start = time.monotonic()
        homeserver.client.upload(b"written while the store is down", "text/plain", "down.txt")
        assert time.monotonic() - start < 5.0
    finally:
        own_moto.start()  # the same port: moto starts empty
    homeserver.s3.create_bucket(Bucket=homeserver.bucket)
    homeserver.s3.put_object(Bucket=homeserver.bucket, Key=homeserver.key(mxc), Body=data)

    # Synapse was not restarted: the provider reconnects by itself.
    assert homeserver.client.download(mxc).check().body == data


def test_frozen_store_fails_downloads_within_the_timeouts(homeserver: Homeserver, own_moto: MotoServer) -> None:
    """A store that accepts connections and never answers (the server process is stopped with
    SIGSTOP; the kernel still completes TCP handshakes) is what makes a fetch hang forever
    without read timeouts."""
    data = os.urandom(100_000)
    mxc = homeserver.client.upload(data, "application/octet-stream", "frozen.bin")
    wait_for_object(homeserver, homeserver.key(mxc))
    homeserver.delete_local_copies(mxc)

    os.kill(own_moto.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        failed = homeserver.client.download(mxc, timeout=ERROR_BOUND + 10)
        elapsed = time.monotonic() - start
    finally:
        os.kill(own_moto.pid, signal.SIGCONT)
    assert failed.status >= 500, failed
    assert elapsed < ERROR_BOUND, f"the error took {elapsed:.1f} s"
    assert homeserver.client.download(mxc).check().body == data
