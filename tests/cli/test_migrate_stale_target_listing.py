"""migrate decides from one listing of the target made when it starts: an object of the target
replaced after that listing (another tool, another run, an admin's rclone) is counted verified
by the listing's ETag, though the target now holds other bytes. Before the listing, a HEAD just
before each decision narrowed that window to one object's copy. Not fixed (a HEAD per object is
what the listing saves; a second listing at the end would close it): strict xfail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli import migrate
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client


@pytest.mark.xfail(strict=True, reason="migrate trusts a listing of the target made when the run started")
@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_target_object_replaced_after_the_listing_is_not_counted_verified(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    target = f"{bucket}-target"
    client = s3_client(moto.endpoint_url)
    client.create_bucket(Bucket=target)
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, target)))
    offload(*config, "migrate", "--to", "target.yaml")

    replaced = next(p for p in dataset.old if len(synapse.files[p]) > 1 and "thumbnail" in p)
    original = migrate.ListingIndex.of

    async def listed_then_replaced(store: Any) -> Any:
        index = await original(store)
        other = bytes(b ^ 0xFF for b in synapse.files[replaced])
        client.put_object(Bucket=target, Key=f"media/{replaced}", Body=other)
        return index

    monkeypatch.setattr(migrate.ListingIndex, "of", listed_then_replaced)
    report = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml", expect=None).stdout)
    held = client.get_object(Bucket=target, Key=f"media/{replaced}")["Body"].read()
    assert held == synapse.files[replaced] or replaced in [f["path"] for f in report["failed"]], report
