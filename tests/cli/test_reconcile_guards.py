"""`reconcile` refuses to delete another homeserver's media, and `upload` to offload into its
store: the store's owner marker, the server name of the database's users, the check that the
database is the owner's in its recorded place and not older, and the brakes on what one run
deletes. Two homeservers (two Synapse databases, PostgreSQL or SQLite) share one provider
block: the copy-paste mistake these guards are for."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from servers.moto import MotoServer
from servers.postgres import temporary_database
from servers.synapse_media import SynapseMedia, sqlite_connect
from synapse_objstore.cli.ownership import OWNER_MARKER
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client

PREFIX = "media/"
MARKER_KEY = PREFIX + OWNER_MARKER


def bucket_keys(moto: MotoServer, bucket: str) -> set[str]:
    listed = s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed}


def write_homeserver_yaml(path: Path, server_name: str, synapse: SynapseMedia, moto: MotoServer, bucket: str) -> Path:
    path.write_text(yaml.safe_dump({
        "server_name": server_name,
        "media_store_path": str(synapse.media_store),
        "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "store_local": True,
                                     "store_remote": True, "config": store_block(moto, bucket)}],
    }))
    return path


@pytest.fixture
def other_synapse(engine: str, tmp_path: Path) -> Iterator[SynapseMedia]:
    """A second homeserver, other.example, with media of its own, on the same database engine."""
    media_store = tmp_path / "other_media_store"
    media_store.mkdir()
    now_ms = int(time.time() * 1000)

    def fill(synapse: SynapseMedia) -> SynapseMedia:
        synapse.create_tables(first_user="@root:other.example")
        synapse.add_local("OtherServerMedia", os.urandom(3000), 90)
        synapse.add_remote("matrix.org", "otherRemote1", "OtherRemoteFsId1", os.urandom(2000), 90)
        return synapse

    if engine == "sqlite":
        path = tmp_path / "other.db"
        conn = sqlite_connect(path)
        yield fill(SynapseMedia(conn, "sqlite", media_store, now_ms,
                                {"name": "sqlite3", "args": {"database": str(path)}}))
        conn.close()
        return
    with temporary_database() as args:
        conn = psycopg2.connect(**args)
        yield fill(SynapseMedia(conn, "postgres", media_store, now_ms, {"name": "psycopg2", "args": args}))
        conn.close()


@pytest.fixture
def reconciled(offload: Offload, homeserver_yaml: Path, dataset: Dataset) -> list[str]:
    """Homeserver `test` offloaded its old media and reconciled once: the store is recorded as its."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    offload(*config, "reconcile", "--grace", "0s", "--apply")
    return config


def legacy_upload(offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer,
                  bucket: str) -> None:
    """Offload as s3_media_upload did (BASE_PATH BUCKET, no database at hand): no owner is recorded."""
    offload("update", str(synapse.media_store), "30d", "--homeserver-config-path", str(homeserver_yaml))
    offload("upload", str(synapse.media_store), bucket, "--endpoint-url", moto.endpoint_url, "--prefix", PREFIX,
            "--delete")


def marker(moto: MotoServer, bucket: str) -> dict[str, Any]:
    return json.loads(s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=MARKER_KEY)["Body"].read())


def test_upload_claims_the_store_and_another_homeserver_may_not_offload_into_it(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, other_synapse: SynapseMedia, moto: MotoServer,
    bucket: str, tmp_path: Path,
) -> None:
    offload("--config", str(homeserver_yaml), "update", "30d")
    offload("--config", str(homeserver_yaml), "upload", "--delete")
    assert marker(moto, bucket)["owner"]["server_name"] == "test"
    keys = bucket_keys(moto, bucket)

    other = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)
    offload("--config", str(other), "--cache-db", "other-cache.db", "update", "30d")
    refused = offload("--config", str(other), "--cache-db", "other-cache.db", "upload", "--delete", expect=2)
    assert "belongs to homeserver test (database " in refused.output
    assert "this run's database is other.example (database " in refused.output
    assert "Two homeservers must never share a bucket and prefix" in refused.output
    assert bucket_keys(moto, bucket) == keys
    assert other_synapse.local_files() == set(other_synapse.files)  # nothing of other.example's was deleted


