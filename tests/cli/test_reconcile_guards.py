"""`reconcile` refuses to delete another homeserver's media: the store's owner marker, the
server name of the database's users, and the brake on the share of the store one run deletes.
Two homeservers (two Synapse databases, PostgreSQL or SQLite) share one provider block, the
copy-paste mistake these guards are for."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml

from synapse_objstore.cli.ownership import OWNER_MARKER
from tests.cli.conftest import Dataset, Offload, store_block
from tests.cli.synapse_media import SynapseMedia, sqlite_connect
from tests.conftest import s3_client
from tests.servers.moto import MotoServer
from tests.servers.postgres import temporary_database

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
        yield fill(SynapseMedia(conn, "sqlite", media_store, now_ms, {"name": "sqlite3", "args": {"database": str(path)}}))
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


def test_another_homeservers_database_is_refused_by_the_owner_marker(
    offload: Offload, reconciled: list[str], other_synapse: SynapseMedia, moto: MotoServer, bucket: str,
    tmp_path: Path, workdir: Path,
) -> None:
    marker = json.loads(s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=MARKER_KEY)["Body"].read())
    assert marker["owner"]["server_name"] == "test" and marker["owner"]["fingerprint"]
    keys = bucket_keys(moto, bucket)
    cache = (workdir / "cache.db").read_bytes()
    wrong = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)

    for extra in ([], ["--apply"], ["--apply", "--max-delete-share", "100"]):
        refused = offload("--config", str(wrong), "reconcile", "--grace", "0s", *extra, expect=2)
        assert "belongs to homeserver test (database " in refused.output
        assert "this run's database is of homeserver other.example" in refused.output
        assert other_synapse.engine in refused.output and "refusing" in refused.output
        assert "deleted" not in refused.output
    assert bucket_keys(moto, bucket) == keys
    assert (workdir / "cache.db").read_bytes() == cache  # cache.db forgot nothing

    # the right homeserver still reconciles its store
    offload(*reconciled, "reconcile", "--grace", "0s", "--apply")


def test_first_run_with_a_wrong_database_is_stopped_by_the_delete_share(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, other_synapse: SynapseMedia, moto: MotoServer,
    bucket: str, tmp_path: Path,
) -> None:
    """No marker yet (the store was only offloaded to, never reconciled): to the other
    homeserver's database every object is an orphan, and the brake refuses before any deletion."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    offload("--config", str(homeserver_yaml), "upload", "--delete")
    keys = bucket_keys(moto, bucket)
    wrong = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)

    dry = offload("--json", "--config", str(wrong), "reconcile", "--grace", "0s")
    summary = json.loads(dry.stdout)
    assert summary["server_name"] == "other.example" and summary["store_owner"].startswith("none recorded yet")
    assert summary["local_media_in_database"] == 1 and summary["remote_media_in_database"] == 1
    assert summary["delete_share"] == 100.0 and summary["max_delete_share"] == 10.0
    dry = offload("--config", str(wrong), "reconcile", "--grace", "0s")
    assert f"Would delete {len(keys)} of the {len(keys)} media objects listed (100.0%" in dry.output
    assert "--apply would refuse to delete: 100.0% is above --max-delete-share 10%" in dry.output

    refused = offload("--config", str(wrong), "reconcile", "--grace", "0s", "--apply", expect=2)
    assert f"refusing to delete {len(keys)} of the {len(keys)} media objects listed" in refused.output
    assert "nothing was deleted" in refused.output and "Compared with other.example" in refused.output
    assert bucket_keys(moto, bucket) == keys  # no marker was written either


def test_homeserver_yaml_whose_database_is_another_servers_is_refused(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, other_synapse: SynapseMedia, moto: MotoServer,
    bucket: str, tmp_path: Path,
) -> None:
    """server_name says `test`, the `database:` section was copied from other.example's config."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    offload("--config", str(homeserver_yaml), "upload", "--delete")
    keys = bucket_keys(moto, bucket)
    mixed = write_homeserver_yaml(tmp_path / "mixed.yaml", "test", other_synapse, moto, bucket)
    for extra in ([], ["--apply", "--max-delete-share", "100"]):
        refused = offload("--config", str(mixed), "reconcile", "--grace", "0s", *extra, expect=2)
        assert "homeserver.yaml says server_name 'test', but the users of its database" in refused.output
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
def test_the_same_homeserver_on_a_moved_database_is_accepted(
    offload: Offload, reconciled: list[str], homeserver_yaml: Path, synapse: SynapseMedia, tmp_path: Path,
    engine: str,
) -> None:
    """The fingerprint is the database's content, not where it lives: a database moved (or
    restored, or ported) keeps its owner."""
    config = yaml.safe_load(homeserver_yaml.read_text())
    moved = tmp_path / "moved" / "homeserver.db"
    moved.parent.mkdir()
    shutil.copy(config["database"]["args"]["database"], moved)
    config["database"]["args"]["database"] = str(moved)
    homeserver_yaml.write_text(yaml.safe_dump(config))
    result = offload(*reconciled, "reconcile", "--grace", "0s", "--apply")
    assert f"with the database of test (sqlite3 {moved}" in result.output


def test_replace_owner_must_name_the_recorded_owner(
    offload: Offload, reconciled: list[str], other_synapse: SynapseMedia, moto: MotoServer, bucket: str,
    tmp_path: Path,
) -> None:
    """Handing a store over takes the recorded owner's name, and the delete-share brake still holds."""
    keys = bucket_keys(moto, bucket)
    new_owner = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)
    wrong_name = offload("--config", str(new_owner), "reconcile", "--apply", "--replace-owner", "other.example",
                         expect=2)
    assert "--replace-owner 'other.example' does not name the store's recorded owner ('test')" in wrong_name.output
    braked = offload("--config", str(new_owner), "reconcile", "--grace", "0s", "--apply", "--replace-owner", "test",
                     expect=2)
    assert "above --max-delete-share 10%" in braked.output
    assert bucket_keys(moto, bucket) == keys

    # deliberately, with both: the store changes hands, and the marker says so
    offload("--config", str(new_owner), "reconcile", "--grace", "0s", "--apply", "--replace-owner", "test",
            "--max-delete-share", "100")
    marker = json.loads(s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=MARKER_KEY)["Body"].read())
    assert marker["owner"]["server_name"] == "other.example"
    # none of test's media was other.example's; its own local media were repaired into the store
    assert bucket_keys(moto, bucket) == {MARKER_KEY, PREFIX + "local_content/Ot/he/rServerMedia",
                                         PREFIX + "remote_content/matrix.org/Ot/he/rRemoteFsId1"}
    refused = offload(*reconciled, "reconcile", "--grace", "0s", expect=2)
    assert "belongs to homeserver other.example" in refused.output


def test_a_damaged_marker_is_refused(offload: Offload, reconciled: list[str], moto: MotoServer, bucket: str) -> None:
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=MARKER_KEY, Body=b"{not json")
    keys = bucket_keys(moto, bucket)
    refused = offload(*reconciled, "reconcile", "--grace", "0s", "--apply", expect=2)
    assert f"the owner marker {OWNER_MARKER} in s3://{bucket}/media/ at {moto.endpoint_url} cannot be read" \
        in refused.output
    assert bucket_keys(moto, bucket) == keys
