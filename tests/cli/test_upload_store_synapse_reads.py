"""upload --delete refuses a BUCKET or --prefix that makes of --config's provider block another
store than the one Synapse reads its media from: a mistyped one would move the media where
Synapse never looks, and delete the local copies it serves them from (a hostile review's run
deleted 206 files into the wrong bucket). The same bucket and prefix through another endpoint
(a proxy) is the same store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.offload import Dataset, Offload
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


@pytest.mark.parametrize("wrong", [["--prefix", "other/"], ["BUCKET"]])
def test_upload_delete_to_another_store_than_synapse_reads_is_refused(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    wrong: list[str],
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    other = f"{bucket}-typo"
    s3_client(moto.endpoint_url).create_bucket(Bucket=other)
    args = [str(synapse.media_store), other] if wrong == ["BUCKET"] else wrong
    result = offload(*config, "upload", "--delete", *args, expect=2)
    assert "refusing to upload --delete" in " ".join(result.output.split())
    assert synapse.local_files() == set(synapse.files)
    for name in (bucket, other):
        assert "Contents" not in s3_client(moto.endpoint_url).list_objects_v2(Bucket=name)


def test_the_same_store_through_another_endpoint_is_not_refused(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    with FaultProxy(moto.endpoint_url) as proxy:
        summary = json.loads(offload("--json", *config, "upload", "--delete", "--endpoint-url",
                                     proxy.endpoint_url).stdout)
    assert summary["files_deleted"] == len(dataset.old)
