"""`reconcile` against moto over HTTP, with Synapse's tables on PostgreSQL and SQLite: objects
of media gone from Synapse are deleted (and nothing else), media missing from the store are
uploaded, stale multipart uploads are aborted; grace period, --max-delete and a database
without media are respected."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia, Thumb
from synapse_objstore.cli.ownership import OWNER_MARKER
from tests.support.offload import ANY_SHARE, PREFIX, Dataset, Offload, delete_from_synapse, listed_actions
from tests.support.s3 import bucket_objects, put_objects, s3_client

DELETED_LOCAL = "AbCdEfGhIjKlMnOp"
DELETED_REMOTE = ("matrix.org", "remoteMediaId1", "FsIdRemoteOne123")
UNKNOWN = ["notes/readme.txt", "local_content/ab/cd", "local_thumbnails/Ab/Cd/EfGhIjKlMnOp"]


def cache_media(workdir: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(workdir / "cache.db") as conn:
        return set(conn.execute("SELECT origin, media_id FROM media"))


def cache_files(workdir: Path) -> set[str]:
    with sqlite3.connect(workdir / "cache.db") as conn:
        return {path for (path,) in conn.execute("SELECT path FROM objstore_files")}


@pytest.fixture
def offloaded(offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer,
              bucket: str) -> list[str]:
    """The old media offloaded (`update`, `upload --delete`); the recent ones uploaded by Synapse
    (store_local): every media of the database is in the bucket."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    put_objects(moto, bucket, {PREFIX + path: synapse.files[path] for path in dataset.recent})
    return ["--config", str(homeserver_yaml)]


def test_dry_run_lists_then_apply_deletes_exactly_the_objects_of_deleted_media(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    put_objects(moto, bucket, {PREFIX + path: b"not media" for path in UNKNOWN} | {"elsewhere/x": b"other prefix"})
    delete_from_synapse(synapse, [DELETED_LOCAL], [DELETED_REMOTE[:2]])
    gone = {path for path in dataset.old if DELETED_LOCAL[4:] in path or DELETED_REMOTE[2][4:] in path}
    assert len(gone) == 6  # two originals, two thumbnails each
    before = bucket_objects(moto, bucket)
    cached_before = cache_media(workdir)

    dry = offload(*offloaded, "reconcile", "--grace", "0s", *ANY_SHARE)
    assert listed_actions(dry.output, "would delete") == gone
    assert f"Would have Deleted 6 objects ({_size(synapse, gone)})" in dry.output
    for path in UNKNOWN:
        assert f"kept {path}: not a media path Synapse writes" in dry.output
    assert bucket_objects(moto, bucket) == before
    assert cache_media(workdir) == cached_before

    applied = offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", *ANY_SHARE)
    summary = json.loads(applied.stdout)
    assert listed_actions(applied.stderr, "deleted") == gone
    assert summary["files_deleted"] == summary["objects_orphaned"] == 6
    assert summary["bytes_deleted"] == sum(len(synapse.files[p]) for p in gone)
    assert summary["objects_unknown"] == len(UNKNOWN) and summary["files_failed"] == 0
    assert summary["files_uploaded"] == summary["media_lost"] == 0
    marker = s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=PREFIX + OWNER_MARKER)["Body"].read()
    assert json.loads(marker)["owner"]["server_name"] == "test"  # `upload` claimed the store for its homeserver
    assert bucket_objects(moto, bucket) == {key: data for key, data in before.items()
                                            if key.removeprefix(PREFIX) not in gone}
    # cache.db forgets the deleted media, and only them
    assert cache_media(workdir) == cached_before - {("", DELETED_LOCAL), DELETED_REMOTE[:2]}
    assert cache_files(workdir) == set(dataset.old) - gone

    again = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", *ANY_SHARE).stdout)
    assert again["objects_orphaned"] == again["files_deleted"] == 0


