"""A media type in Synapse's database is what the uploading client sent: one too long for a
request header (S3 takes 8 KiB of headers in a PUT; Ceph RGW answers 400 past about 16 KiB)
must not make the media impossible to offload, run after run. It is left out, as one that would
not make an HTTP header is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.ceph_rgw import CephRGW
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload
from tests.support.s3 import SSE_KEY, rgw_client

pytestmark = [pytest.mark.ceph, pytest.mark.parametrize("engine", ["sqlite"])]

ORIGINAL = "local_content/Ab/Cd/EfGhIjKlMnOp"  # the dataset's first original
LONG_TYPE = "image/png; name=" + "a" * 20000


def test_a_media_type_too_long_for_a_header_does_not_block_the_offload(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, rgw: CephRGW, rgw_bucket: str, tmp_path: Path,
) -> None:
    cursor = synapse.conn.cursor()
    cursor.execute("UPDATE local_media_repository SET media_type = ? WHERE media_id = ?",
                   (LONG_TYPE, "AbCdEfGhIjKlMnOp"))
    synapse.conn.commit()
    block: dict[str, Any] = {
        "bucket": rgw_bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
        "secret_access_key": rgw.secret_key, "prefix": "media/", "sse_customer_key": SSE_KEY}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "config": block}],
    }))
    config = ["--config", str(path)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--delete").stdout)
    assert summary["failed"] == [], summary["failed"]
    assert not (synapse.media_store / ORIGINAL).exists()
    head = rgw_client(rgw).head_object(Bucket=rgw_bucket, Key="media/" + ORIGINAL, SSECustomerAlgorithm="AES256",
                                       SSECustomerKey=SSE_KEY)
    assert len(head["ContentType"]) < 1000