def test_another_homeservers_database_is_refused_by_the_owner_marker(
    offload: Offload, reconciled: list[str], other_synapse: SynapseMedia, moto: MotoServer, bucket: str,
    tmp_path: Path, workdir: Path,
) -> None:
    assert marker(moto, bucket)["owner"]["server_name"] == "test" and marker(moto, bucket)["owner"]["fingerprint"]
    keys = bucket_keys(moto, bucket)
    cache = (workdir / "cache.db").read_bytes()
    wrong = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)

    for extra in ([], ["--apply"], ["--apply", "--max-delete-share", "100", "--database-changed"]):
        refused = offload("--config", str(wrong), "reconcile", "--grace", "0s", *extra, expect=2)
        assert "belongs to homeserver test (database " in refused.output
        assert "this run's database is other.example (database " in refused.output
        assert other_synapse.engine in refused.output and "refusing" in refused.output
        assert "deleted" not in refused.output
    assert bucket_keys(moto, bucket) == keys
    assert (workdir / "cache.db").read_bytes() == cache  # cache.db forgot nothing

    # the right homeserver still reconciles its store
    offload(*reconciled, "reconcile", "--grace", "0s", "--apply")


def test_an_unclaimed_store_is_never_emptied_by_a_wrong_database(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, other_synapse: SynapseMedia,
    moto: MotoServer, bucket: str, tmp_path: Path,
) -> None:
    """No marker yet (offloaded the old way): to the other homeserver's database every object is
    an orphan. Whatever --max-delete-share says, a store none of whose media the database
    knows is refused, before any deletion."""
    legacy_upload(offload, homeserver_yaml, synapse, moto, bucket)
    keys = bucket_keys(moto, bucket)
    assert keys and MARKER_KEY not in keys
    wrong = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)

    summary = json.loads(offload("--json", "--config", str(wrong), "reconcile", "--grace", "0s", expect=1).stdout)
    assert summary["server_name"] == "other.example" and summary["store_owner"] == "none recorded yet"
    assert summary["local_media_in_database"] == 1 and summary["remote_media_in_database"] == 1
    assert summary["delete_share"] == 100.0 and summary["none_known"]
    dry = offload("--config", str(wrong), "reconcile", "--grace", "0s", expect=1)
    assert f"--apply would refuse to delete anything: none of the {len(keys)} media objects" in dry.output

    for share in ("10", "100"):
        refused = offload("--config", str(wrong), "reconcile", "--grace", "0s", "--apply", "--max-delete-share", share,
                          expect=2)
        assert f"refusing to delete anything: none of the {len(keys)} media objects older than the grace period" \
            in refused.output
        assert "is in the database of other.example" in refused.output and "Nothing was deleted." in refused.output
    assert bucket_keys(moto, bucket) == keys  # no marker was written either


