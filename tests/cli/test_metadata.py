"""objstore-offload and Synapse's sha256 and media types: what `upload` checks and stores beside
each object, what `verify` makes of it, what `migrate` keeps, and cache.db files and Synapse
databases from before they existed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.gcs_emulator import GcsEmulator
from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia, Thumb
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from tests.support.offload import OLD_SCHEMA, PREFIX, Dataset, Offload
from tests.support.s3 import s3_client

CORRUPTED = "local_content/Ab/Cd/EfGhIjKlMnOp"  # the dataset's first original, with two thumbnails


def set_sha256(synapse: SynapseMedia, dataset: Dataset) -> dict[str, str]:
    """Synapse's sha256 of every original of the dataset, as Synapse 1.128+ records them; by media path."""
    cursor = synapse.conn.cursor()
    recorded = {}
    for path in dataset.old + dataset.recent:
        if path.startswith("local_content/"):
            media_id = "".join(path.split("/")[1:])
            sql = "UPDATE local_media_repository SET sha256 = %s WHERE media_id = %s"
            args: tuple[str, ...] = (media_id,)
        elif path.startswith("remote_content/"):
            _, origin, *rest = path.split("/")
            sql = "UPDATE remote_media_cache SET sha256 = %s WHERE media_origin = %s AND filesystem_id = %s"
            args = (origin, "".join(rest))
        else:
            continue
        recorded[path] = hashlib.sha256(synapse.files[path]).hexdigest()
        cursor.execute(synapse._sql(sql), (recorded[path], *args))
    synapse.conn.commit()
    return recorded


def expected_type(path: str) -> str:
    if path.startswith("local_content/"):
        return "image/png"  # media_type of the dataset's local media
    if path.startswith("remote_content/"):
        return "image/jpeg"
    return "image/png" if "-image-png-" in path else "image/jpeg"  # a thumbnail: its name's


def test_upload_stores_content_type_and_sha256_and_keeps_a_locally_corrupted_file(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, moto: MotoServer, bucket: str,
) -> None:
    recorded = set_sha256(synapse, dataset)
    s3 = s3_client(moto.endpoint_url)
    good = synapse.files[CORRUPTED]
    # a good copy is in the store already (an earlier upload); the local file is then damaged
    s3.put_object(Bucket=bucket, Key=PREFIX + CORRUPTED, Body=good)
    damaged = bytearray(good)
    damaged[1000] ^= 0xFF
    (synapse.media_store / CORRUPTED).write_bytes(bytes(damaged))

    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    result = offload("--json", *config, "upload", "--delete", expect=1)
    summary = json.loads(result.stdout)
    assert [f["path"] for f in summary["failed"]] == [CORRUPTED], summary["failed"]
    error = summary["failed"][0]["error"]
    assert "AbCdEfGhIjKlMnOp" in error and str(synapse.media_store / CORRUPTED) in error and "corrupted" in error
    assert recorded[CORRUPTED] in error
    # neither uploaded over the good copy nor deleted
    assert (synapse.media_store / CORRUPTED).read_bytes() == bytes(damaged)
    assert s3.get_object(Bucket=bucket, Key=PREFIX + CORRUPTED)["Body"].read() == good

    for path in dataset.old:
        if path == CORRUPTED:
            continue
        head = s3.head_object(Bucket=bucket, Key=PREFIX + path)
        assert head["ContentType"] == expected_type(path), path
        assert head["Metadata"]["sha256"] == hashlib.sha256(synapse.files[path]).hexdigest(), path
        assert not (synapse.media_store / path).exists()


def test_verify_reports_an_object_whose_sha256_metadata_is_not_synapses(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, moto: MotoServer, bucket: str,
) -> None:
    set_sha256(synapse, dataset)
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    assert json.loads(offload("--json", *config, "verify").stdout)["files_failed"] == 0

    # the same size, other content, and metadata that says so: a corrupted copy
    s3 = s3_client(moto.endpoint_url)
    other = bytes(len(synapse.files[CORRUPTED]))
    s3.put_object(Bucket=bucket, Key=PREFIX + CORRUPTED, Body=other, ContentType="image/png",
                  Metadata={"sha256": hashlib.sha256(other).hexdigest()})
    report = json.loads(offload("--json", *config, "verify", expect=1).stdout)
    assert [f["path"] for f in report["failed"]] == [CORRUPTED]
    assert "corrupted copy" in report["failed"][0]["error"]


