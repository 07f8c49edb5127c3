"""upload against a store that is slow, not silent: the fault proxy in front of moto takes each
request body at 1 MiB/s, and the store config allows one connection (`max_pool_connections: 1`),
so each upload of a 4.5 MiB file holds that connection for about 4.5 s, during which the store
answers none of the run's requests. The silence check (after QUIET_BEFORE_CHECK, 1 s here) asks
the store through a client of its own, which the store answers at once, and the run goes on to
offload everything. Through the run's own client it waited behind the uploads for the one
connection, got no answer within the check's timeout (2 s here), and stopped the run (exit 2)
over a store that was only slow."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore import health
from synapse_objstore.cli import store_watch
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from tests.support.offload import MiB, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


def test_a_slow_store_with_a_full_pool_is_not_taken_for_silent(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, moto: MotoServer, bucket: str, workdir: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    monkeypatch.setattr(store_watch, "QUIET_BEFORE_CHECK", 1.0)
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 2.0)
    config = ["--config", str(homeserver_yaml)]
    contents = {media_id: os.urandom(9 * MiB // 2) for media_id in ("SlowMediaAbCdEf1", "SlowMediaAbCdEf2",
                                                                    "SlowMediaAbCdEf3")}
    paths = {media_id: synapse.add_local(media_id, content, 90)[0] for media_id, content in contents.items()}
    offload(*config, "update", "30d")
    with FaultProxy(moto.endpoint_url, Faults(throttle=MiB)) as proxy:
        proxied = store_block(moto, bucket, endpoint_url=proxy.endpoint_url, max_pool_connections=1)
        (workdir / "proxied.yaml").write_text(yaml.safe_dump(proxied))
        started = time.monotonic()
        result = offload(*config, "upload", "--delete", "--store-config", "proxied.yaml", expect=None)
        took = time.monotonic() - started
        throttled = proxy.stats().get("throttled", 0)
    assert result.exit_code == 0, f"exit {result.exit_code} after {took:.1f} s\n{result.output}"
    assert took > 3 * 4.5 and throttled >= 3  # the uploads were that slow: each held the pool past the check
    client = s3_client(moto.endpoint_url)
    for media_id, content in contents.items():
        assert not (synapse.media_store / paths[media_id]).exists()
        assert client.get_object(Bucket=bucket, Key=f"media/{paths[media_id]}")["Body"].read() == content
