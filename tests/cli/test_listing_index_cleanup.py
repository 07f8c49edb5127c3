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


FILL = """
import resource, signal
from synapse_objstore.cli.listing_index import ListingIndex
from synapse_objstore.errors import CommandError
from synapse_objstore.store import ObjectInfo
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
index = ListingIndex()
try:
    index._add([ObjectInfo(f"local_content/ab/cd/{n:08d}{'x' * 40}", n, None, None, None) for n in range(100000)])
except CommandError as error:
    print(error)
"""


def test_no_room_for_the_listing_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """A full temporary directory ends the run as a CommandError (exit 2) naming where the
    listing goes and how to move it, not as sqlite3's 'database or disk is full' traceback."""
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_TMPDIR"}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", FILL], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) in done.stdout and "SQLITE_TMPDIR" in done.stdout
