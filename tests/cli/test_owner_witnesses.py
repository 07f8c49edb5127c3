"""A copy of the owner's database that went its own way (a staging server cloned whole from
production: same server name, same first user, the database in the same place as far as its
settings tell, media of its own since) is refused by `reconcile` and `upload`: it lacks the
witnesses, the newest local media the owner's runs record in the store's marker. Without them,
its reconcile took the media production added after the copy for orphans and deleted them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.ownership import OWNER_MARKER, WITNESS_COUNT
from tests.support.offload import Dataset, Offload
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])  # a database copied as a file, kept in its place
PREFIX = "media/"
MARKER_KEY = PREFIX + OWNER_MARKER
RECONCILE = ("reconcile", "--grace", "0s", "--apply", "--max-delete-share", "100")


def bucket_keys(moto: MotoServer, bucket: str) -> set[str]:
    listed = s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed}


def marker(moto: MotoServer, bucket: str) -> dict[str, Any]:
    return json.loads(s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=MARKER_KEY)["Body"].read())


def delete_in_synapse(synapse: SynapseMedia, media_ids: list[str]) -> None:
    """As Synapse's admin API deletes local media: rows gone, the store's objects left behind."""
    for media_id in media_ids:
        synapse.conn.cursor().execute(synapse._sql("DELETE FROM local_media_repository WHERE media_id = %s"),
                                      (media_id,))
    synapse.conn.commit()


@pytest.fixture
def config(offload: Offload, homeserver_yaml: Path, dataset: Dataset) -> list[str]:
    """Production offloaded its old media and reconciled once: the store is recorded as its."""
    args = ["--config", str(homeserver_yaml)]
    offload(*args, "update", "30d")
    offload(*args, "upload", "--delete")
    offload(*args, *RECONCILE)
    return args


@pytest.fixture
def database_file(synapse: SynapseMedia) -> Path:
    return Path(synapse.db_config["args"]["database"])


def production_goes_on(offload: Offload, config: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
                       count: int) -> list[str]:
    """Production gets `count` new media, which its provider writes to the store, and runs its
    nightly upload: their objects."""
    client = s3_client(moto.endpoint_url)
    keys = []
    for i in range(count):
        [path] = synapse.add_local(f"ProductionNew{i:03d}", os.urandom(2000), 0.5)
        client.put_object(Bucket=bucket, Key=PREFIX + path, Body=synapse.files[path])
        keys.append(PREFIX + path)
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    return keys


def test_a_clone_gone_its_own_way_may_not_reconcile(
    offload: Offload, config: list[str], synapse: SynapseMedia, database_file: Path, moto: MotoServer, bucket: str,
    tmp_path: Path,
) -> None:
    clone = tmp_path / "clone.db"
    shutil.copy(database_file, clone)  # staging is cloned from production
    production_objects = production_goes_on(offload, config, synapse, moto, bucket, 5)
    assert {"ProductionNew000", "ProductionNew004"} <= set(marker(moto, bucket)["witnesses"])
    keys = bucket_keys(moto, bucket)
    assert set(production_objects) <= keys

    shutil.copy(clone, database_file)  # staging: the clone, where production's database was
    synapse.add_local("StagingOwnMedia1", os.urandom(700), 0.01)  # with media of its own, newer than production's
    refused = offload(*config, *RECONCILE, expect=2)
    assert "the 3 newest local media its database had then are not in this run's database" in refused.output
    assert "5 of the" in refused.output
    assert "a staging server cloned from production" in refused.output
    assert "ProductionNew000" in refused.output
    assert bucket_keys(moto, bucket) == keys  # production's new media are still there

    dry = offload(*config, "reconcile", "--grace", "0s", expect=2)  # the dry run says it as well
    assert "newest local media its database had then are not in this run's database" in dry.output


def test_a_clone_gone_its_own_way_may_not_upload_nor_take_the_record(
    offload: Offload, config: list[str], synapse: SynapseMedia, database_file: Path, moto: MotoServer, bucket: str,
    tmp_path: Path,
) -> None:
    clone = tmp_path / "clone.db"
    shutil.copy(database_file, clone)
    production_goes_on(offload, config, synapse, moto, bucket, 4)
    recorded = marker(moto, bucket)
    production_db = tmp_path / "production.db"
    shutil.copy(database_file, production_db)

    shutil.copy(clone, database_file)
    staging_files = synapse.add_local("StagingOldMedia1", os.urandom(700), 45)
    offload(*config, "update", "30d")
    refused = offload(*config, "upload", "--delete", expect=2)
    assert "newest local media its database had then are not in this run's database" in refused.output
    assert (synapse.media_store / staging_files[0]).exists()  # nothing of staging's was deleted locally
    contested = marker(moto, bucket)
    assert "was refused, with the database" in contested.pop("contested")
    assert contested == recorded  # nor did it take the record over, but it says two databases write there

    shutil.copy(production_db, database_file)  # production's runs are refused too, until its admin looks
    refused = offload(*config, "upload", "--delete", expect=2)
    assert "two copies of the homeserver's database write to this store" in refused.output
    offload(*config, *RECONCILE, expect=2)
    offload(*config, "upload", "--delete", "--database-changed")  # then go on as before
    assert "contested" not in marker(moto, bucket)
    offload(*config, *RECONCILE)


def test_a_few_media_deleted_since_are_no_copy(
    offload: Offload, config: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    """Media deleted in Synapse between two runs, here and there (not all of the newest), are
    orphans to delete, and the witnesses are recorded anew without them."""
    production_objects = production_goes_on(offload, config, synapse, moto, bucket, 3)
    delete_in_synapse(synapse, ["ProductionNew000", "ProductionNew001", "RecentMediaAbCdE", "AbCdEfGhIjKlMnOp"])
    result = offload(*config, *RECONCILE)
    assert f"deleted {production_objects[0].removeprefix(PREFIX)} " in result.output
    assert production_objects[0] not in bucket_keys(moto, bucket)
    witnesses = marker(moto, bucket)["witnesses"]
    assert "ProductionNew002" in witnesses and "ProductionNew000" not in witnesses


def test_many_media_deleted_since_need_database_changed(
    offload: Offload, config: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    """The newest media deleted since (as a copy lacks them) ask for --database-changed."""
    production_objects = production_goes_on(offload, config, synapse, moto, bucket, 4)
    newest_three = ["ProductionNew003", "ProductionNew002", "ProductionNew001"]  # same age: by id, descending
    assert marker(moto, bucket)["witnesses"][:3] == newest_three
    delete_in_synapse(synapse, newest_three)
    keys = bucket_keys(moto, bucket)
    refused = offload(*config, *RECONCILE, expect=2)
    assert "the 3 newest local media its database had then are not in" in refused.output
    assert "--database-changed" in refused.output
    assert bucket_keys(moto, bucket) == keys
    assert offload(*config, "upload", expect=2).exit_code == 2  # upload asks the same

    offload(*config, *RECONCILE, "--database-changed")
    assert production_objects[3] not in bucket_keys(moto, bucket)
    assert production_objects[0] in bucket_keys(moto, bucket)
    assert "ProductionNew003" not in marker(moto, bucket)["witnesses"]
    offload(*config, *RECONCILE)  # from now on, without the flag
    offload(*config, "upload")


def test_witnesses_are_the_newest_local_media_and_an_older_marker_gets_them(
    offload: Offload, config: list[str], synapse: SynapseMedia, moto: MotoServer, bucket: str,
) -> None:
    for i in range(WITNESS_COUNT + 3):
        synapse.add_local(f"Many{i:03d}", os.urandom(100), 50 - i / 100)  # Many034 is the newest of them
    body = marker(moto, bucket)
    del body["witnesses"]  # as a marker of an earlier version has none
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=MARKER_KEY, Body=json.dumps(body).encode())
    offload(*config, "update", "30d")
    offload(*config, "upload")
    witnesses = marker(moto, bucket)["witnesses"]
    assert len(witnesses) == WITNESS_COUNT
    assert "RecentMediaAbCdE" in witnesses and "Many034" in witnesses  # the newest ...
    assert "UrlPreviewMedia1" not in witnesses and "Many000" not in witnesses  # ... that stay


def test_a_clone_that_records_first_deletes_nothing_of_the_owner_refused_since(
    offload: Offload, config: list[str], synapse: SynapseMedia, database_file: Path, moto: MotoServer, bucket: str,
    tmp_path: Path, workdir: Path,
) -> None:
    """The clone runs first after the copy (the same nightly timer, a few minutes earlier): its
    upload passes (the recorded witnesses are in the copy) and records its own. The owner's next
    run is refused: the owner is told. But the clone's own reconcile went on to take the media
    the owner added after the copy (written to the store by its provider) for orphans, and
    deleted them: the refusal of one side protected nothing on the other."""
    clone, staging_cache = tmp_path / "clone.db", tmp_path / "staging-cache.db"
    shutil.copy(database_file, clone)  # staging is cloned from production, with its cache.db
    shutil.copy(workdir / "cache.db", staging_cache)
    client = s3_client(moto.endpoint_url)
    production_objects = []
    for i in range(3):  # production's users upload; its provider writes them to the store
        [path] = synapse.add_local(f"ProductionNew{i:03d}", os.urandom(2000), 0.5)
        client.put_object(Bucket=bucket, Key=PREFIX + path, Body=synapse.files[path])
        production_objects.append(PREFIX + path)
    production_db = tmp_path / "production.db"
    shutil.copy(database_file, production_db)

    shutil.copy(clone, database_file)  # staging's nightly run, first
    for i in range(3):
        synapse.add_local(f"StagingOwnMedia{i}", os.urandom(700), 0.01)
    staging = [*config, "--cache-db", str(staging_cache)]
    offload(*staging, "update", "30d")
    offload(*staging, "upload", "--delete")
    staging_db = tmp_path / "staging.db"
    shutil.copy(database_file, staging_db)

    shutil.copy(production_db, database_file)  # production's nightly run: refused, as it should be
    refused = offload(*config, "upload", "--delete", expect=2)
    assert "not in this run's database" in refused.output
    offload(*config, *RECONCILE, expect=2)

    shutil.copy(staging_db, database_file)  # staging's next night (past the grace period)
    offload(*staging, *RECONCILE, expect=2)
    assert set(production_objects) <= bucket_keys(moto, bucket)  # production's media are still there
