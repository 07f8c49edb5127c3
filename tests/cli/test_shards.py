"""--shard I/N: N runs, as separate processes on cache.db files of their own, share one offload
(and one reconcile) and together handle every media exactly once, each only its own; a cache.db
is never used for another shard; migrate, which copies the whole store, refuses it."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.ownership import OWNER_MARKER
from synapse_objstore.cli.shard import Shard
from synapse_objstore.errors import OwnershipError
from synapse_objstore.io_loop import run
from synapse_objstore.media import parse_media_path
from synapse_objstore.owner_marker import HomeserverIdentity, OwnerRecord, read_owner, record_owner
from synapse_objstore.store import ObjectStore
from tests.support.offload import (
    ANY_SHARE,
    MAIN,
    PREFIX,
    REPO,
    Dataset,
    Offload,
    delete_from_synapse,
    listed_actions,
    store_block,
)
from tests.support.s3 import bucket_objects, put_objects, s3_client

RUN_TIMEOUT = 300


def run_concurrently(workdir: Path, runs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every run as a process of its own at once; wait for all of them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = [subprocess.Popen([sys.executable, "-c", MAIN, "--no-progress", *args], cwd=workdir, env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in runs]
    done = []
    for process, args in zip(started, runs, strict=True):
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate(timeout=30)
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def media_of(cache_db: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(cache_db) as conn:
        return {(origin, media_id) for origin, media_id in conn.execute("SELECT origin, media_id FROM media")}


@pytest.fixture
def many_media(synapse: SynapseMedia, dataset: Dataset) -> set[tuple[str, str]]:
    """The dataset's old media plus 40 more local and 20 more remote ones: every old media, by (origin, media_id)."""
    for n in range(40):
        dataset.old += synapse.add_local(f"ShardLocal{n:06d}", os.urandom(100 + n), 40)
    for n in range(20):
        dataset.old += synapse.add_remote(f"host{n % 3}.example", f"remote{n}", f"ShardRemoteFs{n:05d}",
                                          os.urandom(50 + n), 50)
    old = {("", "AbCdEfGhIjKlMnOp"), ("", "ZyXwVuTsRqPoNmLk"), ("", "emptyMediaFile00"),
           ("matrix.org", "remoteMediaId1"), ("example.com:8448", "remoteMediaId2")}
    old |= {("", f"ShardLocal{n:06d}") for n in range(40)}
    return old | {(f"host{n % 3}.example", f"remote{n}") for n in range(20)}


@pytest.mark.parametrize("count", [1, 3, 4])
def test_shards_together_offload_every_media_exactly_once(
    count: int, many_media: set[tuple[str, str]], synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path,
    moto: MotoServer, bucket: str, workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]

    def shard_args(index: int) -> list[str]:
        return [*config, "--shard", f"{index}/{count}", "--cache-db", f"shard-{index}.db"]

    updates = run_concurrently(workdir, [[*shard_args(i), "update", "30d"] for i in range(count)])
    assert [u.returncode for u in updates] == [0] * count, [u.stderr for u in updates]
    held = [media_of(workdir / f"shard-{i}.db") for i in range(count)]
    # each cache.db holds its shard only: together every old media, none twice
    assert sum(len(media) for media in held) == len(many_media)
    assert set().union(*held) == many_media
    if count > 1:
        assert all(held), "a shard was left empty: the hash does not spread media"

    uploads = run_concurrently(workdir, [["--json", *shard_args(i), "upload", "--delete"] for i in range(count)])
    assert [u.returncode for u in uploads] == [0] * count, [u.stderr for u in uploads]
    assert not any("owner is neither checked nor recorded" in u.stderr for u in uploads)
    summaries = [json.loads(u.stdout) for u in uploads]
    assert [s["media_deleted"] for s in summaries] == [len(media) for media in held]
    assert sum(s["files_uploaded"] for s in summaries) == len(dataset.old)  # no file went up twice
    assert bucket_objects(moto, bucket) == {f"media/{p}": synapse.files[p] for p in dataset.old}
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)