def test_the_delete_share_brake(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    """The right database, but a large share of the store would go: refused until raised on purpose."""
    legacy_upload(offload, homeserver_yaml, synapse, moto, bucket)
    for table in ("local_media_repository", "local_media_repository_thumbnails"):
        synapse.conn.cursor().execute(synapse._sql(f"DELETE FROM {table} WHERE media_id = %s"), ("AbCdEfGhIjKlMnOp",))
    synapse.conn.commit()
    keys = bucket_keys(moto, bucket)
    config = ["--config", str(homeserver_yaml), "reconcile", "--grace", "0s"]

    dry = offload(*config, expect=1)
    assert f"Would delete 3 of the {len(keys)} media objects listed (33.3%; --max-delete-share 10%)" in dry.output
    assert "--apply would refuse to delete anything: 3 of the 9 media objects listed in" in dry.output
    refused = offload(*config, "--apply", expect=2)
    assert "above --max-delete-share 10%" in refused.output and "Nothing was deleted." in refused.output
    assert bucket_keys(moto, bucket) == keys
    nan = offload(*config, "--apply", "--max-delete-share", "nan", expect=2)
    assert "'nan' is not a percentage from 0 to 100" in nan.output

    offload(*config, "--apply", "--max-delete-share", "40")
    after = bucket_keys(moto, bucket)
    assert keys - after == {key for key in keys if "Ab/Cd/EfGhIjKlMnOp" in key}
    assert MARKER_KEY in after


def test_homeserver_yaml_whose_database_is_another_servers_is_refused(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, other_synapse: SynapseMedia,
    moto: MotoServer, bucket: str, tmp_path: Path,
) -> None:
    """server_name says `test`, the `database:` section was copied from other.example's config."""
    legacy_upload(offload, homeserver_yaml, synapse, moto, bucket)
    keys = bucket_keys(moto, bucket)
    mixed = write_homeserver_yaml(tmp_path / "mixed.yaml", "test", other_synapse, moto, bucket)
    for command in (["reconcile", "--grace", "0s"], ["reconcile", "--apply", "--max-delete-share", "100"],
                    ["upload", "--delete"]):
        refused = offload("--config", str(mixed), *command, expect=2)
        assert f"homeserver.yaml ({mixed}) says server_name 'test', but the users of its database" in refused.output
        assert "are of 'other.example'" in refused.output
    assert bucket_keys(moto, bucket) == keys


def test_dry_run_states_what_it_compared(
    offload: Offload, reconciled: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    dry = offload(*reconciled, "reconcile", "--grace", "0s")
    line = dry.output.splitlines()[0]
    assert line.startswith(f"Compared s3://{bucket}/media/ at {moto.endpoint_url} (owner: test (database ")
    described = {"sqlite": "sqlite3", "postgres": "postgres"}[synapse.engine]
    assert f"with the database of test ({described} " in line
    assert line.endswith(": 5 local and 3 remote media")  # the dataset's, URL preview and recent ones included
    assert "Would delete 0 of the 12 media objects listed (0.0%; --max-delete-share 10%)" in dry.output


@pytest.mark.parametrize("engine", ["sqlite"])
def test_the_owners_database_elsewhere_needs_database_changed(
    offload: Offload, reconciled: list[str], homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer,
    bucket: str, tmp_path: Path, engine: str,
) -> None:
    """The same homeserver's database in another place is a moved database, or a copy (staging,
    a clone) that lacks the media added since: the admin must say which."""
    config = yaml.safe_load(homeserver_yaml.read_text())
    moved = tmp_path / "moved" / "homeserver.db"
    moved.parent.mkdir()
    shutil.copy(config["database"]["args"]["database"], moved)
    config["database"]["args"]["database"] = str(moved)
    homeserver_yaml.write_text(yaml.safe_dump(config))
    keys = bucket_keys(moto, bucket)

    refused = offload(*reconciled, "reconcile", "--grace", "0s", "--apply", expect=2)
    assert f"this run's database is test (database sqlite3 {moved}" in refused.output
    assert "the same homeserver's data, in another place" in refused.output and "--database-changed" in refused.output
    assert bucket_keys(moto, bucket) == keys

    result = offload(*reconciled, "reconcile", "--grace", "0s", "--apply", "--database-changed")
    assert f"with the database of test (sqlite3 {moved}" in result.output
    assert marker(moto, bucket)["owner"]["database"] == f"sqlite3 {moved}"
    offload(*reconciled, "reconcile", "--grace", "0s", "--apply")  # from now on, without the flag


def test_an_older_copy_of_the_owners_database_is_refused(
    offload: Offload, reconciled: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    """Restored from a backup taken before the newest media: those media would look orphaned."""
    newest = marker(moto, bucket)["newest_media_ts"]
    for table in ("local_media_repository", "remote_media_cache"):
        synapse.conn.cursor().execute(synapse._sql(f"DELETE FROM {table} WHERE created_ts >= %s"), (newest,))
    synapse.conn.commit()
    keys = bucket_keys(moto, bucket)
    refused = offload(*reconciled, "reconcile", "--grace", "0s", "--apply", "--max-delete-share", "100", expect=2)
    assert "before the newest one this store's owner had when last recorded" in refused.output
    assert "the database is an older copy (restored from a backup?)" in refused.output
    assert bucket_keys(moto, bucket) == keys


def test_replace_owner_must_name_the_recorded_owner(
    offload: Offload, reconciled: list[str], other_synapse: SynapseMedia, moto: MotoServer, bucket: str,
    tmp_path: Path,
) -> None:
    """Handing a store over takes the recorded owner's name, and the brakes still hold: none of
    this store's media is the new owner's, so nothing is deleted."""
    keys = bucket_keys(moto, bucket)
    new_owner = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)
    wrong_name = offload("--config", str(new_owner), "reconcile", "--apply", "--replace-owner", "other.example",
                         expect=2)
    assert "--replace-owner 'other.example' does not name the store's recorded owner ('test')" in wrong_name.output
    own = offload(*reconciled, "reconcile", "--apply", "--replace-owner", "test", expect=2)
    assert "already belongs to this homeserver; leave the option out" in own.output
    braked = offload("--config", str(new_owner), "reconcile", "--grace", "0s", "--apply", "--replace-owner", "test",
                     "--max-delete-share", "100", expect=2)
    assert "none of the" in braked.output and "is in the database of other.example" in braked.output
    assert bucket_keys(moto, bucket) == keys
    assert marker(moto, bucket)["owner"]["server_name"] == "test"


@pytest.mark.parametrize("body", [b"{not json", b"[" * 60_000, b'{"format": true}', b"x" * 70_000,
                                  b'{"format": 1, "owner": {"server_name": "\\u001b[2Jevil"}}'])
def test_a_damaged_marker_is_refused(offload: Offload, reconciled: list[str], moto: MotoServer, bucket: str,
                                     body: bytes) -> None:
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=MARKER_KEY, Body=body)
    keys = bucket_keys(moto, bucket)
    refused = offload(*reconciled, "reconcile", "--grace", "0s", "--apply", expect=2)
    assert f"the owner marker {OWNER_MARKER} in s3://{bucket}/media/ at {moto.endpoint_url}" in refused.output
    assert "\x1b" not in refused.output
    assert bucket_keys(moto, bucket) == keys


def test_a_marker_that_cannot_be_read_is_refused(
    offload: Offload, reconciled: list[str], moto: MotoServer, bucket: str,
) -> None:
    """An archived marker (a lifecycle rule moved it to GLACIER): the store answers with an error."""
    client = s3_client(moto.endpoint_url)
    body = client.get_object(Bucket=bucket, Key=MARKER_KEY)["Body"].read()
    client.put_object(Bucket=bucket, Key=MARKER_KEY, Body=body, StorageClass="GLACIER")
    refused = offload(*reconciled, "reconcile", "--grace", "0s", "--apply", expect=2)
    assert f"cannot read the owner marker {OWNER_MARKER} in s3://{bucket}/media/" in refused.output
    assert "not valid for the object's storage class" in refused.output


def test_migrate_refuses_a_target_of_another_homeserver(
    offload: Offload, reconciled: list[str], homeserver_yaml: Path, other_synapse: SynapseMedia, moto: MotoServer,
    bucket: str, workdir: Path, tmp_path: Path,
) -> None:
    target = f"{bucket}-other"
    s3_client(moto.endpoint_url).create_bucket(Bucket=target)
    other = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, target)
    offload("--config", str(other), "--cache-db", "other-cache.db", "update", "30d")
    offload("--config", str(other), "--cache-db", "other-cache.db", "upload")  # claims the target
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, target)))
    target_keys = bucket_keys(moto, target)
    refused = offload(*reconciled, "migrate", "--to", "target.yaml", expect=2)
    assert "belongs to homeserver other.example" in refused.output and "copying would mix" in refused.output
    assert bucket_keys(moto, target) == target_keys


