"""restore, verify and migrate read one flat listing of the store rather than asking about each
file: no HEAD per file (and no LIST per media) where the listing tells what they need. What
the listing proves is checked as a HEAD's answer was: an object that holds other content than
the file offloaded is caught by its ETag. verify and migrate list once more at the end, to
confirm that what they count is still there: one more LIST per 1,000 objects, no HEAD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.moto_log import log_offset, requests_to
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


def test_verify_and_restore_ask_about_no_file_the_listing_shows(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")

    offset = log_offset(moto)
    verified = json.loads(offload("--json", *config, "verify").stdout)
    assert verified["files_verified"] == len(dataset.old) and verified["files_failed"] == 0
    counts = requests_to(moto, bucket, since=offset)
    # the 11 MiB original went up in parts: its ETag is no MD5, its sha256 metadata is asked for
    assert counts["HEAD object"] <= 1 + 2, counts  # + the owner marker, + the preflight
    assert counts["GET bucket"] == 2, counts  # the listing (one page), and the second one at the end

    offset = log_offset(moto)
    restored = json.loads(offload("--json", *config, "restore").stdout)
    assert restored["files_restored"] == len(dataset.old) and restored["files_failed"] == 0
    assert all((synapse.media_store / p).read_bytes() == synapse.files[p] for p in dataset.old)
    counts = requests_to(moto, bucket, since=offset)
    assert counts["GET object"] == len(dataset.old), counts
    assert counts["HEAD object"] <= 1, counts
    assert counts["GET bucket"] <= 2, counts  # the listing (one page), and the preflight's


def test_verify_catches_an_object_replaced_by_other_bytes_of_the_same_size(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    replaced = next(p for p in dataset.old if len(synapse.files[p]) > 1 and "thumbnail" in p)
    other = bytes(b ^ 0xFF for b in synapse.files[replaced])
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"media/{replaced}", Body=other)

    report = json.loads(offload("--json", *config, "verify", expect=1).stdout)
    assert [f["path"] for f in report["failed"]] == [replaced]
    assert "corrupted copy" in report["failed"][0]["error"]
    assert report["files_verified"] == len(dataset.old) - 1


def test_migrate_asks_neither_store_about_each_object(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, engine: str,
) -> None:
    """The target is listed, the source's metadata comes with its GET, and each copy is checked
    by the ETag of the upload's reply; its Content-Type and sha256 are kept."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    target = f"{bucket}-target"
    client = s3_client(moto.endpoint_url)
    client.create_bucket(Bucket=target)
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, target)))

    offset = log_offset(moto)
    copied = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml").stdout)
    assert copied["files_copied"] == copied["files_verified"] == len(dataset.old) and copied["files_failed"] == 0
    source, copies = requests_to(moto, bucket, since=offset), requests_to(moto, target, since=offset)
    assert source["HEAD object"] <= 2, source  # the owner marker, the preflight
    assert copies["HEAD object"] <= 3, copies  # the owner marker, the preflight, the multipart original
    # the source is listed once, to copy it; the target twice (one page each), at the start and at the end
    assert (source["GET bucket"], copies["GET bucket"]) == (1, 2), (source, copies)
    for path in dataset.old:
        was = client.head_object(Bucket=bucket, Key=f"media/{path}")
        now = client.head_object(Bucket=target, Key=f"media/{path}")
        assert (now["ContentType"], now["Metadata"]) == (was["ContentType"], was["Metadata"]), path
