"""`check_on_startup`: once the reactor runs, one clear log line says whether the store answers
with the configured credentials, within a bound; "required" stops Synapse when it does not.

Providers are loaded the way Synapse loads them, against moto over HTTP (Ceph's RADOS Gateway
for wrong credentials, which moto does not check), and a real Synapse for "required"."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from synapse.config._base import ConfigError as SynapseConfigError

from servers.ceph_rgw import CephRGW
from servers.moto import MotoServer
from servers.process import free_port, start_process, stop_process
from servers.synapse import SynapseServer, provider_entry
from synapse_objstore import health
from synapse_objstore.cli.homeserver import Homeserver as HomeserverConfig
from synapse_objstore.config import parse_store_config
from synapse_objstore.owner_marker import OWNER_MARKER
from synapse_objstore.testing.synapse_harness import load_provider
from tests.support.s3 import rgw_config, s3_client

PROVIDER_LOGGER = "synapse_objstore.provider"
# A failing check must be reported well within this, however the store fails.
REPORT_BOUND = 15.0


@pytest.fixture
def provider_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=PROVIDER_LOGGER)
    return caplog


def check_line(caplog: pytest.LogCaptureFixture, timeout: float = REPORT_BOUND) -> logging.LogRecord:
    """The provider's check_on_startup log line, waited for (it comes from the reactor thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in list(caplog.records):
            if record.name == PROVIDER_LOGGER and record.getMessage().startswith("check_on_startup:"):
                return record
        time.sleep(0.02)
    raise AssertionError(f"no check_on_startup line within {timeout} s: {caplog.text}")


def check_errors(server_name: str, kind: str) -> float | None:
    labels = {"backend": "s3", "server_name": server_name, "operation": "check", "kind": kind}
    return REGISTRY.get_sample_value("synapse_objstore_errors_total", labels)


def test_a_good_store_is_reported_ok(reactor: Any, moto: MotoServer, bucket: str, media_store: Path,
                                     provider_log: pytest.LogCaptureFixture) -> None:
    config = {"bucket": bucket, "endpoint_url": moto.endpoint_url, "prefix": "hs/"}
    load_provider(reactor, media_store, config)

    line = check_line(provider_log)
    assert line.levelno == logging.INFO
    assert line.getMessage() == f"check_on_startup: s3://{bucket}/hs/ at {moto.endpoint_url} answers: OK"


def test_a_store_another_homeserver_claimed_is_an_error_naming_both(
    reactor: Any, moto: MotoServer, bucket: str, media_store: Path, provider_log: pytest.LogCaptureFixture,
) -> None:
    """objstore-offload records a store's homeserver in an owner marker; a second homeserver
    configured with the same bucket and prefix is told at startup, before either deletes the
    other's media."""
    marker = {"format": 1, "owner": {"server_name": "first.example", "fingerprint": "0123456789abcdef",
                                     "database": "postgres synapse on db:5432"},
              "newest_media_ts": 0, "recorded_at": "2026-12-01T03:30:00+00:00",
              "recorded_by": "objstore-offload upload", "claimed_at": "2026-12-01T03:30:00+00:00"}
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"hs/{OWNER_MARKER}", Body=json.dumps(marker))
    config = {"bucket": bucket, "endpoint_url": moto.endpoint_url, "prefix": "hs/"}
    load_provider(reactor, media_store, config, hostname="second.example")

    line = check_line(provider_log)
    assert line.levelno == logging.ERROR
    assert line.getMessage().startswith(
        f"check_on_startup: s3://{bucket}/hs/ at {moto.endpoint_url} belongs to homeserver first.example (database "
    ), line.getMessage()
    assert "and this homeserver is second.example: two homeservers must never share a bucket and prefix" \
        in line.getMessage()


def test_a_missing_bucket_is_an_error_naming_it(reactor: Any, moto: MotoServer, media_store: Path,
                                               provider_log: pytest.LogCaptureFixture) -> None:
    server_name = f"hs-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    load_provider(reactor, media_store, {"bucket": "no-such-bucket", "endpoint_url": moto.endpoint_url},
                  hostname=server_name)

    line = check_line(provider_log)
    assert time.monotonic() - started < REPORT_BOUND
    assert line.levelno == logging.ERROR
    assert line.getMessage() == (
        f"check_on_startup: cannot use s3://no-such-bucket/ at {moto.endpoint_url}: the bucket or directory "
        "'no-such-bucket' does not exist; media will fail until this is fixed"
    )
    assert check_errors(server_name, "other") == 1


def test_an_unreachable_store_is_an_error_saying_so(reactor: Any, media_store: Path,
                                                   provider_log: pytest.LogCaptureFixture) -> None:
    server_name = f"hs-{uuid.uuid4().hex[:8]}"
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    load_provider(reactor, media_store, {"bucket": "media", "endpoint_url": endpoint, "connect_timeout": 2},
                  hostname=server_name)

    line = check_line(provider_log)
    assert time.monotonic() - started < REPORT_BOUND
    assert line.levelno == logging.ERROR
    assert line.getMessage().startswith(
        f"check_on_startup: cannot use s3://media/ at {endpoint}: the store cannot be reached "
        "(check the endpoint and the network) (EndpointConnectionError: Could not connect to the endpoint URL"
    ), line.getMessage()
    assert check_errors(server_name, "connection") == 1


