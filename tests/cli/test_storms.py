"""`upload` against a store having a bad day, through the fault proxy in front of moto.

- A storm of 503 SlowDown and connection resets is ridden out in one run: by the batch retry
  policy (more retries than the provider's) and by one more try, at the end of the run, of
  the media that still failed because of the store.
- A store that fails as a whole mid-run (credentials revoked, bucket gone) stops the run at
  once with exit code 2; one object that is denied fails alone. So does a store that goes
  silent, once it has been quiet for a while.
- A copy that arrives wrong (a byte flipped on the way, or an upload acknowledged with a
  wrong ETag) is never taken for verified: the local file stays, the failure is reported.

Every case ends with the same check: nothing is lost (each file is on disk, or deleted after
its verification was recorded, with its right bytes in the bucket, read past the proxy).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.config import Config

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia, Thumb
from synapse_objstore import health
from synapse_objstore.cli import store_watch
from synapse_objstore.cli.main import Context
from synapse_objstore.config import parse_store_config
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from tests.support.offload import Dataset, Offload, assert_nothing_lost
from tests.support.s3 import s3_client

# With this seed, the storm's faults hit some object more times in a row than the provider's
# two retries ride out: without the batch policy and the second try, the run leaves a file.
SEED = 27
BIG = "local_content/Zy/Xw/VuTsRqPoNmLk"  # the dataset's multipart original (3 parts)
SMALL = "local_content/Ab/Cd/EfGhIjKlMnOp"  # one of its small originals


def add_media(synapse: SynapseMedia, count: int) -> list[str]:
    """`count` small old local media with a thumbnail each; their media paths."""
    paths: list[str] = []
    for n in range(count):
        thumb = [Thumb(32, 32, "image/png", "crop", os.urandom(300 + n))]
        paths += synapse.add_local(f"stormMedia{n:04d}xyz", os.urandom(2000 + n), 40, thumb)
    return paths


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url, seed=SEED) as server:
        yield server


def upload(offload: Offload, homeserver_yaml: Path, proxy: FaultProxy, *args: str, expect: int = 0) -> Any:
    """`upload --delete [args]` through the proxy; its JSON summary."""
    result = offload("--json", "--config", str(homeserver_yaml), "upload", "--delete",
                     "--endpoint-url", proxy.endpoint_url, *args, expect=expect)
    return json.loads(result.stdout)


def assert_all_offloaded(synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
                         dataset: Dataset | None = None) -> None:
    """Every old file is deleted locally, its verified copy in the bucket; cache.db agrees."""
    staying = set(dataset.recent + dataset.url_cache) if dataset is not None else set()
    assert synapse.local_files() == staying
    assert assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db") == len(synapse.files) - len(staying)
    with sqlite3.connect(workdir / "cache.db") as conn:
        assert conn.execute("SELECT count(*) FROM media WHERE NOT known_deleted").fetchone() == (0,)


def faults_seen(proxy: FaultProxy, *names: str) -> int:
    stats = proxy.stats()
    return sum(stats.get(name, 0) for name in names)


# ---------------------------------------------------------------- storms


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_offload_rides_out_a_storm_in_one_run(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, proxy: FaultProxy,
) -> None:
    add_media(synapse, 30)
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(rate_503=0.10, rate_reset=0.05)
    summary = upload(offload, homeserver_yaml, proxy)
    # the storm was real: both kinds of fault hit the run, and some object more times in a
    # row than the provider's own retries would ride out
    assert faults_seen(proxy, "slowdown") >= 5
    assert faults_seen(proxy, "reset mid-request", "reset before reply") >= 3
    assert proxy.stats()["most faults in a row"] >= 3
    assert summary["files_failed"] == 0
    assert summary["media_retried"] == 0  # each request's retries rode it out
    assert summary["files_deleted"] == len(dataset.old) + 60
    assert_all_offloaded(synapse, moto, bucket, workdir, dataset)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_each_request_gets_the_batch_retries(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    proxy: FaultProxy,
) -> None:
    """SlowDown for the first three requests about one object: more than the provider's 2
    retries, well within the CLI's, so no second try of the media is needed."""
    paths = add_media(synapse, 4)
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(fail_first=3, match=re.escape(paths[0]))
    summary = upload(offload, homeserver_yaml, proxy)
    assert faults_seen(proxy, "slowdown") == 3
    assert summary["media_retried"] == 0
    assert_all_offloaded(synapse, moto, bucket, workdir)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_retries_option_sets_the_retries(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    proxy: FaultProxy,
) -> None:
    """With --retries 2 (the provider's default) the same SlowDowns outlast the client's
    retries: that media needs the second try at the end of the run, which then succeeds."""
    paths = add_media(synapse, 4)
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(fail_first=3, match=re.escape(paths[0]))
    result = offload("--json", "--retries", "2", "--config", str(homeserver_yaml), "upload", "--delete",
                     "--endpoint-url", proxy.endpoint_url)
    assert json.loads(result.stdout)["media_retried"] == 1
    assert_all_offloaded(synapse, moto, bucket, workdir)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_media_failed_by_the_store_get_one_more_try(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    proxy: FaultProxy,
) -> None:
    """The first two requests about each object are refused with SlowDown, more than
    `--retries 1` rides out: every media fails once, and all are done by their second try
    in the same run."""
    add_media(synapse, 6)
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(fail_first=2, match="/media/")
    result = offload("--config", str(homeserver_yaml), "--retries", "1", "upload", "--delete",
                     "--endpoint-url", proxy.endpoint_url)
    assert "Retried 6 media once more after the store failed" in result.output
    assert "Failed 0 files" in result.output
    assert_all_offloaded(synapse, moto, bucket, workdir)


