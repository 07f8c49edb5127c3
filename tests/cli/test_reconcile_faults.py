"""`reconcile` and the owner marker against a store having a bad day (the fault proxy in front
of moto): a delete refused, a listing that fails, a marker that arrives damaged."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.owner_marker import OWNER_MARKER
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])
DOOMED = "AbCdEfGhIjKlMnOp"
MARKER_KEY = f"media/{OWNER_MARKER}"


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url, seed=11) as server:
        yield server


@pytest.fixture
def through_proxy(workdir: Path, moto: MotoServer, bucket: str, proxy: FaultProxy) -> list[str]:
    """The store options that reach the bucket through the proxy, with no retries of the client."""
    (workdir / "proxied.yaml").write_text(yaml.safe_dump(store_block(moto, bucket, endpoint_url=proxy.endpoint_url)))
    return ["--store-config", "proxied.yaml"]


def keys(moto: MotoServer, bucket: str) -> set[str]:
    listed = s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed}


def cached_media(workdir: Path) -> set[str]:
    with sqlite3.connect(workdir / "cache.db") as conn:
        return {media_id for (media_id,) in conn.execute("SELECT media_id FROM media")}


@pytest.fixture
def config(offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset) -> list[str]:
    """Old media offloaded (the store claimed), then one of them deleted from Synapse."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    for table in ("local_media_repository", "local_media_repository_thumbnails"):
        synapse.conn.cursor().execute(synapse._sql(f"DELETE FROM {table} WHERE media_id = %s"), (DOOMED,))
    synapse.conn.commit()
    return config


def test_a_refused_delete_fails_that_object_and_the_next_run_deletes_it(
    offload: Offload, config: list[str], through_proxy: list[str], proxy: FaultProxy, moto: MotoServer,
    bucket: str, workdir: Path,
) -> None:
    """cache.db forgets a media before its objects are deleted: a delete that fails (or a run
    killed before it) leaves an orphan for the next run, never a record of a deleted object."""
    original = f"media/local_content/{DOOMED[:2]}/{DOOMED[2:4]}/{DOOMED[4:]}"
    proxy.set(deny="AccessDenied", match=f"^/{bucket}/{original}$")
    result = offload("--json", *config, "--retries", "0", "reconcile", *through_proxy, "--grace", "0s", "--apply",
                     "--max-delete-share", "100", expect=1)
    summary = json.loads(result.stdout)
    assert [failure["path"] for failure in summary["failed"]] == [original.removeprefix("media/")]
    assert "PermissionError: Access Denied" in summary["failed"][0]["error"]
    assert summary["files_deleted"] == 2  # the two thumbnails
    assert original in keys(moto, bucket)
    assert DOOMED not in cached_media(workdir)

    proxy.set(deny=None, match=None)
    again = json.loads(offload("--json", *config, "reconcile", *through_proxy, "--grace", "0s", "--apply",
                               "--max-delete-share", "100").stdout)
    assert again["files_deleted"] == 1 and original not in keys(moto, bucket)


def test_a_listing_that_fails_stops_the_run_with_exit_2(
    offload: Offload, config: list[str], through_proxy: list[str], proxy: FaultProxy, moto: MotoServer,
    bucket: str,
) -> None:
    before = keys(moto, bucket)
    # the bucket's HEAD and the marker's HEAD and GET pass; from the listing on, the bucket is gone
    proxy.schedule(3, no_bucket=True)
    result = offload(*config, "--retries", "0", "reconcile", *through_proxy, "--grace", "0s", "--apply",
                     "--max-delete-share", "100", expect=2)
    assert f"reconcile stopped: listing s3://{bucket}/media/ at {proxy.endpoint_url} failed" in result.output
    assert keys(moto, bucket) == before


def test_a_marker_damaged_on_its_way_is_not_left_in_the_store(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, proxy: FaultProxy,
    moto: MotoServer, bucket: str,
) -> None:
    """A marker the store took wrong would stop every later run: it is written again, and if it
    still does not read back as written, removed; the upload (which deletes nothing remote) goes on."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    proxy.set(flip_byte=True, match=f"/{OWNER_MARKER}$")
    uploaded = offload(*config, "upload", "--delete", "--endpoint-url", proxy.endpoint_url)
    assert "did not read back as written (so it was removed)" in uploaded.stderr
    assert MARKER_KEY not in keys(moto, bucket)
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)  # the media went all the same

    proxy.set(flip_byte=False, match=None)
    offload(*config, "update", "30d")
    offload(*config, "upload", "--endpoint-url", proxy.endpoint_url)
    assert MARKER_KEY in keys(moto, bucket)