def test_a_store_that_never_answers_is_reported_within_the_checks_bound(
    reactor: Any, frozen_moto: MotoServer, media_store: Path, provider_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timeouts and retries of the backend that add up to minutes do not hold the check up."""
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    started = time.monotonic()
    load_provider(reactor, media_store, {"bucket": "frozen", "endpoint_url": frozen_moto.endpoint_url,
                                         "read_timeout": 600, "retries": 5})

    line = check_line(provider_log)
    # The bound is the feature: CHECK_TIMEOUT, not the minutes of the backend's own timeouts
    # and retries; the margin above it is for a loaded machine.
    assert 2.0 <= time.monotonic() - started < 2.0 + 8.0
    assert line.levelno == logging.ERROR
    assert "the store did not answer in time (TimeoutError)" in line.getMessage()


@pytest.mark.ceph
def test_wrong_credentials_are_an_error_that_keeps_the_secret_out(
    reactor: Any, rgw: CephRGW, rgw_bucket: str, media_store: Path,
    provider_log: pytest.LogCaptureFixture,
) -> None:
    server_name = f"hs-{uuid.uuid4().hex[:8]}"
    wrong_secret = "wrong-secret-" + uuid.uuid4().hex
    config = rgw_config(rgw, rgw_bucket, secret_access_key=wrong_secret)
    load_provider(reactor, media_store, config, hostname=server_name)

    line = check_line(provider_log)
    assert line.levelno == logging.ERROR
    assert line.getMessage().startswith(
        f"check_on_startup: cannot use s3://{rgw_bucket}/ at {rgw.endpoint_url}: "
        "the store refused the credentials"
    ), line.getMessage()
    assert wrong_secret not in provider_log.text and config["sse_customer_key"] not in provider_log.text
    assert check_errors(server_name, "denied") == 1


@pytest.mark.ceph
def test_a_store_with_sse_c_that_checks_credentials_is_reported_ok(
    reactor: Any, rgw: CephRGW, rgw_bucket: str, media_store: Path,
    provider_log: pytest.LogCaptureFixture,
) -> None:
    """Ceph refuses any object request without the SSE-C key: the check asks for none."""
    load_provider(reactor, media_store, rgw_config(rgw, rgw_bucket))

    line = check_line(provider_log)
    assert line.getMessage() == f"check_on_startup: s3://{rgw_bucket}/ at {rgw.endpoint_url} answers: OK"


def test_a_directory_not_made_yet_is_fine_as_the_first_upload_makes_it(
    reactor: Any, tmp_path: Path, media_store: Path, provider_log: pytest.LogCaptureFixture,
) -> None:
    load_provider(reactor, media_store, {"backend": "fsspec", "url": f"file://{tmp_path / 'archive/media'}"})

    assert "answers: OK" in check_line(provider_log).getMessage()


def test_false_makes_no_check(reactor: Any, moto: MotoServer, media_store: Path,
                              provider_log: pytest.LogCaptureFixture) -> None:
    # A missing bucket: a check would report it.
    unchecked = {"bucket": "no-such-bucket", "endpoint_url": moto.endpoint_url, "check_on_startup": False}
    load_provider(reactor, media_store, unchecked)
    # A witness loaded after it, checking the same store: a check the first provider made would
    # have started before the witness's, on the same I/O loop, and asked the same of the same
    # store, so once the witness's line is logged (and a moment more, as the two run side by
    # side), the absence below is not a line that is merely late.
    load_provider(reactor, media_store, {**unchecked, "prefix": "witness/", "check_on_startup": True})

    witness = check_line(provider_log)
    assert witness.getMessage().startswith("check_on_startup: cannot use s3://no-such-bucket/witness/ at "), \
        witness.getMessage()
    time.sleep(0.5)
    lines = [record.getMessage() for record in provider_log.records if record.getMessage().startswith("check_on")]
    assert lines == [witness.getMessage()]


@pytest.mark.parametrize("value", ["yes", "true", 1, None])
def test_a_value_other_than_true_false_or_required_stops_synapse_naming_the_key(
    reactor: Any, media_store: Path, value: Any
) -> None:
    with pytest.raises(SynapseConfigError) as raised:
        load_provider(reactor, media_store, {"bucket": "m", "check_on_startup": value})
    # Synapse's module loader keeps our message as the cause of its own.
    expected = """synapse_objstore: 'check_on_startup': must be true, false or "required\""""
    assert str(raised.value.__cause__) == expected


def test_the_cli_reads_a_homeserver_config_with_the_key(tmp_path: Path) -> None:
    entry = provider_entry({"bucket": "media", "check_on_startup": "required"})
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump({"media_storage_providers": [entry]}))

    backend = parse_store_config(HomeserverConfig.load([str(config_path)]).provider_config())
    assert backend.settings.check_on_startup == "required"


@pytest.mark.e2e
def test_required_stops_synapse_when_the_check_fails(tmp_path: Path, moto: MotoServer) -> None:
    """Synapse starts listening while the check runs (it runs on the I/O loop, not in the way
    of the reactor), and exits with status 1 as soon as the check fails."""
    config = {"bucket": "no-such-bucket", "endpoint_url": moto.endpoint_url, "check_on_startup": "required"}
    server = SynapseServer(tmp_path, [provider_entry(config)])

    process = start_process(server.argv, server.log_path, cwd=server.directory)
    try:
        code = process.wait(timeout=60)
    finally:
        stop_process(process)

    output = server.log_tail(20_000)
    assert code == 1, output[-3000:]
    assert (
        f"check_on_startup: cannot use s3://no-such-bucket/ at {moto.endpoint_url}: the bucket or directory "
        "'no-such-bucket' does not exist; stopping Synapse" in output
    ), output[-3000:]
