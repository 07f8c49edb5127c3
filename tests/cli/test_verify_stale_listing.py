"""verify judges most files by one listing of the store made when it starts: an object deleted
(or replaced) after that listing is still counted verified. Before the listing, a HEAD of each
file at its turn narrowed that window to the file's own check. Not fixed (a HEAD per file is
what the listing saves; a second listing at the end would close it): strict xfail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli import audit
from tests.support.offload import Dataset, Offload
from tests.support.s3 import s3_client


@pytest.mark.xfail(strict=True, reason="verify trusts a listing of the store made when the run started")
@pytest.mark.parametrize("engine", ["sqlite"])
def test_an_object_deleted_after_the_listing_is_not_verified(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    gone = next(p for p in dataset.old if "thumbnail" in p)
    original = audit.ListingIndex.of

    async def listed_then_deleted(store: Any) -> Any:
        index = await original(store)
        s3_client(moto.endpoint_url).delete_object(Bucket=bucket, Key=f"media/{gone}")
        return index

    monkeypatch.setattr(audit.ListingIndex, "of", listed_then_deleted)
    report = json.loads(offload("--json", *config, "verify", expect=None).stdout)
    assert gone in [f["path"] for f in report["failed"]], report
