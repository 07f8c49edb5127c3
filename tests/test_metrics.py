"""The provider's Prometheus metrics, read from prometheus_client's registry (the one Synapse
serves), after real stores and fetches through Synapse's classes against moto over HTTP.

Each test gives its provider a homeserver name of its own, so its series start at 0 and
nothing another test does can move them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from servers.moto import MotoServer
from servers.process import free_port
from synapse_objstore import metrics
from synapse_objstore.errors import ConsumerPausedTooLongError, FailureKind, ObjectStoreError
from synapse_objstore.metrics import SERVER_NAME_LABEL
from synapse_objstore.synapse_compat import ConsumerRequestedStopError
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.suite import put_media
from synapse_objstore.testing.synapse_harness import load_provider, local_media, start_streaming, wait_for
from tests.support.s3 import s3_client, s3_config
from tests.support.streaming import record_suspends, wait_until

MiB = 1024 * 1024


class Series:
    """The values of one provider's series (backend s3, one homeserver name)."""

    def __init__(self, server_name: str) -> None:
        self.labels = {"backend": "s3", SERVER_NAME_LABEL: server_name}

    def __call__(self, name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(name, {**self.labels, **labels})
        assert value is not None, f"no series {name} {labels} for {self.labels}"
        return value

    def errors(self) -> dict[tuple[str, str], float]:
        """Every error count that is not 0, by (operation, kind)."""
        counts = {
            (operation, kind.value): self("synapse_objstore_errors_total", operation=operation,
                                          kind=kind.value)
            for operation in metrics.OPERATIONS
            for kind in FailureKind
        }
        return {key: count for key, count in counts.items() if count}

    def in_flight(self) -> float:
        return self("synapse_objstore_downloads_in_flight")


@pytest.fixture
def server_name() -> str:
    return f"hs-{uuid.uuid4().hex[:10]}.test"


@pytest.fixture
def series(server_name: str) -> Series:
    return Series(server_name)


def test_a_store_and_a_fetch_move_the_counters_by_their_sizes(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    server_name: str, series: Series,
) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, check_on_startup=False),
                             hostname=server_name)
    assert series("synapse_objstore_stored_bytes_total") == 0  # the series exist from the start

    stored_path, stored_info = local_media("storedmetrics")
    put_media(media_store, stored_path, os.urandom(70_000))
    started = time.perf_counter()
    in_reactor(provider.store_file, stored_path, stored_info)
    store_took = time.perf_counter() - started

    assert series("synapse_objstore_stored_bytes_total") == 70_000
    assert series("synapse_objstore_stored_objects_total") == 1
    assert series("synapse_objstore_store_duration_seconds_count") == 1
    assert 0 < series("synapse_objstore_store_duration_seconds_sum") <= store_took

    fetched_path, fetched_info = local_media("fetchedmetrics")
    data = os.urandom(3 * MiB + 123)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=fetched_path, Body=data)
    consumer = RecordingConsumer()
    started = time.perf_counter()
    wait_for(in_reactor, start_streaming(in_reactor, provider, fetched_path, fetched_info, consumer))
    fetch_took = time.perf_counter() - started

    assert consumer.data == data
    assert series("synapse_objstore_fetched_bytes_total") == len(data)
    assert series("synapse_objstore_fetched_objects_total") == 1
    assert series("synapse_objstore_fetch_first_byte_seconds_count") == 1
    assert 0 < series("synapse_objstore_fetch_first_byte_seconds_sum") <= fetch_took
    assert series("synapse_objstore_fetch_first_byte_seconds_bucket", le="+Inf") == 1
    assert series("synapse_objstore_downloads_in_flight") == 0

    # Media the store does not hold is an answer, not an error.
    missing_path, missing_info = local_media("notinthestore")
    assert in_reactor(provider.fetch, missing_path, missing_info) is None
    assert series("synapse_objstore_fetch_misses_total") == 1
    assert series.errors() == {}

    in_reactor(provider.backend.delete, fetched_path, fetched_info)
    in_reactor(provider.backend.delete, missing_path, missing_info)
    assert series("synapse_objstore_deleted_objects_total") == 2


