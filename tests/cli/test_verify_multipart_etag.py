"""verify tells a multipart object's content by its ETag: upload records the ETags each file
has as a multipart object (cache.db's objstore_files.multipart_etags), and a listed multipart
ETag that is none of them has the object read back. The sha256 metadata alone vouched for it
before: a copy of other content that carries the same metadata (another tool's copy with its
metadata, a replaced object) was called verified."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, MiB, Offload
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])
PREFIX = "media/"
LARGE = "local_content/Zy/Xw/VuTsRqPoNmLk"  # 11 MiB: 3 parts of 5 MiB (the dataset's multipart original)


def test_a_multipart_object_of_other_content_with_the_same_metadata_is_a_corrupted_copy(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    with sqlite3.connect(workdir / "cache.db") as conn:
        [(etags,)] = conn.execute("SELECT multipart_etags FROM objstore_files WHERE path = ?", (LARGE,)).fetchall()
    s3 = s3_client(moto.endpoint_url)
    head = s3.head_object(Bucket=bucket, Key=PREFIX + LARGE)
    assert head["ETag"].strip('"') in etags.split()
    assert json.loads(offload("--json", *config, "verify").stdout)["files_failed"] == 0  # listing alone: verified

    other = os.urandom(len(synapse.files[LARGE]))  # same size, in parts of another size, same metadata
    s3.upload_fileobj(io.BytesIO(other), bucket, PREFIX + LARGE,
                      ExtraArgs={"Metadata": head["Metadata"], "ContentType": head["ContentType"]},
                      Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=6 * MiB))
    assert s3.head_object(Bucket=bucket, Key=PREFIX + LARGE)["Metadata"] == head["Metadata"]

    result = offload("--json", *config, "verify", expect=1)
    failed = {item["path"]: item["error"] for item in json.loads(result.stdout)["failed"]}
    assert list(failed) == [LARGE]
    assert "corrupted copy: the MD5 of the object's content" in failed[LARGE]
