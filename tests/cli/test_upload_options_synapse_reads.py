"""upload --delete with --config refuses s3_media_upload options that would write objects
Synapse cannot read with its provider block: an SSE-C key it does not have, an archive storage
class. Before, only BUCKET and --prefix were compared: the media went up, verified (by ETag, no
read), and the local copies were deleted, exit 0, while every read of Synapse failed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload
from tests.support.s3 import bucket_objects

KEY = "k" * 32
OTHER_KEY = "o" * 32


def updated_with_block(offload: Offload, homeserver_yaml: Path, block: dict[str, str]) -> list[str]:
    """--config of homeserver.yaml whose provider block has `block` added, its media updated."""
    settings = yaml.safe_load(homeserver_yaml.read_text())
    settings["media_storage_providers"][1]["config"].update(block)
    homeserver_yaml.write_text(yaml.safe_dump(settings))
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    return config


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize(("block", "flags"), [
    ({}, ["--sse-customer-key", OTHER_KEY]),
    ({"sse_customer_key": KEY}, ["--sse-customer-key", OTHER_KEY]),
    ({}, ["--storage-class", "GLACIER"]),
    ({}, ["--storage-class", "DEEP_ARCHIVE"]),
])
def test_upload_delete_refuses_options_synapse_cannot_read_through(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    block: dict[str, str], flags: list[str],
) -> None:
    config = updated_with_block(offload, homeserver_yaml, block)
    before = synapse.local_files()
    result = offload(*config, "upload", "--delete", *flags, expect=2)
    assert "refusing to upload --delete" in result.output and "Synapse" in result.output
    assert OTHER_KEY not in result.output
    assert synapse.local_files() == before
    assert not [key for key in bucket_objects(moto, bucket) if "local_content" in key or "remote_content" in key]


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize(("block", "flags"), [
    ({"sse_customer_key": KEY}, ["--sse-customer-key", KEY]),
    ({}, ["--storage-class", "STANDARD_IA"]),
])
def test_upload_delete_takes_options_synapse_reads_through(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    block: dict[str, str], flags: list[str],
) -> None:
    config = updated_with_block(offload, homeserver_yaml, block)
    offload(*config, "upload", "--delete", *flags)
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)