def test_remote_media_are_read_once_however_many_objects_there_are(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, dataset: Dataset, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Synapse does not index remote_media_cache.filesystem_id: looking objects up there batch
    by batch would scan the whole table once per batch, which on a large server is hours of
    database load. However small the batches, reconcile reads that table a fixed number of times."""
    from synapse_objstore.cli import reconcile, synapse_db

    monkeypatch.setattr(reconcile, "DB_BATCH", 1)
    statements: list[str] = []
    original = synapse_db.SynapseDb._stream

    def recording(self: Any, sql: str, args: tuple[Any, ...], cursor_name: str | None) -> Any:
        statements.append(sql)
        return original(self, sql, args, cursor_name)

    monkeypatch.setattr(synapse_db.SynapseDb, "_stream", recording)
    delete_from_synapse(synapse, [], [DELETED_REMOTE[:2]])
    gone = {path for path in dataset.old if DELETED_REMOTE[2][4:] in path}

    summary = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", *ANY_SHARE).stdout)
    remote_objects = [path for path in dataset.old + dataset.recent if path.startswith("remote_")]
    assert len(remote_objects) >= 5  # each in a batch of its own
    assert summary["files_deleted"] == len(gone) == 3
    # the emptiness check, the media counts of the summary, the remote media's files (once for
    # both passes over the listing), and the repair's listing of media
    assert sum("remote_media_cache" in sql for sql in statements) == 4


def test_grace_period_protects_recent_objects(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    delete_from_synapse(synapse, [DELETED_LOCAL], [])
    before = bucket_objects(moto, bucket)
    summary = json.loads(offload("--json", *offloaded, "reconcile", "--apply").stdout)  # default grace: 1 day
    assert summary["objects_orphaned"] == summary["files_deleted"] == 0
    assert summary["objects_recent"] == summary["objects_listed"] == len(before)
    summary = json.loads(offload("--json", *offloaded, "reconcile", "--apply", "--grace", "1h").stdout)
    assert summary["files_deleted"] == 0
    assert bucket_objects(moto, bucket) == before


def test_max_delete_stops_deleting_and_says_so(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    delete_from_synapse(synapse, [DELETED_LOCAL], [DELETED_REMOTE[:2]])
    before = set(bucket_objects(moto, bucket))
    limited = offload(*offloaded, "reconcile", "--grace", "0s", "--apply", "--max-delete", "2", *ANY_SHARE,
                      expect=1)
    assert "Stopped deleting at --max-delete (or --max-delete-share): 4 more objects left" in limited.output
    assert len(listed_actions(limited.output, "deleted")) == 2
    assert len(before - set(bucket_objects(moto, bucket))) == 2

    rest = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", *ANY_SHARE).stdout)
    assert rest["files_deleted"] == 4 and not rest["delete_limit_reached"]
    assert len(before - set(bucket_objects(moto, bucket))) == 6


def test_database_without_media_is_refused(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    put_objects(moto, bucket, {PREFIX + "local_content/ab/cd/efghijkl": b"x" * 10})
    for apply in ([], ["--apply"]):
        result = offload("--config", str(homeserver_yaml), "reconcile", "--grace", "0s", *apply, expect=2)
        assert "has no media at all: refusing to reconcile" in result.output
        assert synapse.engine in result.output  # names the database it looked at
    assert set(bucket_objects(moto, bucket)) == {PREFIX + "local_content/ab/cd/efghijkl"}


def test_media_missing_from_the_store_is_uploaded_and_lost_media_reported(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    # a failed background upload: in the database, on disk, never reached the bucket
    thumbs = [Thumb(32, 32, "image/png", "crop", os.urandom(400))]
    unreplicated = synapse.add_local("NeverUploaded001", os.urandom(30_000), 2, thumbs)
    unreplicated += synapse.add_remote("example.org", "remoteNeverUp", "FsIdNeverUpload1", os.urandom(9000), 3)
    # a thumbnail Synapse generated later, whose upload failed, of media that is in the bucket
    late_thumb = ["local_thumbnails/Re/ce/ntMediaAbCdE/96-96-image-png-scale"]
    synapse._write(late_thumb[0], b"p" * 700)
    # media offloaded, then lost from the bucket: neither local nor remote
    lost = "remote_content/example.com:8448/Fs/Id/RemoteTwo456"
    s3_client(moto.endpoint_url).delete_object(Bucket=bucket, Key=PREFIX + lost)
    before = bucket_objects(moto, bucket)

    dry = offload(*offloaded, "reconcile", "--grace", "0s", expect=1)
    assert listed_actions(dry.output, "would upload") == set(unreplicated + late_thumb)
    assert f"{lost}: lost: remote media example.com:8448/remoteMediaId2 is in Synapse's database" in dry.output
    assert bucket_objects(moto, bucket) == before

    summary = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", expect=1).stdout)
    assert summary["files_uploaded"] == len(unreplicated) + 1 and summary["media_uploaded"] == 3
    assert summary["media_lost"] == 1 and [f["path"] for f in summary["failed"]] == [lost]
    assert summary["files_deleted"] == 0
    after = bucket_objects(moto, bucket)
    for path in unreplicated + late_thumb:
        assert after[PREFIX + path] == (synapse.media_store / path).read_bytes()
    assert synapse.local_files() >= set(unreplicated)  # an upload never deletes a local file here


def test_media_of_a_type_the_provider_does_not_store_is_not_uploaded(
    offload: Offload, offloaded: list[str], homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer,
    bucket: str,
) -> None:
    """With `store_remote: false` Synapse keeps cached remote media local only: reconcile must not
    push them to the bucket, while local media missing there are still repaired."""
    config = yaml.safe_load(homeserver_yaml.read_text())
    config["media_storage_providers"][1]["store_remote"] = False
    homeserver_yaml.write_text(yaml.safe_dump(config))
    local = synapse.add_local("LocalNotUpload01", os.urandom(3000), 2)
    remote = synapse.add_remote("example.org", "remoteLocalOnly", "FsIdRemoteLocal1", os.urandom(2000), 2)

    summary = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", *ANY_SHARE).stdout)
    assert summary["media_uploaded"] == 1 and summary["media_not_stored"] == 1
    after = bucket_objects(moto, bucket)
    assert {PREFIX + path for path in local} <= set(after)
    assert not {PREFIX + path for path in remote} & set(after)

    config["media_storage_providers"][1]["store_remote"] = "no"
    homeserver_yaml.write_text(yaml.safe_dump(config))
    refused = offload(*offloaded, "reconcile", "--grace", "0s", expect=2)
    assert "'store_remote' of provider synapse_objstore.ObjectStorageProvider" in refused.output
    assert "true or false, not 'no'" in refused.output


def test_recent_media_is_left_to_synapse(
    offload: Offload, offloaded: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    """Media created within the grace period may still be on its way to the store: not touched."""
    synapse.add_local("JustUploaded0001", os.urandom(100), 0.001)
    summary = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "1h", "--apply").stdout)
    assert summary["files_uploaded"] == 0 and summary["files_failed"] == 0
    assert PREFIX + "local_content/Ju/st/Uploaded0001" not in bucket_objects(moto, bucket)


def test_stale_multipart_uploads_are_aborted(
    offload: Offload, offloaded: list[str], moto: MotoServer, bucket: str,
) -> None:
    client = s3_client(moto.endpoint_url)
    started = {}
    for key in (PREFIX + "local_content/Ki/ll/edUpload0001", "elsewhere/not-ours"):
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1000)
        started[key] = upload["UploadId"]

    def pending() -> set[str]:
        return {u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    # moto says every upload began in 2010, so the grace period (the same age check as for
    # objects, tested above) cannot be seen at work here.
    dry = offload(*offloaded, "reconcile", "--grace", "0s", *ANY_SHARE)
    assert f"would abort incomplete upload of {bucket}/{PREFIX}local_content/Ki/ll/edUpload0001" in dry.output
    assert pending() == set(started)
    summary = json.loads(offload("--json", *offloaded, "reconcile", "--grace", "0s", "--apply", *ANY_SHARE).stdout)
    assert summary["uploads_aborted"] == 1
    assert pending() == {"elsewhere/not-ours"}  # outside the prefix: not this store's


@pytest.mark.parametrize("engine", ["sqlite"])
def test_orphans_in_a_directory_store(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, workdir: Path, tmp_path: Path, engine: str,
) -> None:
    """The generic fsspec listing (a local directory, walked one directory at a time) too."""
    target = tmp_path / "target"
    for path in [*dataset.old, "stray/file"]:
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_bytes(synapse.files.get(path, b"?"))
    (workdir / "store.yaml").write_text(yaml.safe_dump({"backend": "fsspec", "url": f"file://{target}"}))
    (workdir / "database.yaml").write_text(yaml.safe_dump({"sqlite": synapse.db_config["args"]}))
    delete_from_synapse(synapse, [DELETED_LOCAL], [])
    result = offload("reconcile", str(synapse.media_store), "--store-config", "store.yaml", "--grace", "0s", "--apply",
                     *ANY_SHARE)
    deleted = listed_actions(result.output, "deleted")
    assert deleted == {p for p in dataset.old if DELETED_LOCAL[4:] in p} and len(deleted) == 3
    assert all(not (target / p).exists() for p in deleted)
    assert all((target / p).exists() for p in set(dataset.old) - deleted)
    assert (target / "stray/file").exists()


def _size(synapse: SynapseMedia, paths: Any) -> str:
    from synapse_objstore.cli.report import human_size

    return human_size(sum(len(synapse.files[p]) for p in paths))
