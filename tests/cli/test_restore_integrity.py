"""restore puts back only the media's own bytes, where Synapse's files go.

An object overwritten with other bytes of the same size passes a check against the store's own
ETag (the bytes arrived as the store holds them): restore checks each file against the MD5
cache.db recorded when it was offloaded, else the SHA-256 stored with the object, and fails
the file rather than put other bytes in place. The same check lets a store whose ETags are no
MD5s (SSE-KMS) be restored from. Files are placed through real directories only, as upload
reads and deletes (never through a symlink out of the media store), with the permissions
Synapse's own files get."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.offload import PREFIX, Dataset, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])
ORIGINAL = "local_content/Ab/Cd/EfGhIjKlMnOp"  # the dataset's small local original


def offload_all(offload: Offload, homeserver_yaml: Path) -> list[str]:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    return config


def overwrite(moto: MotoServer, bucket: str, synapse: SynapseMedia, metadata: dict[str, str]) -> None:
    """The original's object, replaced with other bytes of its size (and `metadata`)."""
    size = len(synapse.files[ORIGINAL])
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=PREFIX + ORIGINAL, Body=os.urandom(size),
                                            Metadata=metadata)


@pytest.mark.parametrize("metadata", ["none", "sha256 copied"])
def test_an_object_overwritten_with_other_bytes_is_not_restored(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    metadata: str,
) -> None:
    config = offload_all(offload, homeserver_yaml)
    s3 = s3_client(moto.endpoint_url)
    stored = s3.head_object(Bucket=bucket, Key=PREFIX + ORIGINAL)["Metadata"]
    overwrite(moto, bucket, synapse, stored if metadata == "sha256 copied" else {})

    summary = json.loads(offload("--json", *config, "restore", expect=1).stdout)
    assert [(f["path"], "not that of the file offloaded" in f["error"]) for f in summary["failed"]] == [
        (ORIGINAL, True)]
    assert not (synapse.media_store / ORIGINAL).exists()
    assert summary["files_restored"] == len(dataset.old) - 1
    assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in dataset.old if p != ORIGINAL)


def test_without_a_record_the_sha256_stored_with_the_object_decides(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    """A file this cache.db holds no checksum of (offloaded by another tool, or records lost)
    is checked against the sha256 uploaded beside it."""
    config = offload_all(offload, homeserver_yaml)
    stored = s3_client(moto.endpoint_url).head_object(Bucket=bucket, Key=PREFIX + ORIGINAL)["Metadata"]
    assert stored.get("sha256")
    overwrite(moto, bucket, synapse, stored)
    with sqlite3.connect(workdir / "cache.db") as db:
        db.execute("UPDATE objstore_files SET md5 = NULL, sha256 = NULL")

    summary = json.loads(offload("--json", *config, "restore", expect=1).stdout)
    assert [(f["path"], "SHA-256" in f["error"]) for f in summary["failed"]] == [(ORIGINAL, True)]
    assert not (synapse.media_store / ORIGINAL).exists()


def test_a_store_whose_etags_are_no_md5s_is_restored_from(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    tmp_path: Path,
) -> None:
    """SSE-KMS gives every object an ETag that looks like an MD5 and is not one: the content
    is checked against what was offloaded instead, and every file comes back."""
    offload_all(offload, homeserver_yaml)
    with FaultProxy(moto.endpoint_url) as proxy:
        proxy.set(opaque_etags=True)
        store_yaml = tmp_path / "through-proxy.yaml"
        store_yaml.write_text(yaml.safe_dump(store_block(moto, bucket, endpoint_url=proxy.endpoint_url)))
        summary = json.loads(offload("--json", "--config", str(homeserver_yaml), "restore", "--store-config",
                                     str(store_yaml)).stdout)
        assert proxy.stats().get("wrong etag", 0) > 0
    assert summary["files_restored"] == len(dataset.old)
    assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in dataset.old)


def test_files_are_placed_through_real_directories_with_synapse_s_permissions(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, tmp_path: Path,
) -> None:
    config = offload_all(offload, homeserver_yaml)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert not (synapse.media_store / "local_content" / "Ab").exists()  # upload removed the emptied directories
    (synapse.media_store / "local_content" / "Ab").symlink_to(elsewhere)  # as an attacker (or a mistake) left it

    old_umask = os.umask(0o022)
    try:
        summary = json.loads(offload("--json", *config, "restore", expect=1).stdout)
    finally:
        os.umask(old_umask)
    assert [(f["path"], "symbolic link" in f["error"]) for f in summary["failed"]] == [(ORIGINAL, True)], summary
    assert list(elsewhere.iterdir()) == []  # nothing written out of the media store
    restored = [p for p in dataset.old if p != ORIGINAL]
    assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in restored)
    assert {oct((synapse.media_store / p).stat().st_mode & 0o777) for p in restored} == {"0o644"}


def test_a_file_offloaded_but_gone_from_the_store_fails_its_media(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    """A thumbnail cache.db recorded as offloaded, deleted from the store since: restore reports
    it and leaves its media marked offloaded (the listing alone would not know it was there)."""
    config = offload_all(offload, homeserver_yaml)
    thumbnail = next(p for p in dataset.old if p.startswith("local_thumbnails/"))
    s3_client(moto.endpoint_url).delete_object(Bucket=bucket, Key=PREFIX + thumbnail)

    summary = json.loads(offload("--json", *config, "restore", expect=1).stdout)
    assert [(f["path"], "not in" in f["error"]) for f in summary["failed"]] == [(thumbnail, True)]
    assert summary["files_restored"] == len(dataset.old) - 1
    again = json.loads(offload("--json", *config, "restore", expect=1).stdout)  # still offloaded: asked again
    assert [f["path"] for f in again["failed"]] == [thumbnail]


def test_objects_that_are_no_files_of_the_media_are_left_in_the_store(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    """What a listing of a thumbnail directory may hold besides Synapse's thumbnails (deeper
    paths, names Synapse does not write) is not written into the media store, nor counted."""
    config = offload_all(offload, homeserver_yaml)
    thumbnail = next(p for p in dataset.old if p.startswith("local_thumbnails/"))
    directory = thumbnail.rpartition("/")[0]
    s3 = s3_client(moto.endpoint_url)
    for odd in (f"{directory}/sub/deeper-1-1-image-png", f"{directory}/../escape"):
        s3.put_object(Bucket=bucket, Key=PREFIX + odd, Body=b"not media")

    summary = json.loads(offload("--json", *config, "restore").stdout)
    assert summary["files_restored"] == len(dataset.old) and summary["files_failed"] == 0
    assert not (synapse.media_store / directory / "sub").exists()
    assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in dataset.old)
