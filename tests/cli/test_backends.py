"""Any registered backend as the target; migrate between backends with the same verification."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.durations import parse_duration
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import bucket_objects, s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


def test_fsspec_directory_target_then_migrate_to_s3(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, tmp_path: Path, engine: str,
) -> None:
    archive = tmp_path / "archive"
    (workdir / "disk.yaml").write_text(yaml.safe_dump(
        {"module": "synapse_objstore.ObjectStorageProvider", "config": {"backend": "fsspec", "url": f"file://{archive}"}}))
    (workdir / "s3.yaml").write_text(yaml.safe_dump({"backend": "s3", **store_block(moto, bucket, prefix="moved/")}))
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--store-config", "disk.yaml", "--delete").stdout)
    assert summary["files_deleted"] == len(dataset.old) and summary["files_failed"] == 0
    assert {p: (archive / p).read_bytes() for p in dataset.old} == {p: synapse.files[p] for p in dataset.old}

    rotten = "local_thumbnails/Ab/Cd/EfGhIjKlMnOp/32-32-image-png-crop"
    moved = json.loads(offload("--json", "migrate", "--store-config", "disk.yaml", "--to", "s3.yaml").stdout)
    assert moved["files_copied"] == moved["files_verified"] == len(dataset.old)
    assert bucket_objects(moto, bucket) == {f"moved/{p}": synapse.files[p] for p in dataset.old}

    # resumable: a second migrate copies only the target object that differs (same size, other bytes)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"moved/{rotten}",
                                            Body=b"x" * len(synapse.files[rotten]))
    again = json.loads(offload("--json", "migrate", "--store-config", "disk.yaml", "--to", "s3.yaml").stdout)
    assert again["files_copied"] == 1 and again["files_verified"] == len(dataset.old)
    assert bucket_objects(moto, bucket)[f"moved/{rotten}"] == synapse.files[rotten]

    # the offloaded media are found in the new store, and come back from it
    verified = json.loads(offload("--json", "verify", "--store-config", "s3.yaml").stdout)
    assert verified["files_verified"] == len(dataset.old)
    restored = json.loads(offload("--json", *config, "restore", "--store-config", "s3.yaml",
                                  "--media", "matrix.org/remoteMediaId1").stdout)
    remote_one = [p for p in dataset.old if "RemoteOne123" in p]
    assert restored["files_restored"] == len(remote_one)
    assert {p: (synapse.media_store / p).read_bytes() for p in remote_one} == {p: synapse.files[p] for p in remote_one}


def test_durations_mean_what_they_meant(offload: Offload, engine: str) -> None:
    assert parse_duration("2m") == datetime.timedelta(days=60)
    assert parse_duration("1y") == datetime.timedelta(days=365)
    assert parse_duration("90s") == datetime.timedelta(seconds=90)
    assert parse_duration("36h") == datetime.timedelta(hours=36)
    result = offload("update-db", "3w", expect=2)
    assert "must end in 's', 'h', 'd', 'm' or 'y'" in result.output
