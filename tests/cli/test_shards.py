"""--shard I/N: N runs, as separate processes on cache.db files of their own, share one offload
and together handle every media exactly once; a cache.db is never used for another shard;
the commands that work on the whole store refuse it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from synapse_objstore.cli.shard import Shard
from tests.cli.conftest import Dataset, Offload
from tests.cli.synapse_media import SynapseMedia
from tests.cli.test_offload_flow import bucket_objects
from tests.servers.moto import MotoServer

REPO = Path(__file__).resolve().parents[2]
# This checkout's objstore-offload, whatever the installed one is.
MAIN = "import sys; from synapse_objstore.cli.main import cli; sys.exit(cli(prog_name='objstore-offload'))"
RUN_TIMEOUT = 300


def run_concurrently(workdir: Path, runs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every run as a process of its own at once; wait for all of them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = [subprocess.Popen([sys.executable, "-c", MAIN, "--no-progress", *args], cwd=workdir, env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in runs]
    done = []
    for process, args in zip(started, runs):
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
        dataset.old += synapse.add_remote(f"host{n % 3}.example", f"remote{n}", f"ShardRemoteFs{n:05d}", os.urandom(50 + n), 50)
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
    assert [i for i in range(4) if Shard(i, 4).holds("", "AbCdEfGhIjKlMnOp")] == [0]
    assert [i for i in range(4) if Shard(i, 4).holds("matrix.org", "FsIdRemoteOne123")] == [1]
    assert [i for i in range(3) if Shard(i, 3).holds("", "AbCdEfGhIjKlMnOp")] == [1]


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
@pytest.mark.parametrize("command", [["reconcile", "--apply"], ["migrate", "--to", "other.yaml"]])
def test_the_commands_on_the_whole_store_refuse_a_shard(
    command: list[str], offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    (workdir / "other.yaml").write_text("bucket: other\n")
    result = offload("--config", str(homeserver_yaml), "--shard", "1/3", *command, expect=2)
    assert f"{command[0]} takes no --shard" in result.output
