"""update -> upload --delete -> verify -> restore, configured only by homeserver.yaml, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload, cache_rows
from tests.support.s3 import bucket_objects, s3_client

T = TypeVar("T")


def test_offload_verify_restore_from_homeserver_config(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    # only media not accessed for 30 days, never URL previews
    assert cache_rows(workdir) == {
        ("", "AbCdEfGhIjKlMnOp"): 0, ("", "ZyXwVuTsRqPoNmLk"): 0, ("", "emptyMediaFile00"): 0,
        ("matrix.org", "remoteMediaId1"): 0, ("example.com:8448", "remoteMediaId2"): 0,
    }

    result = offload("--json", *config, "upload", "--delete", "--jobs", "4")
    summary = json.loads(result.stdout)
    old_bytes = sum(len(synapse.files[p]) for p in dataset.old)
    assert summary["files_uploaded"] == summary["files_verified"] == summary["files_deleted"] == len(dataset.old)
    assert summary["bytes_uploaded"] == summary["bytes_deleted"] == old_bytes
    assert summary["media_deleted"] == 5 and summary["files_failed"] == 0

    # every old file is in the bucket under the configured prefix, byte for byte, and gone from disk
    assert bucket_objects(moto, bucket) == {f"media/{p}": synapse.files[p] for p in dataset.old}
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)
    assert not (synapse.media_store / "remote_thumbnail").exists()  # emptied directories are removed...
    assert synapse.media_store.is_dir()  # ...but never the media store itself
    assert set(cache_rows(workdir).values()) == {1}

    # a second run has nothing left to do
    again = json.loads(offload("--json", *config, "upload", "--delete").stdout)
    assert again["files_uploaded"] == again["files_deleted"] == 0 and again["media"] == 0

    verified = json.loads(offload("--json", *config, "verify").stdout)
    assert verified["files_verified"] == len(dataset.old) and verified["files_failed"] == 0

    lost = "remote_content/matrix.org/Fs/Id/RemoteOne123"
    s3_client(moto.endpoint_url).delete_object(Bucket=bucket, Key=f"media/{lost}")
    failed = offload("--json", *config, "verify", expect=1)
    report = json.loads(failed.stdout)
    assert report["files_missing"] == 1 and [f["path"] for f in report["failed"]] == [lost]

    restored = json.loads(offload("--json", *config, "restore", expect=1).stdout)
    # everything still in the store comes back intact; the media missing its original stays offloaded
    back = {p: (synapse.media_store / p).read_bytes() for p in dataset.old if (synapse.media_store / p).exists()}
    missing_media = {lost, "remote_thumbnail/matrix.org/Fs/Id/RemoteOne123/32-32-image-png-crop",
                     "remote_thumbnail/matrix.org/Fs/Id/RemoteOne123/640-480-image-jpeg-scale"}
    assert back == {p: synapse.files[p] for p in dataset.old if p not in missing_media}
    assert restored["files_restored"] == len(back)
    assert [f["path"] for f in restored["failed"]] == ["matrix.org/remoteMediaId1"]
    rows = cache_rows(workdir)
    assert rows.pop(("matrix.org", "remoteMediaId1")) == 1
    assert set(rows.values()) == {0}
    assert not (synapse.media_store / ".objstore-offload-tmp").exists()


def test_dry_run_changes_nothing(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    dry = json.loads(offload("--json", *config, "update", "--dry-run", "30d").stdout)
    assert dry == {"command": "update", "dry_run": True, "synced": 5, "deleted": 0, "returned": 0, "failed": []}
    assert cache_rows(workdir) == {}

    offload(*config, "update", "30d")
    before = synapse.local_files()
    summary = json.loads(offload("--json", *config, "upload", "--delete", "--dry-run").stdout)
    assert summary["dry_run"] and summary["files_uploaded"] == summary["files_deleted"] == len(dataset.old)
    assert summary["bytes_uploaded"] == sum(len(synapse.files[p]) for p in dataset.old)
    assert bucket_objects(moto, bucket) == {}
    assert synapse.local_files() == before
    assert set(cache_rows(workdir).values()) == {0}
    human = offload(*config, "upload", "--dry-run").stdout
    assert f"Would have Uploaded {len(dataset.old)} files" in human


def test_upload_delete_takes_one_worker_thread_turn_per_media_to_read_it(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Listing, reading and digesting a media's files is one turn of a worker thread, and its
    deletes ride in the turn of the commit that recorded them: a hand-over to a thread costs
    more than reading a thumbnail (issue 15)."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    turns: Counter[str] = Counter()
    to_thread = asyncio.to_thread

    async def counted(function: Callable[..., T], *args: object, **kwargs: object) -> T:
        turns[getattr(function, "__qualname__", "")] += 1
        return await to_thread(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    summary = json.loads(offload("--json", *config, "upload", "--delete").stdout)
    assert summary["files_deleted"] == len(dataset.old) and summary["media_deleted"] == 5
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)
    assert turns["Offloader._read_media"] == 5  # one per media, whatever its number of files
    assert 1 <= turns["Journal._commit_then"] <= 5  # commits (with their deletes) shared where they can be
    assert not {"Media.local_files", "read_and_digest", "remove_media_files"} & set(turns)
