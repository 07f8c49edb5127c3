"""`rekey` against a store that fails mid-run (the fault proxy in front of Ceph RGW, which
enforces SSE-C): the listing's later pages answered 503 or reset, or never answered. The run
ends as the other commands do when the store becomes unusable: the error named, exit code 2, the
summary, the --metrics-file written; nothing was rewritten, since rekey lists every object
before it rewrites any; a rerun finishes."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from servers.ceph_rgw import CephRGW
from synapse_objstore import health
from synapse_objstore.cli import store_watch
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.listing import on_listing_pages
from tests.support.offload import Offload
from tests.support.s3 import OTHER_KEY, SSE_KEY, rgw_client

pytestmark = pytest.mark.ceph

PREFIX = "media/"
PAGE = 4  # objects per page of the listing, so that a few objects make several pages
NAMES = [f"local_content/fa/ul/t{n:02d}" for n in range(10)]  # listed in this order


@pytest.fixture
def proxy(rgw: CephRGW) -> Iterator[FaultProxy]:
    with FaultProxy(rgw.endpoint_url, seed=5) as server:
        yield server


def config(rgw: CephRGW, bucket: str, endpoint_url: str) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint_url": endpoint_url, "access_key_id": rgw.access_key,
            "secret_access_key": rgw.secret_key, "addressing_style": "path", "prefix": PREFIX,
            "sse_customer_key": SSE_KEY, "previous_sse_customer_keys": [OTHER_KEY]}


def under(s3: Any, bucket: str, name: str) -> str:
    """Which key reads the object: "current" or "previous"."""
    for label, key in (("current", SSE_KEY), ("previous", OTHER_KEY)):
        with contextlib.suppress(botocore.exceptions.ClientError):
            s3.head_object(Bucket=bucket, Key=PREFIX + name, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
            return label
    raise AssertionError(f"no key reads {name}")


@pytest.fixture
def listing_fails_after_its_first_page(
    monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy, rgw_bucket: str,
) -> Any:
    """Pages of PAGE objects; once the first is handed out, the proxy applies `fault` to every
    later request about the bucket itself (the listing's), not to those about its objects."""
    faults: dict[str, Any] = {}

    def after_page(number: int) -> None:
        if number == 1:
            proxy.set(**faults, match=f"^/{rgw_bucket}/?$")

    on_listing_pages(monkeypatch, PAGE, after_page=after_page)
    return faults


@pytest.mark.parametrize("fault", [{"rate_503": 1.0}, {"rate_reset": 1.0}], ids=["503", "reset"])
def test_a_listing_that_fails_mid_run_stops_with_exit_2_its_summary_and_metrics(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path, proxy: FaultProxy,
    listing_fails_after_its_first_page: dict[str, Any], fault: dict[str, Any],
) -> None:
    s3 = rgw_client(rgw)
    for name in NAMES:
        s3.put_object(Bucket=rgw_bucket, Key=PREFIX + name, Body=os.urandom(2000), ContentType="image/png",
                      SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_KEY)
    (workdir / "proxied.yaml").write_text(yaml.safe_dump(config(rgw, rgw_bucket, proxy.endpoint_url)))
    listing_fails_after_its_first_page.update(fault)

    result = offload("--json", "--retries", "0", "--metrics-file", "rekey.prom", "rekey", "--apply", "--jobs", "2",
                     "--store-config", "proxied.yaml", expect=2)
    assert f"rekey stopped: listing s3://{rgw_bucket}/{PREFIX} at {proxy.endpoint_url} failed" in result.stderr
    assert "after 4 objects. Nothing was rewritten" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)  # what the run did before it stopped
    assert summary["objects_listed"] == PAGE and summary["objects_rekeyed"] == 0
    assert summary["files_failed"] == 0 and summary["stopped"]
    prom = (workdir / "rekey.prom").read_text()
    assert 'objstore_offload_last_run_exit_code{command="rekey",shard="0/1"} 2.0' in prom
    assert [under(s3, rgw_bucket, name) for name in NAMES] == ["previous"] * len(NAMES)

    proxy.set(rate_503=0.0, rate_reset=0.0, match=None)  # the dry run's first page passes, as the first run's
    human = offload("--retries", "0", "rekey", "--store-config", "proxied.yaml", expect=2).stdout
    assert "Stopped after 4 objects listed" in human and "Every object is under" not in human

    listing_fails_after_its_first_page.clear()
    proxy.set(rate_503=0.0, rate_reset=0.0, match=None)
    again = json.loads(offload("--json", "rekey", "--apply", "--store-config", "proxied.yaml").stdout)
    assert again["objects_current"] == 0 and again["objects_rekeyed"] == len(NAMES)
    assert not again["stopped"]
    assert [under(s3, rgw_bucket, name) for name in NAMES] == ["current"] * len(NAMES)


