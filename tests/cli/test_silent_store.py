"""verify, restore and migrate against a store that goes silent mid-run (the fault proxy in
front of moto reads every request after the first few and answers none): each run stops with
exit code 2, naming the silence, once the store has been quiet for QUIET_BEFORE_CHECK and the
check then asked got no answer (2 s each here; a minute and 30 s by default), instead of each
request waiting out its read timeout once per retry (9 minutes a request, days for a large
media store). Nothing is lost: a rerun once the store answers again finishes the job."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore import health
from synapse_objstore.backends import part_upload
from synapse_objstore.cli import store_watch
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.offload import Dataset, MiB, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


@pytest.mark.parametrize("command", ["verify", "restore", "migrate"])
def test_a_store_going_silent_stops_the_run(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str, command: str,
) -> None:
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 2.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    target = f"{bucket}-target"
    s3_client(moto.endpoint_url).create_bucket(Bucket=target)
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, target)))
    argv = {"verify": ["verify"], "restore": ["restore", str(synapse.media_store)],
            "migrate": ["migrate", "--to", "target.yaml"]}[command]

    with FaultProxy(moto.endpoint_url) as proxy:
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        run = ["--json", *config, "--retries", "0", *argv[:1], "--store-config", "proxied.yaml", *argv[1:]]
        if command == "verify":  # it changes nothing: count its requests, and silence its last (the second listing)
            offload(*run)
            proxy.schedule(proxy.stats()["requests"] * 2 - 1, silent=True)
        else:  # the preflight and the listing answered, then silence amid the copies (a GET each)
            proxy.schedule(6, silent=True)
        started = time.monotonic()
        result = offload(*run, expect=2)
        assert time.monotonic() - started < 20
        message = " ".join(result.output.split())
        assert f"at {proxy.endpoint_url}: the store did not answer in time" in message, message
        assert "answered none of this run's requests for" in message and "Traceback" not in message
        assert proxy.stats()["silenced"] >= 1

        proxy.set(silent=False)
        again = json.loads(offload(*run).stdout)
    assert again["files_failed"] == 0
    if command == "restore":
        assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in dataset.old)
    else:
        assert again["files_verified"] == len(dataset.old)


def test_a_store_going_silent_amid_a_multipart_upload_stops_the_run_without_waiting_for_the_abort(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    """The upload of a large original is abandoned when the run stops; its abort, unanswered
    too, is given ABANDON_DEADLINE (here 2 s, 30 s by default), not the read timeout once per
    retry (9 tries here: 45 s; 9 minutes by default). The local file stays; a rerun uploads it."""
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 2.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    monkeypatch.setattr(part_upload, "ABANDON_DEADLINE", 2.0)
    config = ["--config", str(homeserver_yaml)]
    content = os.urandom(16 * MiB + 5)
    (path,) = synapse.add_local("BigMediaAbCdEfGh", content, 90)
    offload(*config, "update", "30d")
    with FaultProxy(moto.endpoint_url) as proxy:
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url, read_timeout=5)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        proxy.schedule(9, silent=True)  # the preflight, the owner marker and the upload's start answered
        started = time.monotonic()
        result = offload(*config, "upload", "--delete", "--store-config", "proxied.yaml", expect=2)
        assert time.monotonic() - started < 20, result.output
        assert "answered none of this run's requests for" in " ".join(result.output.split())
        assert (synapse.media_store / path).read_bytes() == content
        proxy.set(silent=False)
        offload(*config, "upload", "--delete", "--store-config", "proxied.yaml")
    assert not (synapse.media_store / path).exists()
    assert s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key=f"media/{path}")["Body"].read() == content

