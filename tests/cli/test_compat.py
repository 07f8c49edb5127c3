"""s3_media_upload's commands, options, database.yaml and cache.db, run through objstore-offload."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import boto3
import pytest
import yaml
from synapse.media.filepath import MediaFilePaths

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore import media as layout
from synapse_objstore.cli.ownership import OWNER_MARKER
from tests.support.offload import OLD_SCHEMA, Dataset, Offload, schema_of
from tests.support.s3 import bucket_objects, s3_client


def test_paths_are_synapses_own(tmp_path: Path) -> None:
    synapse_paths = MediaFilePaths(str(tmp_path))
    assert layout.local_media_path("AbCdEfGh") == synapse_paths.local_media_filepath_rel("AbCdEfGh")
    assert layout.local_thumbnail_path("AbCdEfGh", 32, 24, "image/png", "crop") == \
        synapse_paths.local_media_thumbnail_rel("AbCdEfGh", 32, 24, "image/png", "crop")
    assert layout.remote_media_path("example.com:8448", "FsIdXyz") == \
        synapse_paths.remote_media_filepath_rel("example.com:8448", "FsIdXyz")
    assert layout.remote_thumbnail_path("[::1]", "FsIdXyz", 640, 480, "image/jpeg", "scale") == \
        synapse_paths.remote_media_thumbnail_rel("[::1]", "FsIdXyz", 640, 480, "image/jpeg", "scale")
    assert str(tmp_path / layout.local_thumbnail_dir("AbCdEfGh")) == synapse_paths.local_media_thumbnail_dir("AbCdEfGh")
    assert str(tmp_path / layout.remote_thumbnail_dir("a.org", "FsIdXyz")) == \
        synapse_paths.remote_media_thumbnail_dir("a.org", "FsIdXyz")
    with pytest.raises(ValueError):  # Synapse refuses these components too
        layout.remote_media_path("../etc", "FsIdXyz")


@pytest.mark.parametrize("engine", ["postgres"])
def test_old_commands_with_database_yaml_and_positional_bucket(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str, workdir: Path,
) -> None:
    """The README's workflow: database.yaml with psycopg2 arguments, `update`, `write`, `upload ... --delete`."""
    (workdir / "database.yaml").write_text(yaml.safe_dump(synapse.db_config["args"]))
    base = str(synapse.media_store)
    out = offload("update", base, "1m").stdout
    assert "Synced 5 new rows" in out and "Updated 0 as deleted" in out

    offload("write", "paths.txt")
    written = (workdir / "paths.txt").read_text().splitlines()
    assert "local_content/Ab/Cd/EfGhIjKlMnOp" in written and "local_thumbnails/Ab/Cd/EfGhIjKlMnOp/" in written
    assert "remote_thumbnail/example.com:8448/Fs/Id/RemoteTwo456/" in written and len(written) == 10

    out = offload("upload", base, bucket, "--endpoint-url", moto.endpoint_url, "--prefix", "p/",
                  "--storage-class", "STANDARD_IA", "--delete").stdout
    assert f"Uploaded 5 media out of 5\nUploaded {len(dataset.old)} files" in out
    client = s3_client(moto.endpoint_url)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"p/{p}" for p in dataset.old} | {f"p/{OWNER_MARKER}"}  # database.yaml: the owner is recorded
    head = client.head_object(Bucket=bucket, Key="p/local_content/Ab/Cd/EfGhIjKlMnOp")
    assert head["StorageClass"] == "STANDARD_IA"
    assert offload("write").stdout == ""  # nothing left locally to list

    # check-deleted notices media that Synapse itself removed from disk
    for path in dataset.recent[:2]:
        (synapse.media_store / path).unlink()
    offload("update-db", "1s")
    assert "Updated 1 as deleted" in offload("check-deleted", base).stdout


@pytest.mark.parametrize("engine", ["sqlite"])
def test_cache_db_of_s3_media_upload_is_picked_up_and_kept_compatible(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    """A half-done s3_media_upload run: its cache.db, and objects it uploaded with boto3 (8 MiB parts)."""
    cache = workdir / "cache.db"
    with sqlite3.connect(cache) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.executemany(
            "INSERT INTO media (origin, media_id, filesystem_id, type, known_deleted) VALUES (?, ?, ?, ?, ?)",
            [("", "AbCdEfGhIjKlMnOp", "AbCdEfGhIjKlMnOp", "local", False),
             ("", "ZyXwVuTsRqPoNmLk", "ZyXwVuTsRqPoNmLk", "local", False),
             ("matrix.org", "remoteMediaId1", "FsIdRemoteOne123", "remote", False),
             ("", "gonelongago00000", "gonelongago00000", "local", True)],
        )
    old_schema = schema_of(cache)
    boto = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1")
    big = "local_content/Zy/Xw/VuTsRqPoNmLk"
    boto.upload_fileobj(io.BytesIO(synapse.files[big]), bucket, f"media/{big}")  # multipart, as s3_media_upload did
    assert boto.head_object(Bucket=bucket, Key=f"media/{big}")["ETag"].endswith('-2"')
    # an object that exists with the right size but other bytes must not be trusted
    stale = "local_content/Ab/Cd/EfGhIjKlMnOp"
    boto.put_object(Bucket=bucket, Key=f"media/{stale}", Body=os.urandom(len(synapse.files[stale])))

    summary = json.loads(offload("--json", "--config", str(homeserver_yaml), "upload", "--delete",
                                 "--size-only").stdout)
    thumbs_and_originals = [p for p in dataset.old if "Ab/Cd" in p or "Zy/Xw" in p or "RemoteOne123" in p]
    # the boto3 multipart object is verified by its ETag, not uploaded again; the stale one is replaced
    assert summary["files_uploaded"] == len(thumbs_and_originals) - 1
    assert summary["files_deleted"] == len(thumbs_and_originals) and summary["files_failed"] == 0
    stored = bucket_objects(moto, bucket)
    assert ({p: stored[f"media/{p}"] for p in thumbs_and_originals}
            == {p: synapse.files[p] for p in thumbs_and_originals})

    # the media table is still exactly s3_media_upload's, with its rows readable the way it reads them
    assert schema_of(cache) == old_schema
    with sqlite3.connect(cache) as conn:
        undeleted = conn.execute(
            "SELECT origin, media_id, filesystem_id, type FROM media WHERE NOT known_deleted").fetchall()
        assert undeleted == []
        assert conn.execute("SELECT COALESCE(count(*), 0) FROM media WHERE known_deleted").fetchone() == (4,)
