"""A media that came back cut short is never uploaded over the store's intact copy, on a store
that ignores If-None-Match too (it overwrites what is there: S3 before 2024, MinIO, Garage, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from tests.support.offload import Dataset, Offload
from tests.support.s3 import bucket_objects

ORIGINAL = "local_content/Ab/Cd/EfGhIjKlMnOp"  # 40,000 bytes: one PUT, below the multipart threshold


@pytest.mark.parametrize("engine", ["sqlite"])
def test_cut_short_come_back_is_not_put_over_the_store_copy_when_the_store_ignores_if_none_match(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    intact = synapse.files[ORIGINAL]
    assert not (synapse.media_store / ORIGINAL).exists()
    # Synapse downloads the original again and writes it straight into place: cut short
    (synapse.media_store / ORIGINAL).parent.mkdir(parents=True, exist_ok=True)
    (synapse.media_store / ORIGINAL).write_bytes(intact[:20_000])

    with FaultProxy(moto.endpoint_url, Faults(ignore_conditional=True)) as proxy:
        settings = yaml.safe_load(homeserver_yaml.read_text())
        settings["media_storage_providers"][1]["config"]["endpoint_url"] = proxy.endpoint_url
        homeserver_yaml.write_text(yaml.safe_dump(settings))
        offload(*config, "check-deleted", "--full")
        result = offload("--json", *config, "upload", "--delete", expect=None)

    assert bucket_objects(moto, bucket)[f"media/{ORIGINAL}"] == intact, "the intact copy was overwritten"
    assert (synapse.media_store / ORIGINAL).read_bytes() == intact[:20_000]
    summary = json.loads(result.stdout)
    assert result.exit_code == 1 and ORIGINAL in {f["path"] for f in summary["failed"]}
