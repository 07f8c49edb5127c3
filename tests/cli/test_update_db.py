"""update-db run after run: each rerun reads only the media that aged past the last run's cutoff."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.cache_db import CacheDb
from synapse_objstore.media import MediaType
from tests.support.offload import OLD_SCHEMA, Dataset, Offload, schema_of

OLD_MEDIA = {("", "AbCdEfGhIjKlMnOp"), ("", "ZyXwVuTsRqPoNmLk"), ("", "emptyMediaFile00"),
             ("matrix.org", "remoteMediaId1"), ("example.com:8448", "remoteMediaId2")}


@pytest.fixture
def database_yaml(synapse: SynapseMedia, workdir: Path) -> None:
    """database.yaml in the working directory, as s3_media_upload reads it."""
    args = synapse.db_config["args"]
    settings = {"sqlite": args} if synapse.engine == "sqlite" else {"postgres": args}
    (workdir / "database.yaml").write_text(yaml.safe_dump(settings))


def cache_media(workdir: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(workdir / "cache.db") as conn:
        return {(origin, media_id) for origin, media_id in conn.execute("SELECT origin, media_id FROM media")}


def synced(offload: Offload, *args: str) -> int:
    return int(json.loads(offload("--json", "update-db", *args).stdout)["synced"])


def set_last_access(synapse: SynapseMedia, media_id: str, ts: int) -> None:
    synapse.conn.cursor().execute(
        synapse._sql("UPDATE local_media_repository SET last_access_ts = %s WHERE media_id = %s"), (ts, media_id)
    )
    synapse.conn.commit()


# Ten days after a run with 30d, a run with 30d has the cutoff that a run with 20d has now.
# Timestamps in Synapse's tables stay put, as they do when no one accesses the media.


@pytest.mark.usefixtures("database_yaml")
def test_rerun_adds_media_that_aged_past_the_cutoff_and_not_media_accessed_again(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, workdir: Path,
) -> None:
    synapse.add_local("AgingMedia000000", b"a", 25)
    synapse.add_local("NeverAccessed000", b"n", 25, accessed=False)
    synapse.add_local("AccessedAgain000", b"x", 25)
    synapse.add_local("OldAccessedAgain", b"o", 40)
    assert synced(offload, "30d") == 6
    assert cache_media(workdir) == OLD_MEDIA | {("", "OldAccessedAgain")}

    # since then, two media were downloaded again: one that was offloadable, one that was not yet
    set_last_access(synapse, "AccessedAgain000", synapse.now_ms - 60_000)
    set_last_access(synapse, "OldAccessedAgain", synapse.now_ms)
    out = offload("update-db", "20d").stdout
    assert "were synced by an earlier run" in out and "Synced 2 new rows" in out
    # the media cache.db knew stays there, as with s3_media_upload; the recent one is not added
    assert cache_media(workdir) == OLD_MEDIA | {("", "OldAccessedAgain"), ("", "AgingMedia000000"),
                                                ("", "NeverAccessed000")}
    assert synced(offload, "20d") == 0

    # a shorter duration than the last run's reaches back to media that were recent then
    assert synced(offload, "1s") == 3  # AccessedAgain000, RecentMediaAbCdE, recentRemote
    assert ("", "RecentMediaAbCdE") in cache_media(workdir)
    assert ("", "UrlPreviewMedia1") not in cache_media(workdir)


@pytest.mark.usefixtures("database_yaml")
def test_dry_run_does_not_move_the_cutoff(offload: Offload, synapse: SynapseMedia, dataset: Dataset,
                                          workdir: Path) -> None:
    assert synced(offload, "--dry-run", "30d") == 5
    assert cache_media(workdir) == set()
    assert synced(offload, "30d") == 5

    synapse.add_local("AgingMedia000000", b"a", 25)
    assert synced(offload, "--dry-run", "20d") == 1
    assert synced(offload, "--dry-run", "20d") == 1
    assert synced(offload, "20d") == 1
    assert ("", "AgingMedia000000") in cache_media(workdir)


@pytest.mark.usefixtures("database_yaml")
def test_cache_db_of_s3_media_upload_gets_a_full_sync(offload: Offload, synapse: SynapseMedia, dataset: Dataset,
                                                      workdir: Path) -> None:
    """Its cache.db has no cutoff, whatever s3_media_upload synced before: every media is read once."""
    with sqlite3.connect(workdir / "cache.db") as conn:
        conn.executescript(OLD_SCHEMA)
        conn.executemany(
            "INSERT INTO media (origin, media_id, filesystem_id, type, known_deleted) VALUES (?, ?, ?, ?, ?)",
            [("", "AbCdEfGhIjKlMnOp", "AbCdEfGhIjKlMnOp", "local", True),
             ("", "gonelongago00000", "gonelongago00000", "local", True)],
        )
    old_schema = schema_of(workdir / "cache.db")
    assert synced(offload, "30d") == 4
    assert cache_media(workdir) == OLD_MEDIA | {("", "gonelongago00000")}
    with sqlite3.connect(workdir / "cache.db") as conn:  # what s3_media_upload knew is kept
        assert conn.execute("SELECT known_deleted FROM media WHERE media_id = 'AbCdEfGhIjKlMnOp'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM media WHERE NOT known_deleted").fetchone() == (4,)
    assert schema_of(workdir / "cache.db") == old_schema
    assert synced(offload, "30d") == 0


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.usefixtures("database_yaml")
def test_first_sync_into_a_new_cache_db_keeps_its_schema(offload: Offload, dataset: Dataset, workdir: Path) -> None:
    """The first sync builds the indexes of `media` after its rows; they end up as s3_media_upload's."""
    with sqlite3.connect(workdir / "reference.db") as conn:
        conn.executescript(OLD_SCHEMA)
    assert synced(offload, "30d") == 5
    assert schema_of(workdir / "cache.db") == schema_of(workdir / "reference.db")
    # the unique index is there
    with sqlite3.connect(workdir / "cache.db") as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO media VALUES ('', 'AbCdEfGhIjKlMnOp', 'AbCdEfGhIjKlMnOp', 'local', 0)")


def test_failed_first_sync_leaves_cache_db_as_it_was(tmp_path: Path) -> None:
    """The Synapse database goes away in the middle of a first sync: nothing is half done."""
    path = str(tmp_path / "cache.db")
    cache = CacheDb(path)
    with sqlite3.connect(tmp_path / "reference.db") as conn:
        conn.executescript(OLD_SCHEMA)

    def batches() -> Iterator[tuple[MediaType, list[tuple[str, ...]]]]:
        yield "local", [(f"media{n:019d}",) for n in range(1000)]
        raise ConnectionError("server closed the connection unexpectedly")

    with pytest.raises(ConnectionError):
        cache.add_synced_media(batches())
    cache.close()
    assert schema_of(Path(path)) == schema_of(tmp_path / "reference.db")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM media").fetchone() == (0,)
