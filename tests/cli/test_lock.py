"""One run per cache.db at a time, across real processes: a second run exits 2 naming the
first (or waits with --wait), and a run killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.synapse_media import SynapseMedia
from tests.support.offload import MAIN, Dataset

REPO = Path(__file__).resolve().parents[2]
# This checkout's objstore-offload, whatever the installed one is.
CLI = [sys.executable, "-c", MAIN, "--no-progress"]

pytestmark = pytest.mark.parametrize("engine", ["postgres"])


def start(workdir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*CLI, *args], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def holder_pid(workdir: Path) -> int | None:
    try:
        return int(json.loads((workdir / "cache.db.lock").read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


@pytest.fixture
def stuck_run(synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, workdir: Path
              ) -> Iterator[subprocess.Popen[str]]:
    """`update-db` stuck mid-run: it holds cache.db's lock and waits on a table the test has locked."""
    cursor = synapse.conn.cursor()
    cursor.execute("LOCK TABLE local_media_repository IN ACCESS EXCLUSIVE MODE")
    first = start(workdir, "--config", str(homeserver_yaml), "update-db", "30d")
    try:
        deadline = time.monotonic() + 30
        while holder_pid(workdir) != first.pid:
            if first.poll() is not None or time.monotonic() > deadline:
                first.kill()
                pytest.fail(f"the first run never held the lock: {first.communicate(timeout=30)}")
            time.sleep(0.05)
        yield first
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=30)
        synapse.conn.rollback()


def test_second_run_exits_2_naming_the_first_and_a_killed_run_leaves_no_lock(
    stuck_run: subprocess.Popen[str], homeserver_yaml: Path, workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    started = time.monotonic()
    second = start(workdir, *config, "check-deleted")
    out, err = second.communicate(timeout=30)
    assert second.returncode == 2, out + err
    assert time.monotonic() - started < 15  # the bound is the feature: no waiting (a CLI start takes seconds)
    assert f"cache.db is in use by another objstore-offload run: `objstore-offload update-db` (pid {stuck_run.pid} " \
           f"on {socket.gethostname()}, started " in err
    assert "--wait SECONDS" in err and "Traceback" not in err
    (workdir / "linked.db").symlink_to(workdir / "cache.db")  # the same cache.db by another name
    linked = start(workdir, *config, "--cache-db", "linked.db", "check-deleted")
    assert linked.wait(timeout=60) == 2 and f"(pid {stuck_run.pid} " in linked.communicate()[1]
    for command in (["upload", "--delete"], ["restore"], ["verify"], ["reconcile"], ["update", "30d"]):
        other = start(workdir, *config, *command)
        assert other.wait(timeout=60) == 2 and f"(pid {stuck_run.pid} " in other.communicate()[1], command
    assert stuck_run.poll() is None  # none of them disturbed the run that holds the lock

    os.kill(stuck_run.pid, signal.SIGKILL)
    stuck_run.wait(timeout=30)
    after = start(workdir, *config, "--json", "check-deleted")
    out, err = after.communicate(timeout=60)
    assert after.returncode == 0, out + err
    assert json.loads(out)["command"] == "check-deleted"


def test_wait_waits_for_the_run_that_holds_the_lock(
    stuck_run: subprocess.Popen[str], synapse: SynapseMedia, homeserver_yaml: Path, workdir: Path,
) -> None:
    waiting = start(workdir, "--wait", "60", "--json", "--config", str(homeserver_yaml), "update-db", "30d")
    lock_file = os.path.realpath(workdir / "cache.db.lock")
    deadline = time.monotonic() + 60
    while True:  # until it has come as far as the lock (it opens the lock file to try it)
        assert waiting.poll() is None and time.monotonic() < deadline, waiting.communicate(timeout=30)
        try:
            fds = os.listdir(f"/proc/{waiting.pid}/fd")
        except FileNotFoundError:  # exited meanwhile: the assert above says how
            continue
        if any(os.path.realpath(f"/proc/{waiting.pid}/fd/{fd}") == lock_file for fd in fds):
            break
        time.sleep(0.05)
    time.sleep(1)  # five of its attempts at the lock
    assert waiting.poll() is None  # still waiting for the first run
    synapse.conn.rollback()  # the first run gets its table, finishes and lets go
    first_out, first_err = stuck_run.communicate(timeout=60)
    assert stuck_run.returncode == 0 and "Synced 5 new rows" in first_out, first_out + first_err
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out + err
    assert json.loads(out)["synced"] == 0  # the first run synced them all: nothing is counted twice
