"""verify on a store whose ETags are not the MD5 of the content (an S3 bucket encrypting with
SSE-KMS by default): an ETag other than the recorded MD5 does not prove a corrupted copy, as
upload's checks know (verification.py); the object is read back, and only other content is
called corrupted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url, seed=15) as server:
        yield server


def test_verify_reads_back_rather_than_calling_an_opaque_etag_corrupted(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, proxy: FaultProxy, engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    (workdir / "kms.yaml").write_text(yaml.safe_dump(store_block(moto, bucket, endpoint_url=proxy.endpoint_url)))
    proxy.set(opaque_etags=True)

    report = json.loads(offload("--json", *config, "verify", "--store-config", "kms.yaml", expect=None).stdout)
    assert report["failed"] == [] and report["files_verified"] == len(dataset.old)

    replaced = next(p for p in dataset.old if len(synapse.files[p]) > 1 and "thumbnail" in p)
    other = bytes(b ^ 0xFF for b in synapse.files[replaced])
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"media/{replaced}", Body=other)
    report = json.loads(offload("--json", *config, "verify", "--store-config", "kms.yaml", expect=1).stdout)
    assert [f["path"] for f in report["failed"]] == [replaced]
    assert "corrupted copy" in report["failed"][0]["error"]
