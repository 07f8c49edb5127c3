"""--metrics-file: each run's summary as a Prometheus textfile for node_exporter's textfile
collector, read back with prometheus_client's own parser: the counts an operator watches,
success 0 on a run that fails, the file replaced atomically, no secret in it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.lock import CacheDbLock
from tests.support.offload import MAIN, REPO, Dataset, Offload, store_block

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


def read_metrics(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a textfile: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, command: str,
          shard: str = "0/1", **labels: str) -> float:
    labelled = frozenset({"command": command, "shard": shard, **labels}.items())
    return metrics[f"objstore_offload_last_run_{name}", labelled]


def test_an_offload_reports_what_it_moved(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "--metrics-file", "update.prom", "update", "30d")
    update = read_metrics(workdir / "update.prom")
    assert value(update, "media", "update", action="synced") == 5
    assert value(update, "success", "update") == 1 and value(update, "exit_code", "update") == 0

    offload(*config, "--metrics-file", "upload.prom", "upload", "--delete")
    metrics = read_metrics(workdir / "upload.prom")
    old_bytes = sum(len(synapse.files[p]) for p in dataset.old)
    assert value(metrics, "success", "upload") == 1
    assert value(metrics, "files", "upload", action="uploaded") == len(dataset.old)
    assert value(metrics, "bytes", "upload", action="uploaded") == old_bytes
    assert value(metrics, "files", "upload", action="deleted") == len(dataset.old)
    assert value(metrics, "bytes", "upload", action="deleted") == old_bytes
    assert value(metrics, "media", "upload", action="deleted") == 5
    assert value(metrics, "failures", "upload") == 0 and value(metrics, "left", "upload") == 0
    assert value(metrics, "dry_run", "upload") == 0
    started = value(metrics, "start_timestamp_seconds", "upload")
    ended = value(metrics, "end_timestamp_seconds", "upload")
    assert 0 < started <= ended
    assert value(metrics, "duration_seconds", "upload") == pytest.approx(ended - started)
    assert (workdir / "update.prom").read_text() != (workdir / "upload.prom").read_text()

    offload(*config, "--metrics-file", "reconcile.prom", "reconcile")
    reconciled = read_metrics(workdir / "reconcile.prom")
    assert value(reconciled, "objects", "reconcile", action="listed") == len(dataset.old)
    assert value(reconciled, "dry_run", "reconcile") == 1 and value(reconciled, "success", "reconcile") == 1


def test_a_run_that_leaves_files_fails_in_the_file(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, workdir: Path,
) -> None:
    original = synapse.media_store / "remote_content/example.com:8448/Fs/Id/RemoteTwo456"
    original.unlink()
    original.mkdir()  # not a regular file: this media fails, the others go
    config = ["--config", str(homeserver_yaml), "--shard", "0/1"]
    offload(*config, "--metrics-file", "update.prom", "update", "30d", expect=1)
    update = read_metrics(workdir / "update.prom")
    assert value(update, "success", "update") == 0 and value(update, "exit_code", "update") == 1
    assert value(update, "failures", "update") == 1

    offload(*config, "--metrics-file", "upload.prom", "upload", "--delete", expect=1)
    metrics = read_metrics(workdir / "upload.prom")
    assert value(metrics, "success", "upload") == 0 and value(metrics, "exit_code", "upload") == 1
    assert value(metrics, "failures", "upload") == 1 and value(metrics, "left", "upload") == 1
    assert value(metrics, "media", "upload", action="deleted") == 4


def test_a_run_that_cannot_run_still_writes_the_file(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, tmp_path: Path, workdir: Path,
) -> None:
    homeserver = tmp_path / "gone.yaml"
    homeserver.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "store_local": True,
                                     "config": store_block(moto, "no-such-bucket")}],
    }))
    config = ["--config", str(homeserver), "--shard", "1/2"]
    offload(*config, "update", "30d")
    result = offload(*config, "--metrics-file", "upload.prom", "upload", "--delete", expect=2)
    assert "no-such-bucket" in result.output
    metrics = read_metrics(workdir / "upload.prom")
    assert value(metrics, "success", "upload", shard="1/2") == 0
    assert value(metrics, "exit_code", "upload", shard="1/2") == 2
    assert value(metrics, "files", "upload", shard="1/2", action="deleted") == 0


def test_the_file_is_replaced_atomically_with_no_secret_in_it(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str, tmp_path: Path,
    workdir: Path,
) -> None:
    secret_key, access_key = secrets.token_urlsafe(30), "AKIA" + secrets.token_hex(8).upper()
    homeserver = tmp_path / "homeserver.yaml"
    homeserver.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "store_local": True,
                                     "store_remote": True, "config": store_block(
                                         moto, bucket, access_key_id=access_key, secret_access_key=secret_key)}],
    }))
    textfiles = workdir / "textfile"
    textfiles.mkdir()
    path = textfiles / "objstore.prom"
    path.write_text("# the last run's\n")
    os.link(path, textfiles / "previous")  # holds the inode node_exporter may be reading right now
    config = ["--config", str(homeserver)]
    offload(*config, "--metrics-file", str(path), "update", "30d")
    offload(*config, "--metrics-file", str(textfiles / "upload.prom"), "upload", "--delete")
    offload(*config, "--metrics-file", str(textfiles / "reconcile.prom"), "reconcile", "--apply", "--grace", "0s")

    # written beside and renamed over: whoever had the old file open read it whole
    assert (textfiles / "previous").read_text() == "# the last run's\n"
    # no temporary file left behind
    assert sorted(os.listdir(textfiles)) == ["objstore.prom", "previous", "reconcile.prom", "upload.prom"]
    assert value(read_metrics(path), "success", "update") == 1
    assert value(read_metrics(textfiles / "reconcile.prom"), "success", "reconcile") == 1
    for name in ("objstore.prom", "upload.prom", "reconcile.prom"):
        text = (textfiles / name).read_text()
        for secret in (secret_key, access_key, bucket, str(synapse.media_store), "AbCdEfGhIjKlMnOp"):
            assert secret not in text


def test_a_metrics_file_where_it_cannot_be_written_is_refused_before_the_run(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    result = offload("--config", str(homeserver_yaml), "--metrics-file", "no-such-dir/x.prom", "update", "30d",
                     expect=2)
    assert "--metrics-file" in result.output and "no-such-dir" in result.output
    assert not (workdir / "cache.db").exists()


def test_a_run_stopped_by_sigterm_still_writes_the_file(
    homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    """systemd stops a run that outlasts its window (RuntimeMaxSec, TimeoutStopSec, `systemctl
    stop`) with SIGTERM: the dashboard must show that run failed, not the last one's success."""
    (workdir / "upload.prom").write_text(
        'objstore_offload_last_run_success{command="upload",shard="0/1"} 1.0\n')
    holder = CacheDbLock.acquire(str(workdir / "cache.db"), "test")  # the run waits for it (--wait)
    lock_path = os.path.realpath(workdir / "cache.db") + ".lock"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", MAIN, "--no-progress", "--config", str(homeserver_yaml),
                                "--wait", "120", "--metrics-file", "upload.prom", "upload", "--delete"],
                               cwd=workdir, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _has_open(process.pid, lock_path):  # waiting for the lock now
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        holder.release()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    metrics = read_metrics(workdir / "upload.prom")
    assert value(metrics, "success", "upload") == 0
    assert value(metrics, "exit_code", "upload") == 128 + signal.SIGTERM
    assert value(metrics, "end_timestamp_seconds", "upload") > time.time() - 60


