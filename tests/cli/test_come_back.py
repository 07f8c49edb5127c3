"""Media that come back to local disk after they were offloaded are freed again, after the
store's copy is verified; a copy that differs from the store's is never uploaded over it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload, cache_rows
from tests.support.s3 import bucket_objects, s3_client

ORIGINAL = "local_content/Ab/Cd/EfGhIjKlMnOp"
NEW_THUMBNAIL = "local_thumbnails/Ab/Cd/EfGhIjKlMnOp/96-96-image-png-scale"
REMOTE = "remote_content/matrix.org/Fs/Id/RemoteOne123"
COPIED_BACK = "local_content/Zy/Xw/VuTsRqPoNmLk"  # put back by hand: no access recorded


def run(offload: Offload, *args: str, expect: int = 0) -> dict[str, Any]:
    return dict(json.loads(offload("--json", *args, expect=expect).stdout))


def served(synapse: SynapseMedia, origin: str, media_id: str) -> None:
    """What Synapse does when it serves a media: its last access time moves (flushed each minute)."""
    table, where = ("remote_media_cache", "media_origin = %s AND ") if origin else ("local_media_repository", "")
    args = (synapse.now_ms, origin, media_id) if origin else (synapse.now_ms, media_id)
    sql = f"UPDATE {table} SET last_access_ts = %s WHERE {where}media_id = %s"
    synapse.conn.cursor().execute(synapse._sql(sql), args)
    synapse.conn.commit()


def write(synapse: SynapseMedia, media_path: str, data: bytes) -> None:
    path = synapse.media_store / media_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def offloaded(offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset) -> list[str]:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)
    return config


def test_media_that_come_back_are_freed_again_by_the_nightly_run(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    # Synapse serves a thumbnail size it does not have: it downloads the original from the store
    # (the same bytes) and writes the new thumbnail next to it; a remote media comes back likewise.
    write(synapse, ORIGINAL, synapse.files[ORIGINAL])
    write(synapse, NEW_THUMBNAIL, b"a new thumbnail")
    served(synapse, "", "AbCdEfGhIjKlMnOp")
    write(synapse, REMOTE, synapse.files[REMOTE])
    served(synapse, "matrix.org", "remoteMediaId1")
    write(synapse, COPIED_BACK, synapse.files[COPIED_BACK])

    # the nightly run: only media served since the last look are looked at
    nightly = run(offload, *offloaded, "update", "30d")
    assert nightly["returned"] == 2 and nightly["synced"] == 0
    assert cache_rows(workdir)[("", "AbCdEfGhIjKlMnOp")] == cache_rows(workdir)[("matrix.org", "remoteMediaId1")] == 0
    assert cache_rows(workdir)[("", "ZyXwVuTsRqPoNmLk")] == 1
    listed = offload("write").stdout.splitlines()
    assert ORIGINAL in listed and REMOTE in listed and COPIED_BACK not in listed

    summary = run(offload, *offloaded, "upload", "--delete")
    assert summary["media"] == 2 and summary["media_deleted"] == 2 and summary["files_deleted"] == 3
    assert summary["files_uploaded"] == 1  # the new thumbnail; the originals were verified in the store
    assert summary["files_verified"] == 3
    assert bucket_objects(moto, bucket)[f"media/{NEW_THUMBNAIL}"] == b"a new thumbnail"
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache) | {COPIED_BACK}
    assert cache_rows(workdir)[("", "AbCdEfGhIjKlMnOp")] == cache_rows(workdir)[("matrix.org", "remoteMediaId1")] == 1

    # nothing was served since: the next nightly run looks at nothing
    assert run(offload, *offloaded, "update", "30d")["returned"] == 0
    # check-deleted without Synapse's database (as s3_media_upload runs it) looks at every offloaded media
    found = run(offload, "check-deleted", str(synapse.media_store))
    assert found == {"command": "check-deleted", "dry_run": False, "deleted": 0, "returned": 1, "failed": []}
    assert run(offload, *offloaded, "upload", "--delete")["media_deleted"] == 1
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_come_back_that_differs_from_the_store_is_never_uploaded_over_it(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    """Synapse writes a download straight into place: one cut short leaves part of the original.
    That copy is not uploaded over the intact one in the store, nor deleted: it fails, named."""
    partial = synapse.files[COPIED_BACK][:5 * 1024 * 1024]
    write(synapse, COPIED_BACK, partial)
    # a media offloaded by s3_media_upload: no record of its verified copy, only that it came back
    remote_two = "remote_content/example.com:8448/Fs/Id/RemoteTwo456"
    write(synapse, remote_two, b"changed")
    with sqlite3.connect(workdir / "cache.db") as conn:
        conn.execute("DELETE FROM objstore_files WHERE path = ?", (remote_two,))
    # and one whose store copy was replaced since it was verified: the local copy is the verified content
    replaced = "local_content/em/pt/yMediaFile00"
    write(synapse, replaced, b"")
    stored_before = bucket_objects(moto, bucket)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"media/{replaced}", Body=b"garbage")

    assert run(offload, *offloaded, "check-deleted", "--full")["returned"] == 3
    summary = run(offload, *offloaded, "upload", "--delete", expect=1)
    failed = {f["path"]: f["error"] for f in summary["failed"]}
    assert set(failed) == {COPIED_BACK, remote_two}
    assert failed[COPIED_BACK].startswith(
        f"the local file differs from the remote copy (remote size {len(synapse.files[COPIED_BACK])} != local size "
        f"{len(partial)}), which holds the content verified when this file was offloaded")
    assert "not uploaded over it, not deleted" in failed[COPIED_BACK]
    assert "which is where this media was offloaded to, and came back from" in failed[remote_two]
    stored = bucket_objects(moto, bucket)
    assert stored[f"media/{COPIED_BACK}"] == synapse.files[COPIED_BACK] == stored_before[f"media/{COPIED_BACK}"]
    assert stored[f"media/{remote_two}"] == synapse.files[remote_two]
    assert (synapse.media_store / COPIED_BACK).read_bytes() == partial
    assert (synapse.media_store / remote_two).read_bytes() == b"changed"
    # the verified content goes back over a store copy that changed since
    assert stored[f"media/{replaced}"] == b"" and not (synapse.media_store / replaced).exists()
    assert cache_rows(workdir)[("", "ZyXwVuTsRqPoNmLk")] == 0
