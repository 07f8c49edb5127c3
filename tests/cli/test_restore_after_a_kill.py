"""restore after a run that was killed mid-download: the killed run's partial temporary files
are in the media store's .objstore-offload-tmp; the next run restores every file and cleans up."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.restore import TMP_DIR_NAME
from synapse_objstore.cli.scratch_dir import ScratchDir
from tests.support.offload import Dataset, Offload


@pytest.mark.parametrize("engine", ["sqlite"])
def test_restore_after_a_killed_restore(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    left = synapse.media_store / TMP_DIR_NAME
    left.mkdir()
    (left / "tmpk1ll3d").write_bytes(b"half a download")  # as a SIGKILLed restore leaves it

    result = offload("--json", *config, "restore", expect=None)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_restored"] == len(dataset.old)
    assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in dataset.old)
    assert not left.exists()


def test_a_running_restore_keeps_its_scratch_directory(tmp_path: Path) -> None:
    """Shards of one media store restore at once: one starting (or ending) removes only what
    killed runs left, never the directory another run is downloading into."""
    parent = str(tmp_path / TMP_DIR_NAME)
    running = ScratchDir(parent)
    (Path(running.path) / "partial").write_bytes(b"being written")
    abandoned = Path(parent) / "run-killed"
    abandoned.mkdir()
    (abandoned / "partial").write_bytes(b"half")
    other = ScratchDir(parent)
    assert (Path(running.path) / "partial").exists() and not abandoned.exists()
    other.close()
    assert (Path(running.path) / "partial").exists()
    running.close()
    assert not Path(parent).exists()


def test_a_run_killed_before_locking_its_scratch_directory_leaves_nothing_for_long(tmp_path: Path) -> None:
    """A run killed between making its directory and locking it leaves a "new-" directory: one
    old enough is removed by the next run; one just made (a run starting now) is left alone."""
    parent = tmp_path / TMP_DIR_NAME
    parent.mkdir()
    killed = parent / "new-killed"
    killed.mkdir()
    (killed / "partial").write_bytes(b"half")
    os.utime(killed, (time.time() - 3600, time.time() - 3600))
    starting = parent / "new-starting"
    starting.mkdir()
    run = ScratchDir(str(parent))
    assert not killed.exists() and starting.exists()
    run.close()