def test_a_store_going_silent_mid_run_stops_it_with_exit_2(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path, proxy: FaultProxy,
    listing_fails_after_its_first_page: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing's next page, and the check then asked about the bucket, never answered: the
    run stops once the store has been quiet for QUIET_BEFORE_CHECK and the check got no answer
    (2 s each here), not after the read timeout once per retry (9 minutes a request)."""
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 2.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    s3 = rgw_client(rgw)
    for name in NAMES:
        s3.put_object(Bucket=rgw_bucket, Key=PREFIX + name, Body=os.urandom(2000),
                      SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_KEY)
    (workdir / "proxied.yaml").write_text(yaml.safe_dump(config(rgw, rgw_bucket, proxy.endpoint_url)))
    listing_fails_after_its_first_page.update(silent=True)

    started = time.monotonic()
    result = offload("--json", "rekey", "--apply", "--jobs", "2", "--store-config", "proxied.yaml", expect=2)
    assert time.monotonic() - started < 20
    message = " ".join(result.stderr.split())
    assert f"cannot use s3://{rgw_bucket}/{PREFIX} at {proxy.endpoint_url}: the store did not answer in time" in message
    assert "Stopped the run" in message and "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert summary["objects_listed"] == PAGE and summary["objects_rekeyed"] == 0 and summary["stopped"]
    assert [under(s3, rgw_bucket, name) for name in NAMES] == ["previous"] * len(NAMES)

    listing_fails_after_its_first_page.clear()
    proxy.set(silent=False, match=None)
    again = json.loads(offload("--json", "rekey", "--apply", "--store-config", "proxied.yaml").stdout)
    assert again["objects_current"] == 0 and again["objects_rekeyed"] == len(NAMES)
    assert [under(s3, rgw_bucket, name) for name in NAMES] == ["current"] * len(NAMES)


def test_a_store_going_silent_during_the_rewrites_stops_the_run_with_exit_2(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path, proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole listing answered, then nothing did (the rewrites, and the check asked about
    the bucket): the run stops as above, rather than wait out each rewrite's read timeout."""
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 2.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    # the listing is over: from here on the store answers nothing
    as_before = on_listing_pages(monkeypatch, PAGE, after_listing=lambda: proxy.set(silent=True))
    s3 = rgw_client(rgw)
    for name in NAMES:
        s3.put_object(Bucket=rgw_bucket, Key=PREFIX + name, Body=os.urandom(2000),
                      SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_KEY)
    (workdir / "proxied.yaml").write_text(yaml.safe_dump(config(rgw, rgw_bucket, proxy.endpoint_url)))

    started = time.monotonic()
    result = offload("--json", "rekey", "--apply", "--jobs", "2", "--store-config", "proxied.yaml", expect=2)
    assert time.monotonic() - started < 20
    message = " ".join(result.stderr.split())
    assert "the store did not answer in time" in message and "Stopped the run" in message
    summary = json.loads(result.stdout)
    assert summary["objects_listed"] == len(NAMES) and summary["objects_rekeyed"] == 0 and summary["stopped"]
    assert [under(s3, rgw_bucket, name) for name in NAMES] == ["previous"] * len(NAMES)

    as_before()
    proxy.set(silent=False)
    again = json.loads(offload("--json", "rekey", "--apply", "--store-config", "proxied.yaml").stdout)
    assert again["objects_rekeyed"] == len(NAMES)
    assert [under(s3, rgw_bucket, name) for name in NAMES] == ["current"] * len(NAMES)
