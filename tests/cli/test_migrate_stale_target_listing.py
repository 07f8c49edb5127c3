"""migrate decides from one listing of the target made when it starts: an object of the target
replaced (or deleted) after that listing (another tool, another run, an admin's rclone) is not
counted migrated on that listing's word. A second listing at the end of the run must show every
copy found good still there, as it was found; one that listing shows changed or lacks is looked
at with a HEAD, copied again, and checked: the run ends with the source's bytes in the target."""

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


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_target_object_changed_after_the_listing_is_copied_again(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, change: str, engine: str,
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

    async def listed_then_changed(store: Any) -> Any:
        index = await original(store)
        if change == "replaced":
            other = bytes(b ^ 0xFF for b in synapse.files[replaced])
            client.put_object(Bucket=target, Key=f"media/{replaced}", Body=other)
        else:
            client.delete_object(Bucket=target, Key=f"media/{replaced}")
        return index

    monkeypatch.setattr(migrate.ListingIndex, "of", listed_then_changed)
    report = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml").stdout)
    assert client.get_object(Bucket=target, Key=f"media/{replaced}")["Body"].read() == synapse.files[replaced]
    assert report["failed"] == [], report
    assert (report["files_copied"], report["files_verified"]) == (1, len(dataset.old)), report