def test_downloads_in_flight_counts_streams_until_they_end_however_they_end(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    server_name: str, series: Series, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synapse_objstore import responder

    monkeypatch.setattr(responder, "RELEASE_CONNECTION_AFTER", 0.3)
    monkeypatch.setattr(responder, "PAUSE_TIMEOUT", 3.0)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, check_on_startup=False),
                             hostname=server_name)
    client = s3_client(moto.endpoint_url)
    paths = {}
    for name in ("leavingclient", "resumingclient", "stalledclient"):
        paths[name] = local_media(name)
        client.put_object(Bucket=bucket, Key=paths[name][0], Body=os.urandom(4 * MiB))

    leaving, resuming, stalled = (RecordingConsumer(pause_on_first_write=True) for _ in range(3))
    leaving_done = start_streaming(in_reactor, provider, *paths["leavingclient"], leaving)
    resuming_done = start_streaming(in_reactor, provider, *paths["resumingclient"], resuming)
    wait_until(in_reactor, lambda: leaving.paused and resuming.paused, "both clients to pause after their first chunk")
    assert series.in_flight() == 2
    stalled_done = start_streaming(in_reactor, provider, *paths["stalledclient"], stalled)
    assert series.in_flight() == 3

    # A client that goes away.
    assert leaving.producer is not None
    in_reactor(leaving.producer.stopProducing)
    with pytest.raises(ConsumerRequestedStopError):
        wait_for(in_reactor, leaving_done)
    assert series.in_flight() == 2

    # A client that resumes and gets everything.
    in_reactor(resuming.resume)
    wait_for(in_reactor, resuming_done)
    assert series.in_flight() == 1

    # A client that stays paused past PAUSE_TIMEOUT: taken as gone, and not a store error.
    with pytest.raises(ConsumerPausedTooLongError):
        wait_for(in_reactor, stalled_done)
    assert series.in_flight() == 0
    assert series.errors() == {}
    assert series("synapse_objstore_fetched_objects_total") == 1
    # Bytes count what the clients were really sent, not what was read from the store.
    sent = len(leaving.data) + len(resuming.data) + len(stalled.data)
    assert series("synapse_objstore_fetched_bytes_total") == sent
    assert len(resuming.data) == 4 * MiB and sent < 3 * 4 * MiB


