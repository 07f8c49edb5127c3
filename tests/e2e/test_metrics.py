"""The provider's metrics on a real Synapse's metrics listener (Synapse on PostgreSQL, moto over
HTTP): after media goes up and comes back down through the client API, /_synapse/metrics
shows our series, labelled with the backend and the homeserver, with the right values."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.matrix_client import MatrixClient
from servers.moto import MotoServer
from servers.postgres import PostgresUnavailable, ensure_postgres_running, postgres_database, temporary_database
from servers.synapse import SynapseServer, provider_entry
from synapse_objstore.errors import FailureKind
from synapse_objstore.metrics import OPERATIONS
from tests.support.homeserver import MonitoredHomeserver, enable_metrics_listener, provider_config
from tests.support.s3 import s3_client

pytestmark = pytest.mark.e2e


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
    homeserver.server.wait_for_log(
        f"check_on_startup: s3://{homeserver.bucket}/e2e/ at {moto.endpoint_url} answers: OK")


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

