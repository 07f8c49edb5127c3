"""upload and restore against a store that answers about its bucket but never finishes a request
for an object (storage nodes down behind a gateway that still answers, a proxy holding bodies):
the fault proxy in front of moto holds every PUT of a media unanswered, or every GET of one after
half its body. The silence check is answered, so it alone would let each request wait out its
read timeout once per retry, file after file; the run stops with exit code 2 once the store has
held all of its requests for STUCK_AFTER (3 s here, 10 minutes by default). Nothing is lost."""

from __future__ import annotations

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
from tests.support.offload import Dataset, Offload, store_block

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])
MEDIA_PATHS = "/(local|remote)_(content|thumbnails)/"  # objects of media; the bucket and owner marker answer
READ_TIMEOUT = 20  # s: without the watch, a run waits this long per request, and tries each again


@pytest.fixture
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 1.0)
    monkeypatch.setattr(store_watch, "STUCK_AFTER", 3.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    monkeypatch.setattr(part_upload, "ABANDON_DEADLINE", 2.0)


@pytest.mark.parametrize("fault", ["silent", "stall"])
def test_a_store_holding_every_upload_stops_the_run(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, quick_watch: None, engine: str, fault: str,
) -> None:
    """`silent`: no PUT of a media is answered; `stall`: a multipart upload's start is answered
    with half its reply (single PUTs have no body to stall, and go through)."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    with FaultProxy(moto.endpoint_url) as proxy:
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url, read_timeout=READ_TIMEOUT)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        proxy.set(match=MEDIA_PATHS, **{fault: True})
        started = time.monotonic()
        result = offload(*config, "--retries", "1", "upload", "--delete", "--store-config", "proxied.yaml", expect=2)
        assert time.monotonic() - started < READ_TIMEOUT, result.output
        message = " ".join(result.output.split())
        assert "answers about its bucket, but has held all of this run's" in message, message
        assert "Traceback" not in message
        assert all((synapse.media_store / path).read_bytes() == synapse.files[path]
                   for path in dataset.old if "ZyXw" in path or fault == "silent")  # held: kept

        proxy.set(silent=False, stall=False)
        offload(*config, "upload", "--delete", "--store-config", "proxied.yaml")
    assert not any((synapse.media_store / path).exists() for path in dataset.old)


def test_a_store_stalling_every_body_stops_a_restore(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, quick_watch: None, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    with FaultProxy(moto.endpoint_url) as proxy:
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url, read_timeout=READ_TIMEOUT)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        proxy.set(match=MEDIA_PATHS, stall=True)  # headers and half of each body, then nothing
        started = time.monotonic()
        result = offload(*config, "--retries", "1", "restore", "--store-config", "proxied.yaml", expect=2)
        assert time.monotonic() - started < READ_TIMEOUT, result.output
        assert "has held all of this run's" in " ".join(result.output.split())
        assert proxy.stats()["stalled"] >= 1
        held = [path for path in dataset.old if synapse.files[path]]  # an empty body has nothing to stall
        assert not any((synapse.media_store / path).exists() for path in held)  # nothing half-written

        proxy.set(stall=False)
        offload(*config, "restore", "--store-config", "proxied.yaml")
    assert all((synapse.media_store / path).read_bytes() == synapse.files[path] for path in dataset.old)
