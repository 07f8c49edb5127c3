"""The provider's metrics on a real Synapse's metrics listener (Synapse on PostgreSQL, moto over
HTTP): after media goes up and comes back down through the client API, /_synapse/metrics
shows our series, labelled with the backend and the homeserver, with the right values."""

from __future__ import annotations

import http.client
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from demo.matrix_client import MatrixClient
from synapse_objstore.errors import FailureKind
from synapse_objstore.metrics import OPERATIONS
from tests.conftest import s3_client
from tests.e2e.conftest import Homeserver, provider_config
from tests.servers.moto import MotoServer
from tests.servers.postgres import temporary_database
from tests.servers.process import free_port
from tests.servers.synapse import (
    PostgresUnavailable,
    SynapseServer,
    ensure_postgres_running,
    postgres_database,
    provider_entry,
)

pytestmark = pytest.mark.e2e

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


@pytest.fixture(scope="module")
def homeserver(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[MonitoredHomeserver]:
    try:
        ensure_postgres_running()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    bucket = f"metrics-{uuid.uuid4().hex[:10]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    directory: Path = tmp_path_factory.mktemp("synapse-metrics")
    # "required": a check that failed would stop this Synapse, so one that runs shows it passed.
    providers = [provider_entry(provider_config(moto.endpoint_url, bucket, check_on_startup="required"))]
    with temporary_database("synapse_metrics") as connection_args:
        server = SynapseServer(directory, providers, postgres_database(connection_args))
        metrics_port = enable_metrics_listener(server)
        with server:
            client = MatrixClient.register(server.base_url, server.registration_shared_secret, "alice",
                                           "password")
            yield MonitoredHomeserver(server, client, s3_client(moto.endpoint_url), bucket, metrics_port)


def test_the_startup_check_passed(homeserver: MonitoredHomeserver, moto: MotoServer) -> None:
    # The check runs in the background: its line may follow Synapse's first answer by a while.
    homeserver.server.wait_for_log(f"check_on_startup: s3://{homeserver.bucket}/e2e/ at {moto.endpoint_url} answers: OK")


def test_an_upload_shows_as_stored_bytes_and_objects(homeserver: MonitoredHomeserver) -> None:
    before = homeserver.scrape()
    data = os.urandom(300_000)
    homeserver.client.upload(data, "application/octet-stream", "stored.bin")  # no thumbnails
    after = homeserver.scrape()

    def moved(name: str) -> float:
        return homeserver.ours(after, name) - homeserver.ours(before, name)

    assert moved("synapse_objstore_stored_bytes_total") == len(data)
    assert moved("synapse_objstore_stored_objects_total") == 1
    assert moved("synapse_objstore_store_duration_seconds_count") == 1
    assert moved("synapse_objstore_store_duration_seconds_sum") > 0


def test_a_download_from_the_bucket_shows_as_fetched_bytes_and_time_to_first_byte(
    homeserver: MonitoredHomeserver,
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 7)
    mxc = homeserver.client.upload(data, "application/octet-stream", "fetched.bin")
    homeserver.delete_local_copies(mxc)
    before = homeserver.scrape()

    assert homeserver.client.download(mxc).check().body == data
    # The client has every byte (the response has a Content-Length) a moment before the stream
    # reports itself done, when the object and in-flight series move.
    after = homeserver.scrape_until(
        lambda samples: homeserver.ours(samples, "synapse_objstore_downloads_in_flight") == 0
    )

    def moved(name: str, **labels: str) -> float:
        return homeserver.ours(after, name, **labels) - homeserver.ours(before, name, **labels)

    assert moved("synapse_objstore_fetched_bytes_total") == len(data)
    assert moved("synapse_objstore_fetched_objects_total") == 1
    assert moved("synapse_objstore_fetch_first_byte_seconds_count") == 1
    assert moved("synapse_objstore_fetch_first_byte_seconds_bucket", le="+Inf") == 1
    errors = {labels: value for (name, labels), value in after.items()
              if name == "synapse_objstore_errors_total"}
    assert len(errors) == len(OPERATIONS) * len(FailureKind)  # every series, from the start
    assert set(errors.values()) == {0}


def test_media_missing_from_the_bucket_is_a_miss_not_an_error(homeserver: MonitoredHomeserver) -> None:
    mxc, _ = homeserver.upload_image()
    homeserver.delete_local_copies(mxc)
    homeserver.s3.delete_object(Bucket=homeserver.bucket, Key=homeserver.key(mxc))
    before = homeserver.scrape()

    assert homeserver.client.download(mxc).status == 404
    after = homeserver.scrape()

    def moved(name: str, **labels: str) -> float:
        return homeserver.ours(after, name, **labels) - homeserver.ours(before, name, **labels)

    assert moved("synapse_objstore_fetch_misses_total") >= 1
    assert moved("synapse_objstore_errors_total", operation="fetch", kind="other") == 0