def test_a_synapse_database_without_sha256_columns_still_offloads(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, moto: MotoServer, bucket: str,
) -> None:
    """Synapse before 1.128 has no sha256 column: media types are still used, and the objects
    get the sha256 of the files."""
    cursor = synapse.conn.cursor()
    for table in ("local_media_repository", "remote_media_cache"):
        cursor.execute(f"ALTER TABLE {table} DROP COLUMN sha256")
    synapse.conn.commit()
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--delete").stdout)
    assert summary["files_deleted"] == len(dataset.old)
    s3 = s3_client(moto.endpoint_url)
    for path in dataset.old:
        head = s3.head_object(Bucket=bucket, Key=PREFIX + path)
        assert head["ContentType"] == expected_type(path), path
        assert head["Metadata"]["sha256"] == hashlib.sha256(synapse.files[path]).hexdigest(), path
    assert json.loads(offload("--json", *config, "verify").stdout)["files_failed"] == 0
    # reconcile reads the same tables
    offload(*config, "reconcile", "--grace", "0s")


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_cache_db_of_the_schema_before_is_migrated_and_filled_by_update_db(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, workdir: Path,
) -> None:
    """A cache.db written before media info existed (s3_media_upload's `media`, our
    objstore_files without sha256, an update-db cutoff): the next update-db fills in the media
    type and sha256 of the media it synced before."""
    recorded = set_sha256(synapse, dataset)
    config = ["--config", str(homeserver_yaml)]
    with sqlite3.connect(workdir / "cache.db") as conn:
        conn.executescript(OLD_SCHEMA + """
            CREATE TABLE objstore_files (path TEXT NOT NULL PRIMARY KEY, origin TEXT NOT NULL,
                media_id TEXT NOT NULL, size INTEGER NOT NULL, md5 TEXT, store TEXT NOT NULL,
                verified_ts INTEGER NOT NULL);
            CREATE TABLE objstore_synced (source TEXT NOT NULL PRIMARY KEY, before_ts INTEGER NOT NULL);
        """)
        conn.execute("INSERT INTO media VALUES ('', 'AbCdEfGhIjKlMnOp', 'AbCdEfGhIjKlMnOp', 'local', 0)")
        conn.execute("INSERT INTO objstore_files VALUES ('x', '', 'AbCdEfGhIjKlMnOp', 1, NULL, 's', 1)")
        # a cutoff later than every media: an update-db would read none of them again
        conn.execute("INSERT INTO objstore_synced VALUES (?, ?)", (f"sqlite3 {synapse.db_config['args']['database']}",
                                                                    synapse.now_ms))
    offload(*config, "update-db", "30d")
    with sqlite3.connect(workdir / "cache.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        assert conn.execute("SELECT sha256, multipart_etags FROM objstore_files").fetchall() == [(None, None)]
        info = {origin + media_id: (media_type, sha256) for origin, media_id, media_type, sha256
                in conn.execute("SELECT origin, media_id, media_type, sha256 FROM objstore_media_info")}
    assert info["AbCdEfGhIjKlMnOp"] == ("image/png", recorded[CORRUPTED])
    assert info["matrix.orgremoteMediaId1"] == ("image/jpeg", recorded["remote_content/matrix.org/Fs/Id/RemoteOne123"])


@pytest.mark.parametrize("engine", ["sqlite"])
def test_migrate_keeps_content_type_and_sha256_from_s3_to_gcs(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, workdir: Path,
    gcs_emulator: GcsEmulator,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload")
    gcs_config: dict[str, Any] = {
        "backend": "gcs", "bucket": gcs_emulator.create_bucket(f"media-{uuid.uuid4().hex[:12]}"),
        "endpoint_url": gcs_emulator.endpoint_url, "token": "anon", "prefix": "media/", "chunk_size": "4 MiB"}
    (workdir / "gcs.yaml").write_text(yaml.safe_dump(gcs_config))
    summary = json.loads(offload("--json", *config, "migrate", "--to", "gcs.yaml").stdout)
    assert summary["files_failed"] == 0 and summary["files_copied"] >= len(dataset.old)

    target = ObjectStore(parse_store_config(gcs_config))
    try:
        for path in dataset.old:
            info = run(target.info(path), timeout=30)
            assert info is not None, path
            assert (info.content_type, info.sha256) == (
                expected_type(path), hashlib.sha256(synapse.files[path]).hexdigest()), path
    finally:
        run(target.close(), timeout=30)



def test_reconcile_uploads_with_metadata_and_keeps_a_locally_corrupted_file_out(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, moto: MotoServer, bucket: str,
) -> None:
    """reconcile's uploads of media whose background upload failed: Content-Type and sha256 as
    `upload` sets them, read from Synapse's database in the same pass; an original that is not
    what Synapse recorded stays out of the store."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload")
    good = synapse.add_local("NeverUploaded001", b"\x89PNG" + bytes(3000), 2,
                             [Thumb(32, 32, "image/jpeg", "crop", bytes(400))])
    bad = synapse.add_local("NeverUploaded002", bytes(5000), 2)
    recorded = set_sha256(synapse, Dataset(old=good + bad, recent=[], url_cache=[]))
    (synapse.media_store / bad[0]).write_bytes(b"x" * 5000)  # damaged after Synapse stored it
    s3 = s3_client(moto.endpoint_url)
    for path in dataset.recent:
        s3.put_object(Bucket=bucket, Key=PREFIX + path, Body=synapse.files[path])

    summary = json.loads(offload("--json", *config, "reconcile", "--grace", "0s", "--apply", expect=1).stdout)
    assert [f["path"] for f in summary["failed"]] == [bad[0]] and "corrupted" in summary["failed"][0]["error"]
    original = s3.head_object(Bucket=bucket, Key=PREFIX + good[0])
    assert (original["ContentType"], original["Metadata"]["sha256"]) == ("image/png", recorded[good[0]])
    thumbnail = s3.head_object(Bucket=bucket, Key=PREFIX + good[1])
    assert thumbnail["ContentType"] == "image/jpeg"
    assert thumbnail["Metadata"]["sha256"] == hashlib.sha256(bytes(400)).hexdigest()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX + bad[0])