def test_a_media_is_always_in_the_same_shard() -> None:
    """The shard is a hash of the media's paths that every process and version computes alike
    (Python's own hash() differs per process): changing it would re-shard every deployment."""
    assert [i for i in range(4) if Shard(i, 4).holds("", "AbCdEfGhIjKlMnOp")] == [1]
    assert [i for i in range(4) if Shard(i, 4).holds("matrix.org", "FsIdRemoteOne123")] == [3]
    assert [i for i in range(3) if Shard(i, 3).holds("", "AbCdEfGhIjKlMnOp")] == [2]


@pytest.mark.parametrize(("given", "problem"), [
    ("3/3", "I must be less than N"),
    ("4/3", "I must be less than N"),
    ("1/0", "must be at least 1"),
    ("-1/3", "is not I/N"),
    ("1", "is not I/N"),
    ("a/b", "is not I/N"),
    ("1/3/4", "is not I/N"),
])
@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_bad_shard_is_refused_naming_the_flag(
    given: str, problem: str, offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    result = offload("--config", str(homeserver_yaml), "--shard", given, "update", "30d", expect=2)
    assert "--shard" in result.output and problem in result.output
    assert not (workdir / "cache.db").exists()


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_cache_db_is_never_used_for_another_shard(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "--shard", "1/3", "update", "30d")
    held = media_of(workdir / "cache.db")
    on_disk = synapse.local_files()

    for wrong in (["--shard", "2/3"], ["--shard", "1/4"], []):
        result = offload(*config, *wrong, "upload", "--delete", expect=2)
        assert "holds the media of --shard 1/3" in result.output
        assert ("no --shard" if not wrong else f"given --shard {wrong[1]}") in result.output
        result = offload(*config, *wrong, "update-db", "30d", expect=2)
        assert "holds the media of --shard 1/3" in result.output
    assert media_of(workdir / "cache.db") == held and synapse.local_files() == on_disk

    # the same shard goes on
    offload(*config, "--shard", "1/3", "upload", "--delete")
    assert synapse.local_files() < on_disk


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_cache_db_of_every_media_is_not_taken_for_a_shard(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update-db", "30d")  # s3_media_upload's way: every media
    on_disk = synapse.local_files()
    result = offload(*config, "--shard", "0/2", "upload", "--delete", expect=2)
    assert "holds every media (it was written without --shard)" in result.output
    assert synapse.local_files() == on_disk
    offload(*config, "--shard", "0/1", "upload", "--delete")  # one shard of one is every media
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_migrate_refuses_a_shard(offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path) -> None:
    (workdir / "other.yaml").write_text("bucket: other\n")
    result = offload("--config", str(homeserver_yaml), "--shard", "1/3", "migrate", "--to", "other.yaml", expect=2)
    assert "migrate takes no --shard" in result.output


def shard_of(media_path: str, count: int) -> int:
    owner = parse_media_path(media_path)
    assert owner is not None
    (index,) = [i for i in range(count) if Shard(i, count).holds(owner.origin, owner.key)]
    return index


@pytest.fixture
def offloaded_many(offload: Offload, many_media: set[tuple[str, str]], homeserver_yaml: Path, synapse: SynapseMedia,
                   dataset: Dataset, moto: MotoServer, bucket: str) -> list[str]:
    """Every media in the bucket: the old ones offloaded (which claims the store), the recent
    ones uploaded by Synapse."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "--cache-db", "whole.db", "update", "30d")
    offload(*config, "--cache-db", "whole.db", "upload", "--delete")
    put_objects(moto, bucket, {PREFIX + path: synapse.files[path] for path in dataset.recent})
    return config


def media_paths(dataset: Dataset, keys: list[str]) -> set[str]:
    return {path for path in dataset.old if any(key[4:] in path for key in keys)}


def test_shards_reconcile_the_store_together_each_touching_only_its_own(
    offload: Offload, offloaded_many: list[str], synapse: SynapseMedia, dataset: Dataset, moto: MotoServer,
    bucket: str, workdir: Path,
) -> None:
    count = 3
    deleted_local = [f"ShardLocal{n:06d}" for n in range(0, 40, 3)]
    deleted_remote = [(f"host{n % 3}.example", f"remote{n}", f"ShardRemoteFs{n:05d}") for n in range(0, 20, 4)]
    delete_from_synapse(synapse, deleted_local, [r[:2] for r in deleted_remote])
    gone = media_paths(dataset, deleted_local + [r[2] for r in deleted_remote])
    assert {shard_of(path, count) for path in gone} == set(range(count))  # every shard has orphans
    unreplicated = synapse.add_local("NeverUploaded001", os.urandom(3000), 2)  # a failed background upload
    unreplicated += synapse.add_remote("example.org", "remoteNeverUp", "FsIdNeverUpload1", os.urandom(900), 3)
    before = bucket_objects(moto, bucket)

    runs = run_concurrently(workdir, [
        [*offloaded_many, "--json", "--shard", f"{i}/{count}", "--cache-db", f"shard-{i}.db",
         "reconcile", "--apply", "--grace", "0s", *ANY_SHARE] for i in range(count)
    ])
    assert [r.returncode for r in runs] == [0] * count, [r.stderr for r in runs]
    deleted = [listed_actions(r.stderr, "deleted") for r in runs]
    uploaded = [listed_actions(r.stderr, "uploaded") for r in runs]
    for index in range(count):  # each shard deleted and uploaded only objects of its own media
        assert {shard_of(path, count) for path in deleted[index] | uploaded[index]} <= {index}
    assert sum(map(len, deleted)) == len(gone) and set().union(*deleted) == gone
    assert sum(map(len, uploaded)) == len(unreplicated) and set().union(*uploaded) == set(unreplicated)
    summaries = [json.loads(r.stdout) for r in runs]
    # each listed the objects of its shard (the others' deletes and repairs may show in its listing or not)
    assert [s["objects_listed"] for s in summaries] == [
        sum(shard_of(key.removeprefix(PREFIX), count) == index for key in before) for index in range(count)
    ]
    assert bucket_objects(moto, bucket) == {
        **{key: data for key, data in before.items() if key.removeprefix(PREFIX) not in gone},
        **{PREFIX + path: synapse.files[path] for path in unreplicated},
    }


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_shard_never_deletes_objects_of_another_shards_media_and_brakes_on_its_own(
    offload: Offload, offloaded_many: list[str], synapse: SynapseMedia, dataset: Dataset, moto: MotoServer,
    bucket: str,
) -> None:
    # every media of shard 1/2 gone from the database: half the store, all of shard 1's
    local = [f"ShardLocal{n:06d}" for n in range(40) if Shard(1, 2).holds("", f"ShardLocal{n:06d}")]
    remote = [(f"host{n % 3}.example", f"remote{n}", f"ShardRemoteFs{n:05d}") for n in range(20)
              if Shard(1, 2).holds(f"host{n % 3}.example", f"ShardRemoteFs{n:05d}")]
    delete_from_synapse(synapse, local, [r[:2] for r in remote])
    gone = media_paths(dataset, local + [r[2] for r in remote])
    before = bucket_objects(moto, bucket)
    assert len(gone) < 0.6 * len(before)  # an unsharded run's brake at 60% would let this through
    brake = ("--max-delete-share", "60", "--grace", "0s", "--apply")

    shard_0 = json.loads(offload(*offloaded_many, "--json", "--shard", "0/2", "--cache-db", "s0.db", "reconcile",
                                 *brake).stdout)
    assert shard_0["objects_orphaned"] == shard_0["files_deleted"] == 0
    assert bucket_objects(moto, bucket) == before

    refused = offload(*offloaded_many, "--shard", "1/2", "--cache-db", "s1.db", "reconcile", *brake, expect=2)
    assert "above --max-delete-share 60%" in refused.output and "Nothing was deleted" in refused.output
    assert bucket_objects(moto, bucket) == before

    applied = offload(*offloaded_many, "--shard", "1/2", "--cache-db", "s1.db", "reconcile", *ANY_SHARE, "--grace",
                      "0s", "--apply")
    assert listed_actions(applied.output, "deleted") == gone


@pytest.mark.parametrize("engine", ["sqlite"])
def test_only_shard_0_records_the_owner_and_the_others_wait_for_it(
    offload: Offload, homeserver_yaml: Path, many_media: set[tuple[str, str]], synapse: SynapseMedia,
    dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    # media Synapse's provider uploaded, never offloaded: no owner recorded yet
    put_objects(moto, bucket, {PREFIX + path: synapse.files[path] for path in dataset.old + dataset.recent})
    deleted = [f"ShardLocal{n:06d}" for n in range(0, 40, 4)]
    delete_from_synapse(synapse, deleted, [])
    gone = media_paths(dataset, deleted)
    args = ["--config", str(homeserver_yaml)]
    apply = ["reconcile", "--apply", "--grace", "0s", *ANY_SHARE]
    assert any(shard_of(path, 2) == 1 for path in gone)  # shard 1 has orphans of its own

    waiting = offload(*args, "--shard", "1/2", "--cache-db", "s1.db", *apply)
    assert "only --shard 0/2 records it: run that shard first" in waiting.output
    assert listed_actions(waiting.output, "deleted") == set()
    assert not any(key.endswith(OWNER_MARKER) for key in bucket_objects_with_marker(moto, bucket))

    recorded = offload(*args, "--shard", "0/2", "--cache-db", "s0.db", *apply)
    assert "Recorded" in recorded.output
    assert any(key.endswith(OWNER_MARKER) for key in bucket_objects_with_marker(moto, bucket))
    then = offload(*args, "--shard", "1/2", "--cache-db", "s1.db", *apply)
    removed = listed_actions(recorded.output, "deleted") | listed_actions(then.output, "deleted")
    assert removed == gone and not set(bucket_objects(moto, bucket)) & {PREFIX + path for path in gone}


def bucket_objects_with_marker(moto: MotoServer, bucket: str) -> set[str]:
    return {o["Key"] for o in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_runs_of_one_homeserver_recording_the_owner_at_once_all_succeed(
    moto: MotoServer, bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore],
) -> None:
    """N shards' first uploads claim the store at the same moment: each reads back another's
    record (another host or second in `recorded_by`, `recorded_at`), which names the same
    homeserver, and takes it, instead of writing again and finally removing the marker."""
    store = open_store(store_block(moto, bucket))
    identity = HomeserverIdentity("test", "0123456789abcdef", "postgres synapse on 127.0.0.1:5432")

    async def claims() -> list[OwnerRecord]:
        return await asyncio.gather(*(record_owner(store, identity, 1000, (), f"upload --shard {i}/8")
                                      for i in range(8)))

    records = run(claims(), timeout=120)
    assert {record.owner for record in records} == {identity}
    marker = run(read_owner(store), timeout=60)
    assert marker is not None and marker.owner == identity


def test_two_homeservers_claiming_at_once_leave_one_claim_standing(
    moto: MotoServer, bucket: str, open_store: Callable[[dict[str, Any]], ObjectStore],
) -> None:
    """Two homeservers' first runs claim an empty store at the same moment: each run that reads
    back the other's record is refused, rather than writing again and finally removing the
    marker (the other's claim: its next run would claim anew, from a fresh grace period)."""
    store = open_store(store_block(moto, bucket))
    one = HomeserverIdentity("one.example", "0123456789abcdef", "postgres synapse on 127.0.0.1:5432")
    other = HomeserverIdentity("other.example", "fedcba9876543210", "postgres synapse on 127.0.0.1:5432")

    async def claims() -> list[OwnerRecord | BaseException]:
        return await asyncio.gather(*(record_owner(store, identity, 1000, (), f"upload {i}")
                                      for i in range(6) for identity in (one, other)), return_exceptions=True)

    results = run(claims(), timeout=120)
    marker = run(read_owner(store), timeout=60)
    assert marker is not None, "the marker was removed"
    assert all(isinstance(result, OwnershipError) if isinstance(result, BaseException)
               else result.owner.same_homeserver(marker.owner) for result in results), results


@pytest.mark.parametrize("given", ["0/99999999999999999999", "0/9223372036854775808", "0/4294967297"])
@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_shard_count_beyond_the_hash_is_refused_naming_the_flag(
    given: str, offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    """A media's shard is its CRC-32 mod N: no N above 2**32 splits the media any further (and
    one above SQLite's integers crashed the run with a traceback when cache.db recorded it)."""
    result = offload("--config", str(homeserver_yaml), "--shard", given, "update", "30d", expect=2)
    assert "--shard" in result.output and "at most 4294967296" in result.output
    assert not (workdir / "cache.db").exists()
