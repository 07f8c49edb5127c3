"""`upload`, `migrate` and `reconcile` against a store that fails or goes silent while the
start-up ownership check talks to it (the owner marker, and the listing that tells whether a
store being claimed already holds objects), through the fault proxy in front of moto.

A failure stops the run with exit code 2 and a one-line error naming the store and the reason,
as a failed start-up check does, not with a traceback; a store that accepts connections and
answers nothing stops it once it has been quiet for QUIET_BEFORE_CHECK and the check then asked
got no answer (1 s each here; a minute and 30 s by default), not after the read timeout once
per retry (9 minutes a request by default). Nothing local is deleted, and the store is not
claimed by a run that stopped so."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore import health
from synapse_objstore.cli import store_watch
from synapse_objstore.cli.ownership import OWNER_MARKER
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.offload import PREFIX, Dataset, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])

# An upload's first requests to a store nobody claimed yet: the start-up check's HEAD of the
# bucket, then the claim: a HEAD of the owner marker (none), the listing, the marker's PUT...
BEFORE_MARKER_READ = 1
BEFORE_LISTING = 2


def marker_in(moto: MotoServer, bucket: str) -> bool:
    listed = s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}{OWNER_MARKER}")
    return bool(listed.get("Contents"))


def one_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize("fault", [{"deny": "AccessDenied"}, {"rate_503": 1.0}])
def test_a_store_failing_the_claims_listing_stops_the_upload_with_a_clear_error(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    engine: str, fault: dict[str, Any],
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    with FaultProxy(moto.endpoint_url) as proxy:
        proxy.schedule(1, match=f"^/{bucket}/?$", **fault)  # the requests about the bucket after its start-up check
        result = offload(*config, "--retries", "0", "upload", "--delete", "--endpoint-url", proxy.endpoint_url,
                         expect=2)
    error = one_line(result.output)
    reason = "refused the credentials" if "deny" in fault else "answered with an error"
    assert f"cannot use s3://{bucket}/{PREFIX} at {proxy.endpoint_url}: the store {reason}" in error, error
    assert "listing it before recording this homeserver as its owner" in error, error
    assert synapse.local_files() == set(synapse.files)
    assert not marker_in(moto, bucket)  # the next run claims the store, and tells whether it held objects

    offload(*config, "upload", "--delete")  # the store is back
    assert marker_in(moto, bucket)


def silent_after(proxy: FaultProxy, requests: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 1.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 1.0)
    proxy.schedule(requests, silent=True)


def assert_stopped_as_silent(result: Any, proxy: FaultProxy, started: float) -> None:
    elapsed = time.monotonic() - started
    error = one_line(result.output)
    assert elapsed < 10, f"{elapsed:.1f} s\n{result.output}"
    assert f"at {proxy.endpoint_url}: the store did not answer in time" in error, error
    assert "answered none of this run's requests for" in error, error


@pytest.mark.parametrize("silent_from", [BEFORE_MARKER_READ, BEFORE_LISTING])
def test_a_silent_store_stops_the_upload_claiming_it(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str, silent_from: int,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    with FaultProxy(moto.endpoint_url) as proxy:
        # the client's own timeout, once per try, would keep the run waiting for a minute
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url, read_timeout=10)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        silent_after(proxy, silent_from, monkeypatch)
        started = time.monotonic()
        result = offload(*config, "--retries", "2", "upload", "--delete", "--store-config", "proxied.yaml",
                         expect=2)
        assert_stopped_as_silent(result, proxy, started)
    assert synapse.local_files() == set(synapse.files)
    assert not marker_in(moto, bucket)


def test_a_silent_target_stops_migrate_before_it_copies(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload")
    target = f"{bucket}-target"
    s3_client(moto.endpoint_url).create_bucket(Bucket=target)
    with FaultProxy(moto.endpoint_url) as proxy:
        proxied = store_block(moto, target, endpoint_url=proxy.endpoint_url, read_timeout=10)
        (workdir / "target.yaml").write_text(yaml.safe_dump(proxied))
        silent_after(proxy, 1, monkeypatch)  # the target's start-up check answered; its marker's HEAD not
        started = time.monotonic()
        result = offload(*config, "--retries", "2", "migrate", "--to", "target.yaml", expect=2)
        assert_stopped_as_silent(result, proxy, started)
    assert "Contents" not in s3_client(moto.endpoint_url).list_objects_v2(Bucket=target)


def test_a_silent_store_stops_reconcile_reading_its_owner(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload")
    with FaultProxy(moto.endpoint_url) as proxy:
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url, read_timeout=10)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        silent_after(proxy, 1, monkeypatch)  # the start-up check answered; the marker's HEAD not
        started = time.monotonic()
        result = offload(*config, "--retries", "2", "reconcile", "--apply", "--store-config", "proxied.yaml",
                         expect=2)
        assert_stopped_as_silent(result, proxy, started)