@pytest.mark.parametrize(("block", "option", "expected"), [
    ({"bucket": "media"}, None, 8),
    ({"bucket": "media", "retries": 12}, None, 12),  # a config with more keeps its own
    ({"bucket": "media"}, 3, 3),
    ({"backend": "azure", "container": "media", "account_name": "synapse"}, None, 5),  # waits without a cap
    ({"backend": "azure", "container": "media", "account_name": "synapse"}, 9, 9),
    ({"backend": "gcs", "bucket": "media", "token": "anon"}, None, 8),
    ({"backend": "fsspec", "url": "file:///srv/media"}, 4, None),  # no such setting
], ids=["s3", "s3-config", "s3-option", "azure", "azure-option", "gcs", "fsspec"])
def test_batch_commands_give_each_backend_its_retries(
    workdir: Path, block: dict[str, Any], option: int | None, expected: int | None,
) -> None:
    """The provider's Synapse-facing default stays 2; the batch commands' store gets more."""
    assert getattr(parse_store_config(block).settings, "retries", 2) == block.get("retries", 2)
    context = Context(cache_db_path="cache.db", progress=False, as_json=False, config_paths=(), retries=option)
    (workdir / "store.yaml").write_text(yaml.safe_dump(block))
    assert getattr(context.store("store.yaml").backend.settings, "retries", None) == expected


@pytest.mark.parametrize("engine", ["sqlite"])
def test_retries_beyond_what_the_backend_takes_are_refused(
    offload: Offload, synapse: SynapseMedia, workdir: Path,
) -> None:
    (workdir / "store.yaml").write_text(yaml.safe_dump({"backend": "gcs", "bucket": "media", "token": "anon"}))
    result = offload("--retries", "15", "verify", "--store-config", "store.yaml", expect=2)
    assert "--retries" in result.output and "this backend takes at most 10" in result.output


