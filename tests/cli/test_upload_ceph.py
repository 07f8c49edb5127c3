"""upload --delete to Ceph's RADOS Gateway without SSE-C, multipart included. RGW (Debian's
Ceph 16) answers every CompleteMultipartUpload with an empty ETag (`<ETag></ETag>`): that names
no content, so the copy is checked on the store (its HEAD's multipart ETag) and offloaded. Taken
for a checksum, it failed every multipart media ("acknowledged the upload with ETag , but
reports ...-3") and kept its local copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from servers.ceph_rgw import CephRGW
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, MiB, Offload
from tests.support.s3 import rgw_client

pytestmark = [pytest.mark.ceph, pytest.mark.parametrize("engine", ["sqlite"])]


def test_multipart_uploads_to_rgw_are_verified_and_offloaded(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, rgw: CephRGW, rgw_bucket: str, tmp_path: Path,
) -> None:
    block = {"bucket": rgw_bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
             "secret_access_key": rgw.secret_key, "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "config": block}],
    }))
    offload("--config", str(path), "update", "30d")
    summary = json.loads(offload("--json", "--config", str(path), "upload", "--delete").stdout)
    assert summary["files_failed"] == 0, summary["failed"]
    assert summary["files_deleted"] == len(dataset.old)
    etags = {o["Key"]: o["ETag"] for o in rgw_client(rgw).list_objects_v2(Bucket=rgw_bucket)["Contents"]}
    assert any("-" in etag for etag in etags.values()), etags  # a multipart object among them
    assert not (synapse.local_files() & set(dataset.old))
