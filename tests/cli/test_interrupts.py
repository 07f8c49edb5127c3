"""A run stopped by SIGTERM (systemd) or Ctrl-C in the middle of multipart uploads aborts them
before it exits, rather than leaving them (and their parts' storage) for `reconcile`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import MiB, Offload, assert_nothing_lost
from tests.support.s3 import s3_client

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_mid_multipart_leaves_no_incomplete_upload(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    signum: int,
) -> None:
    for n in range(3):
        synapse.add_local(f"BigMultipartMedi{n}", os.urandom(60 * MiB), 50)  # twelve 5 MiB parts each
    offload("--config", str(homeserver_yaml), "update", "30d")
    client = s3_client(moto.endpoint_url)
    command = [sys.executable, "-c", "import sys; from synapse_objstore.cli.main import cli; "
               "sys.exit(cli(prog_name='objstore-offload'))", "--no-progress", "--config", str(homeserver_yaml),
               "upload", "--jobs", "3"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before a multipart upload began"
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, (process.returncode, err.decode()[-3000:])
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert left == [], f"{len(left)} incomplete multipart uploads left behind: {err.decode()[-2000:]}"
    assert_nothing_lost(synapse, moto, bucket, workdir / "cache.db")
