"""The temporary listing index of restore, verify and migrate leaves nothing behind when the
run is killed (SIGKILL, OOM killer, a lost session): a store of millions of objects makes an
index of gigabytes, and a file left in the temporary directory at each killed run fills it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.offload import REPO

BUILD_AND_WAIT = """
import sys, time
from synapse_objstore.cli.listing_index import ListingIndex
from synapse_objstore.store import ObjectInfo
index = ListingIndex()
index._add([ObjectInfo(f"local_content/ab/cd/{n:08d}", n, None, None, None) for n in range(20000)])
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_run_leaves_no_listing_on_disk(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_TMPDIR"}
    env.update(TMPDIR=str(scratch), PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", BUILD_AND_WAIT], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert list(scratch.iterdir()) == []
