"""A Synapse whose S3 server (a moto of its own) goes away, or stops answering, and comes back
on the same port; and `store_synchronous: false`, which the same Synapse is configured with.

What a user sees: the first downloads from a store that does not answer fail within
`fetch_deadline`; once the provider takes the store as down, downloads fail at once; when the
store answers again, downloads work again within the probe interval, with no restart. The
metrics listener shows the state."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from servers.matrix_client import MatrixClient, Mxc, Response
from servers.moto import MotoServer
from servers.synapse import SynapseServer, provider_entry, sqlite_database
from synapse_objstore.breaker import FAILURES_TO_OPEN, PROBE_INTERVAL
from tests.support.homeserver import MonitoredHomeserver, enable_metrics_listener, provider_config
from tests.support.s3 import s3_client

pytestmark = pytest.mark.e2e

# Each attempt may wait read_timeout (10 s), and three attempts are made (retries: 2): 30 s
# without the deadline. The deadline cuts a download off after FETCH_DEADLINE.
FETCH_DEADLINE = 4.0
# The bounds below are the features (the deadline, failing at once, recovering at the next
# probe), with margins for a loaded 2-core machine. SLACK is Synapse's own share of a request's
# time there: at most 4 s, so that the deadline's bound (8 s) stays below one attempt without
# it (10 s), and recovery's (9 s) below two probe intervals (10 s).
SLACK = 4.0
# "Fails at once": no store request is made; at most half what waiting for the deadline takes
# (the failed-fast counter, checked beside it, says no request was made).
FAST = FETCH_DEADLINE / 2


@pytest.fixture(scope="module")
def own_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("own-moto")) as server:
        yield server


@pytest.fixture(scope="module")
def homeserver(tmp_path_factory: pytest.TempPathFactory, own_moto: MotoServer) -> Iterator[MonitoredHomeserver]:
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    s3_client(own_moto.endpoint_url).create_bucket(Bucket=bucket)
    directory = tmp_path_factory.mktemp("synapse-outage")
    config = provider_config(own_moto.endpoint_url, bucket, read_timeout=10, retries=2,
                             fetch_deadline=FETCH_DEADLINE)
    server = SynapseServer(directory, [provider_entry(config, store_synchronous=False)], sqlite_database(directory))
    metrics_port = enable_metrics_listener(server)
    with server:
        client = MatrixClient.register(server.base_url, server.registration_shared_secret, "alice", "password")
        yield MonitoredHomeserver(server, client, s3_client(own_moto.endpoint_url), bucket, metrics_port)


def wait_for_object(homeserver: MonitoredHomeserver, key: str, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        listing = homeserver.s3.list_objects_v2(Bucket=homeserver.bucket, Prefix=key).get("Contents", [])
        if any(item["Key"] == key for item in listing):
            return homeserver.object_bytes(key)
        assert time.monotonic() < deadline, f"{key} did not appear in the bucket within {timeout} s"
        time.sleep(0.1)


def offloaded_media(homeserver: MonitoredHomeserver, name: str) -> tuple[Mxc, bytes]:
    """Media that only the store holds, and that downloads from it."""
    data = os.urandom(200_000)
    mxc = homeserver.client.upload(data, "application/octet-stream", name)
    wait_for_object(homeserver, homeserver.key(mxc))
    homeserver.delete_local_copies(mxc)
    assert homeserver.client.download(mxc).check().body == data  # the provider has a connection now
    return mxc, data


def timed_download(homeserver: MonitoredHomeserver, mxc: Mxc) -> tuple[Response, float]:
    start = time.monotonic()
    response = homeserver.client.download(mxc, timeout=60)
    return response, time.monotonic() - start


def store_up(homeserver: MonitoredHomeserver) -> float:
    return homeserver.ours(homeserver.scrape(), "synapse_objstore_store_up")


def failed_fast(homeserver: MonitoredHomeserver) -> float:
    return homeserver.ours(homeserver.scrape(), "synapse_objstore_failed_fast_total", operation="fetch")


def check_downloads_fail_at_once(homeserver: MonitoredHomeserver, mxc: Mxc) -> None:
    """The store is down, and the provider knows it: downloads fail without asking it."""
    assert store_up(homeserver) == 0
    before = failed_fast(homeserver)
    for _ in range(5):
        failed, elapsed = timed_download(homeserver, mxc)
        assert failed.status >= 500, failed
        assert elapsed < FAST, f"a download from a store known to be down took {elapsed:.2f} s"
    assert failed_fast(homeserver) - before == 5


def wait_until_downloads_work(homeserver: MonitoredHomeserver, mxc: Mxc, data: bytes, since: float) -> float:
    """Seconds from `since` (the store answering again) to a download that works."""
    while True:
        response, _ = timed_download(homeserver, mxc)
        if response.status == 200:
            assert response.body == data
            return time.monotonic() - since
        assert time.monotonic() - since < 3 * PROBE_INTERVAL, "downloads did not come back"
        time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_asynchronous_store_answers_the_upload_and_the_object_follows(homeserver: MonitoredHomeserver) -> None:
    data = os.urandom(300_000)
    mxc = homeserver.client.upload(data, "application/octet-stream", "async.bin")
    assert wait_for_object(homeserver, homeserver.key(mxc)) == data
    assert store_up(homeserver) == 1


def test_a_silent_store_fails_downloads_within_the_deadline_then_at_once_and_recovers(
    homeserver: MonitoredHomeserver, own_moto: MotoServer
) -> None:
    """A store that accepts connections and never answers (the server process is stopped with
    SIGSTOP; the kernel still completes TCP handshakes): each attempt would wait read_timeout."""
    mxc, data = offloaded_media(homeserver, "silent.bin")

    os.kill(own_moto.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(FAILURES_TO_OPEN) as pool:
            first = list(pool.map(lambda _: timed_download(homeserver, mxc), range(FAILURES_TO_OPEN)))
        for failed, elapsed in first:
            assert failed.status >= 500, failed
            assert FETCH_DEADLINE - 0.5 <= elapsed < FETCH_DEADLINE + SLACK, f"the error took {elapsed:.1f} s"
        check_downloads_fail_at_once(homeserver, mxc)
    finally:
        os.kill(own_moto.pid, signal.SIGCONT)
    answering = time.monotonic()

    # Synapse was not restarted: a probe finds the store answering, and downloads work again.
    assert wait_until_downloads_work(homeserver, mxc, data, answering) < PROBE_INTERVAL + SLACK
    assert store_up(homeserver) == 1
    log = homeserver.server.log_path.read_text()
    assert f"did not answer {FAILURES_TO_OPEN} requests in a row" in log and "answers again" in log


def test_a_dead_store_fails_downloads_at_once_and_recovers_on_the_same_port(
    homeserver: MonitoredHomeserver, own_moto: MotoServer
) -> None:
    mxc, data = offloaded_media(homeserver, "dead.bin")

    pid = own_moto.pid
    own_moto.stop()
    assert not pid_alive(pid)
    try:
        for _ in range(FAILURES_TO_OPEN):
            failed, elapsed = timed_download(homeserver, mxc)
            assert failed.status >= 500, failed
            assert elapsed < FETCH_DEADLINE + SLACK, f"the error took {elapsed:.1f} s"
        check_downloads_fail_at_once(homeserver, mxc)

        # Uploads do not wait for the store when store_synchronous is false.
        start = time.monotonic()
        homeserver.client.upload(b"written while the store is down", "text/plain", "down.txt")
        assert time.monotonic() - start < 5.0
    finally:
        own_moto.start()  # the same port: moto starts empty
    answering = time.monotonic()
    homeserver.s3.create_bucket(Bucket=homeserver.bucket)
    homeserver.s3.put_object(Bucket=homeserver.bucket, Key=homeserver.key(mxc), Body=data)

    assert wait_until_downloads_work(homeserver, mxc, data, answering) < PROBE_INTERVAL + SLACK
    assert store_up(homeserver) == 1