# ---------------------------------------------------------------- the whole store fails


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize(("change", "reason"), [
    ({"deny": "InvalidAccessKeyId"}, "the store refused the credentials"),
    ({"deny": "AccessDenied"}, "the store refused the credentials"),
    ({"no_bucket": True}, "the bucket or directory '{bucket}' does not exist"),
], ids=["credentials-revoked", "access-denied", "bucket-gone"])
def test_store_failing_as_a_whole_stops_the_run_at_once(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    proxy: FaultProxy, change: dict[str, Any], reason: str,
) -> None:
    paths = add_media(synapse, 40)
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.schedule(30, **change)
    # in front, a proxy that never answers about one object: its upload is still under way
    # (for a minute, the read timeout) when the store fails, and is abandoned at once
    with FaultProxy(proxy.endpoint_url, Faults(silent=True, match=re.escape(paths[2]) + "$")) as front:
        started = time.monotonic()
        result = offload("--config", str(homeserver_yaml), "upload", "--delete", "--jobs", "4",
                         "--endpoint-url", front.endpoint_url, expect=2)
        assert time.monotonic() - started < 30
        assert front.stats()["silenced"] == 1
    message = " ".join(result.output.split())
    assert f"cannot use s3://{bucket}/media/ at {front.endpoint_url}: {reason.format(bucket=bucket)}" in message
    assert "Stopped the run" in message and "Run the same command again" in message
    # at once: a handful of requests after the store went, not one (or two) per remaining file
    assert faults_seen(proxy, "denied", "no bucket") <= 12, proxy.stats()
    assert 0 < assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db") <= 40
    # and once the store is back, a rerun finishes the job
    proxy.set(deny=None, no_bucket=False)
    upload(offload, homeserver_yaml, proxy)
    assert_all_offloaded(synapse, moto, bucket, workdir)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_store_going_silent_stops_the_run(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that stops answering mid-run (every request read, none answered) stops the run
    once it has been quiet for QUIET_BEFORE_CHECK and the check then asked gets no answer
    (here 2 s each, a minute and 30 s by default), with exit code 2, instead of each request
    waiting out its 60 s read timeout once per retry (9 minutes a request, days for a large
    media store); what was verified before is kept, and a rerun finishes the job."""
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 2.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    add_media(synapse, 40)
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.schedule(30, silent=True)
    started = time.monotonic()
    result = offload("--config", str(homeserver_yaml), "upload", "--delete", "--jobs", "4",
                     "--endpoint-url", proxy.endpoint_url, expect=2)
    assert time.monotonic() - started < 20
    message = " ".join(result.output.split())
    assert f"cannot use s3://{bucket}/media/ at {proxy.endpoint_url}: the store did not answer in time" in message
    assert "answered none of this run's requests for" in message and "Stopped the run" in message
    assert proxy.stats()["silenced"] <= 4 + 1  # the uploads under way, and the check
    assert 0 < assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db") < 40
    proxy.set(silent=False)
    upload(offload, homeserver_yaml, proxy)
    assert_all_offloaded(synapse, moto, bucket, workdir)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_one_denied_object_fails_alone(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    proxy: FaultProxy,
) -> None:
    """A bucket policy denying one key: that file fails (no second try: a denial is final),
    the run goes on with every other media and ends with exit code 1."""
    paths = add_media(synapse, 12)
    denied = paths[5]
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(deny="AccessDenied", match=re.escape(denied) + "$")
    summary = upload(offload, homeserver_yaml, proxy, expect=1)
    assert [f["path"] for f in summary["failed"]] == [denied]
    assert "Access Denied" in summary["failed"][0]["error"]
    assert summary["media_retried"] == 0
    assert synapse.local_files() == {denied}
    assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db")


# ---------------------------------------------------------------- copies that arrive wrong


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("size_only", [False, True], ids=["read-back", "size-only"])
@pytest.mark.parametrize("target", [SMALL, BIG], ids=["put", "multipart"])
def test_flipped_byte_is_never_verified(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, proxy: FaultProxy, target: str, size_only: bool,
) -> None:
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(flip_byte=True, match=re.escape(target) + "$")
    summary = upload(offload, homeserver_yaml, proxy, *(["--size-only"] if size_only else []), expect=1)
    assert faults_seen(proxy, "flipped") >= 1
    assert [f["path"] for f in summary["failed"]] == [target]
    assert "differs after upload" in summary["failed"][0]["error"]
    assert (synapse.media_store / target).read_bytes() == synapse.files[target]
    assert synapse.local_files() == {target, *dataset.recent, *dataset.url_cache}
    assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db")
    # without the fault, the next run replaces the wrong copy and frees the file
    proxy.set(flip_byte=False)
    upload(offload, homeserver_yaml, proxy)
    assert_all_offloaded(synapse, moto, bucket, workdir, dataset)


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("target", [SMALL, BIG], ids=["put", "multipart"])
def test_upload_acknowledged_with_a_wrong_etag_is_not_verified(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, proxy: FaultProxy, target: str,
) -> None:
    """The store keeps the right bytes but says it received others: not believed."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(wrong_etag=True, match=re.escape(target) + "$")
    summary = upload(offload, homeserver_yaml, proxy, expect=1)
    assert faults_seen(proxy, "wrong etag") == 1
    assert [f["path"] for f in summary["failed"]] == [target]
    assert "the store acknowledged the upload with ETag" in summary["failed"][0]["error"]
    assert synapse.local_files() == {target, *dataset.recent, *dataset.url_cache}
    assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db")
    proxy.set(wrong_etag=False)
    upload(offload, homeserver_yaml, proxy)
    assert_all_offloaded(synapse, moto, bucket, workdir, dataset)


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("target", [SMALL, BIG], ids=["put", "multipart"])
def test_upload_acknowledged_with_an_empty_etag_is_verified_on_the_store(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, proxy: FaultProxy, target: str,
) -> None:
    """An empty ETag in an upload's reply (Ceph RGW answered a CompleteMultipartUpload so under
    load) names no content: the copy is checked on the store as without one, and offloaded,
    rather than failed as acknowledged with another checksum."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(blank_etag=True, match=re.escape(target) + "$")
    summary = upload(offload, homeserver_yaml, proxy)
    assert faults_seen(proxy, "wrong etag") == 1
    assert summary["files_failed"] == 0
    assert_all_offloaded(synapse, moto, bucket, workdir, dataset)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_store_whose_etags_are_no_md5s_is_read_back(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, proxy: FaultProxy,
) -> None:
    """A store that says the same non-MD5 ETag of an object every time (SSE-KMS does) is not
    contradicting itself: each copy is verified by reading it back, and the files are freed."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    proxy.set(opaque_etags=True)
    summary = upload(offload, homeserver_yaml, proxy)
    assert summary["files_verified"] == len(dataset.old)
    assert proxy.stats()["requests GET"] >= len(dataset.old) - 1  # the empty file needs no read-back
    assert_all_offloaded(synapse, moto, bucket, workdir, dataset)


def test_proxy_stores_what_it_says(moto: MotoServer, bucket: str, proxy: FaultProxy) -> None:
    """The proxy itself: a flipped byte reaches the store, a wrong ETag does not."""
    plain = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    client = s3_client(proxy.endpoint_url, config=plain)
    direct = s3_client(moto.endpoint_url, config=plain)
    data = os.urandom(1000)
    proxy.set(flip_byte=True)
    client.put_object(Bucket=bucket, Key="flipped", Body=data)
    stored = direct.get_object(Bucket=bucket, Key="flipped")["Body"].read()
    assert len(stored) == len(data) and sum(a != b for a, b in zip(stored, data, strict=True)) == 1
    proxy.set(flip_byte=False, wrong_etag=True)
    reply = client.put_object(Bucket=bucket, Key="etag", Body=data)
    assert reply["ETag"] != direct.head_object(Bucket=bucket, Key="etag")["ETag"]
    assert direct.get_object(Bucket=bucket, Key="etag")["Body"].read() == data
