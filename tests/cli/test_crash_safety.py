"""An upload killed with SIGKILL at several points loses nothing, and a rerun finishes the job;
also when the store answers through a storm of 503 SlowDown and connection resets."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia, Thumb
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from tests.support.offload import MiB, Offload, assert_nothing_lost, recorded_paths
from tests.support.s3 import s3_client

MEDIA = 70
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("storm", [False, True], ids=["calm", "storm"])
def test_sigkill_at_any_point_loses_nothing(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    storm: bool,
) -> None:
    thumb = [Thumb(32, 32, "image/png", "crop", b"")]
    synapse.add_local("BigMultipartMedia", os.urandom(12 * MiB), 50)  # three 5 MiB parts
    for n in range(MEDIA):
        thumb[0].data = os.urandom(700)
        synapse.add_local(f"media{n:04d}xxxxxx", os.urandom(3000 + n), 40, thumb)
        synapse.add_remote("remote.example", f"r{n}", f"fs{n:04d}remoteid", os.urandom(1500), 40)
    offload("--config", str(homeserver_yaml), "update", "30d")
    cache = workdir / "cache.db"
    client = s3_client(moto.endpoint_url)
    total_files = len(synapse.files)

    def objects() -> int:
        return int(client.list_objects_v2(Bucket=bucket).get("KeyCount", 0))

    def multipart_under_way() -> bool:
        return bool(client.list_multipart_uploads(Bucket=bucket).get("Uploads"))

    def deleted_locally() -> int:
        return total_files - len(synapse.local_files())

    kill_points: list[tuple[str, Callable[[], bool]]] = [
        ("during the multipart upload", multipart_under_way),
        ("after the first objects are stored", lambda: objects() >= 3),
        ("after verifications are recorded", lambda: len(recorded_paths(cache)) >= 20),
        ("while local files are being deleted", lambda: deleted_locally() >= 40),
        ("while more files are being deleted", lambda: deleted_locally() >= 120),
    ]
    proxy = FaultProxy(moto.endpoint_url, Faults(rate_503=0.1, rate_reset=0.05) if storm else Faults(), seed=5)
    command = [str(Path(sys.executable).with_name("objstore-offload")), "--no-progress",
               "--config", str(homeserver_yaml), "upload", "--delete", "--jobs", "2",
               "--endpoint-url", proxy.start().endpoint_url]
    # the code of this checkout, wherever the venv's script would import it from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    killed = []
    try:
        for name, reached in kill_points:
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while process.poll() is None and not reached() and time.monotonic() < deadline:
                time.sleep(0.01)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                killed.append(name)
            process.wait(10)
            assert process.returncode in (0, -signal.SIGKILL), process.stderr.read().decode()  # type: ignore[union-attr]
            process.stderr.close()  # type: ignore[union-attr]
            assert_nothing_lost(synapse, moto, bucket, cache)
    finally:
        proxy.stop()
    if storm:
        assert proxy.stats().get("slowdown", 0) >= 3

    # the kills really landed mid-run, not after a finished one
    assert len(killed) >= 4, f"only killed {killed}"
    assert 0 < deleted_locally() < total_files

    offload("--config", str(homeserver_yaml), "upload", "--delete")
    assert assert_nothing_lost(synapse, moto, bucket, cache) == total_files
    assert synapse.local_files() == set()
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT count(*) FROM media WHERE NOT known_deleted").fetchone() == (0,)