def test_a_database_whose_users_cannot_be_read(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    """(As for a role without SELECT on `users`.) `upload` deletes nothing remote: it offloads, and
    warns that the owner goes unchecked. `reconcile` deletes: it refuses, and says why."""
    synapse.conn.cursor().execute("DROP TABLE users")
    synapse.conn.commit()
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    uploaded = offload(*config, "upload", "--delete")
    assert "warning: the store's owner is neither checked nor recorded" in uploaded.stderr
    assert MARKER_KEY not in bucket_keys(moto, bucket) and len(bucket_keys(moto, bucket)) == len(dataset.old)
    refused = offload(*config, "reconcile", "--grace", "0s", "--apply", expect=2)
    assert "may this role SELECT from users?" in refused.output


def test_a_fresh_claim_deletes_nothing_until_it_is_older_than_the_grace_period(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, other_synapse: SynapseMedia,
    moto: MotoServer, bucket: str, tmp_path: Path,
) -> None:
    """Two homeservers already share a bucket and prefix, unmarked (offloaded the old way): their
    objects cannot be told apart. The first reconcile claims the store and deletes nothing; the
    other homeserver's next upload is refused, so its admin hears of it before anything goes."""
    legacy_upload(offload, homeserver_yaml, synapse, moto, bucket)
    other = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)
    offload("--cache-db", "other.db", "update", str(other_synapse.media_store), "30d",
            "--homeserver-config-path", str(other))
    offload("--cache-db", "other.db", "upload", str(other_synapse.media_store), bucket, "--endpoint-url",
            moto.endpoint_url, "--prefix", PREFIX, "--delete")
    keys = bucket_keys(moto, bucket)
    time.sleep(2.5)  # every object older than the grace period below

    claimed = offload("--config", str(other), "--cache-db", "other.db", "reconcile", "--grace", "2s", "--apply",
                      "--max-delete-share", "100")
    assert "Deleting nothing yet: this homeserver's claim on" in claimed.output
    assert "dates from this run" in claimed.output
    assert bucket_keys(moto, bucket) == keys | {MARKER_KEY}
    assert marker(moto, bucket)["owner"]["server_name"] == "other.example"

    refused = offload("--config", str(homeserver_yaml), "upload", "--delete", expect=2)
    assert "belongs to homeserver other.example" in refused.output


def test_claiming_a_store_that_holds_objects_says_so(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=PREFIX + "local_content/Xx/Yy/ZzSomeoneElses", Body=b"x")
    offload("--config", str(homeserver_yaml), "update", "30d")
    uploaded = offload("--config", str(homeserver_yaml), "upload")
    assert "which already holds objects. If another homeserver writes to this bucket and prefix" in uploaded.stderr
    assert "which already holds" not in offload("--config", str(homeserver_yaml), "upload").stderr  # once
