"""verify judges most files by one listing of the store made when it starts: an object deleted
or replaced after that listing is not counted verified, since a second listing at the end of the
run must show each file found good still there, as it was found; one it lacks or shows changed
is asked about with a HEAD, and reported missing (or, replaced by other bytes, corrupted)."""

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


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize(("change", "error"), [("deleted", "missing from"), ("replaced", "corrupted copy")])
def test_an_object_changed_after_the_listing_is_not_verified(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    monkeypatch: pytest.MonkeyPatch, change: str, error: str, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    gone = next(p for p in dataset.old if len(synapse.files[p]) > 1 and "thumbnail" in p)
    original = audit.ListingIndex.of

    async def listed_then_changed(store: Any) -> Any:
        index = await original(store)
        if change == "deleted":
            s3_client(moto.endpoint_url).delete_object(Bucket=bucket, Key=f"media/{gone}")
        else:
            other = bytes(b ^ 0xFF for b in synapse.files[gone])
            s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"media/{gone}", Body=other)
        return index

    monkeypatch.setattr(audit.ListingIndex, "of", listed_then_changed)
    report = json.loads(offload("--json", *config, "verify", expect=1).stdout)
    assert [f["path"] for f in report["failed"]] == [gone], report
    assert error in report["failed"][0]["error"]
    assert report["files_verified"] == len(dataset.old) - 1, report
    assert report["files_missing"] == (change == "deleted"), report