def _has_open(pid: int, path: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_one_file_given_to_two_commands_or_shards_is_refused(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    """A file holds the last run of one command and shard: another's run replacing it would make
    the first's series vanish, and an alert on its age (which needs the series) never fire."""
    config = ["--config", str(homeserver_yaml), "--metrics-file", "objstore.prom"]
    offload(*config, "update", "30d")
    before = (workdir / "objstore.prom").read_text()
    result = offload(*config, "upload", "--delete", expect=2)
    assert "--metrics-file" in result.output and "command=update" in result.output
    assert (workdir / "objstore.prom").read_text() == before  # update's series are still there
    result = offload(*config, "--shard", "0/2", "--cache-db", "shard-0.db", "update", "30d", expect=2)
    assert "shard=0/1" in result.output
    assert (workdir / "objstore.prom").read_text() == before
    offload(*config, "update", "30d")  # the same command and shard again: its own file
    assert value(read_metrics(workdir / "objstore.prom"), "success", "update") == 1


def test_a_metrics_file_that_is_a_symlink_is_written_where_it_points(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    textfiles = workdir / "textfile"
    textfiles.mkdir()
    target = textfiles / "objstore-update.prom"
    target.write_text("")
    (workdir / "update.prom").symlink_to(target)
    offload("--config", str(homeserver_yaml), "--metrics-file", "update.prom", "update", "30d")
    assert (workdir / "update.prom").is_symlink()
    assert value(read_metrics(target), "success", "update") == 1
    assert os.listdir(textfiles) == ["objstore-update.prom"]