class HangingUpAtTheEnd(RecordingConsumer):
    """A client that closes its connection as soon as it has every byte (an HTTP client reads
    Content-Length bytes and goes), before the stream reports itself done."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.data) == self._size and self.producer is not None:
            self.producer.stopProducing()


def test_a_client_that_hangs_up_after_the_last_byte_counts_as_a_whole_download(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    server_name: str, series: Series,
) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, check_on_startup=False),
                             hostname=server_name)
    path, info = local_media("hangsupatend")
    data = os.urandom(2 * MiB + 1)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    consumer = HangingUpAtTheEnd(len(data))

    with pytest.raises(ConsumerRequestedStopError):
        wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))

    assert consumer.data == data
    assert series("synapse_objstore_fetched_objects_total") == 1
    assert series("synapse_objstore_fetched_bytes_total") == len(data)
    assert series.in_flight() == 0


def test_a_store_that_is_down_counts_connection_errors_by_operation(
    reactor: Any, in_reactor: Callable[..., Any], media_store: Path, server_name: str, series: Series,
) -> None:
    config = {"bucket": "media", "endpoint_url": f"http://127.0.0.1:{free_port()}", "retries": 0,
              "connect_timeout": 2, "check_on_startup": False}
    provider = load_provider(reactor, media_store, config, hostname=server_name)
    path, info = local_media("storeisdown01")
    put_media(media_store, path, b"never stored")

    with pytest.raises(ObjectStoreError):
        in_reactor(provider.store_file, path, info)
    with pytest.raises(ObjectStoreError):
        in_reactor(provider.fetch, path, info)
    with pytest.raises(ObjectStoreError):
        in_reactor(provider.backend.delete, path, info)

    assert series.errors() == {
        ("store", "connection"): 1, ("fetch", "connection"): 1, ("delete", "connection"): 1,
    }
    assert series("synapse_objstore_stored_objects_total") == 0
    assert series("synapse_objstore_store_duration_seconds_count") == 0


def test_a_store_that_does_not_answer_counts_a_timeout(
    reactor: Any, in_reactor: Callable[..., Any], frozen_moto: MotoServer, media_store: Path,
    server_name: str, series: Series,
) -> None:
    config = {"bucket": "frozen", "endpoint_url": frozen_moto.endpoint_url, "retries": 0,
              "connect_timeout": 1, "read_timeout": 1, "check_on_startup": False}
    provider = load_provider(reactor, media_store, config, hostname=server_name)
    path, info = local_media("frozenstore01")
    with pytest.raises(ObjectStoreError, match="could not fetch"):
        in_reactor(provider.fetch, path, info)
    assert series.errors() == {("fetch", "timeout"): 1}


def test_a_stream_that_fails_midway_counts_a_stream_error_and_ends_in_flight(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    server_name: str, series: Series, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synapse_objstore import responder

    monkeypatch.setattr(responder, "RELEASE_CONNECTION_AFTER", 0.3)
    suspends = record_suspends(monkeypatch)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, check_on_startup=False),
                             hostname=server_name)
    path, info = local_media("replacedmidway")
    client = s3_client(moto.endpoint_url)
    client.put_object(Bucket=bucket, Key=path, Body=b"a" * (4 * MiB))
    consumer = RecordingConsumer(pause_on_first_write=True)
    done = start_streaming(in_reactor, provider, path, info, consumer)
    wait_until(in_reactor, lambda: bool(suspends), "the paused stream to give its connection back")
    client.put_object(Bucket=bucket, Key=path, Body=b"b" * (4 * MiB))  # its resumed read no longer matches

    in_reactor(consumer.resume)
    with pytest.raises(ObjectStoreError, match="could not stream"):
        wait_for(in_reactor, done)
    assert series.errors() == {("stream", "other"): 1}
    assert series.in_flight() == 0
    assert series("synapse_objstore_fetched_objects_total") == 0
    assert series("synapse_objstore_fetched_bytes_total") == len(consumer.data)


def test_two_homeservers_in_one_process_have_series_of_their_own(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
) -> None:
    first, second = Series(f"first-{uuid.uuid4().hex[:8]}"), Series(f"second-{uuid.uuid4().hex[:8]}")
    first_provider = load_provider(reactor, media_store, s3_config(moto, bucket, check_on_startup=False),
                                   hostname=first.labels[SERVER_NAME_LABEL])
    load_provider(reactor, media_store, s3_config(moto, bucket, check_on_startup=False),
                  hostname=second.labels[SERVER_NAME_LABEL])
    path, info = local_media("firstserver01")
    put_media(media_store, path, b"x" * 1000)

    in_reactor(first_provider.store_file, path, info)

    assert first("synapse_objstore_stored_bytes_total") == 1000
    assert second("synapse_objstore_stored_bytes_total") == 0


def test_the_cli_loads_without_prometheus_client_or_synapse() -> None:
    """The CLI runs where neither is installed: only the provider imports the metrics."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, synapse_objstore.cli.main; print(sorted(m for m in "
         "('prometheus_client', 'synapse', 'synapse_objstore.metrics') if m in sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert loaded.stdout.strip() == "[]"


def test_the_homeserver_label_is_the_one_synapse_puts_on_its_own_series() -> None:
    import synapse.metrics

    if not hasattr(synapse.metrics, "SERVER_NAME_LABEL"):
        pytest.skip("Synapse < 1.135 puts no homeserver label on its series")
    assert metrics.SERVER_NAME_LABEL == synapse.metrics.SERVER_NAME_LABEL
