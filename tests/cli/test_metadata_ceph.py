"""sha256 metadata under SSE-C on Ceph's RADOS Gateway, which enforces the key and checks what
it receives: the ETag of an SSE-C object is no MD5, so an upload is verified by the sha256
stored beside it, without reading the object back; a body damaged on its way is refused by
the store, so that metadata never vouches for other bytes; and `verify` catches an object
whose sha256 is not the one Synapse recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.ceph_rgw import CephRGW
from servers.synapse_media import SynapseMedia
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from tests.support.offload import Dataset, Offload
from tests.support.s3 import SSE_KEY, rgw_client

pytestmark = [pytest.mark.ceph, pytest.mark.parametrize("engine", ["sqlite"])]
ORIGINAL = "remote_content/matrix.org/Fs/Id/RemoteOne123"


def homeserver(synapse: SynapseMedia, tmp_path: Path, endpoint_url: str, rgw: CephRGW, bucket: str) -> list[str]:
    """--config of a homeserver.yaml whose provider writes to the RGW bucket with SSE-C, at `endpoint_url`."""
    block: dict[str, Any] = {
        "bucket": bucket, "endpoint_url": endpoint_url, "access_key_id": rgw.access_key,
        "secret_access_key": rgw.secret_key, "prefix": "media/", "multipart_threshold": "5MiB",
        "multipart_chunksize": "5MiB", "sse_customer_key": SSE_KEY}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "config": block}],
    }))
    return ["--config", str(path)]


def record_sha256(synapse: SynapseMedia, dataset: Dataset) -> None:
    """Synapse 1.128+'s sha256 of each local and remote original."""
    cursor = synapse.conn.cursor()
    for path in dataset.old:
        digest = hashlib.sha256(synapse.files[path]).hexdigest()
        if path.startswith("local_content/"):
            cursor.execute("UPDATE local_media_repository SET sha256 = ? WHERE media_id = ?",
                           (digest, "".join(path.split("/")[1:])))
        elif path.startswith("remote_content/"):
            _, origin, *rest = path.split("/")
            cursor.execute("UPDATE remote_media_cache SET sha256 = ? WHERE media_origin = ? AND filesystem_id = ?",
                           (digest, origin, "".join(rest)))
    synapse.conn.commit()


def test_sse_c_uploads_are_verified_by_sha256_without_a_read_back_and_verify_catches_a_wrong_one(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, rgw: CephRGW, rgw_bucket: str, tmp_path: Path,
) -> None:
    record_sha256(synapse, dataset)
    with FaultProxy(rgw.endpoint_url) as proxy:
        config = homeserver(synapse, tmp_path, proxy.endpoint_url, rgw, rgw_bucket)
        offload(*config, "update", "30d")
        summary = json.loads(offload("--json", *config, "upload", "--delete").stdout)
        stats = proxy.stats()
    assert summary["files_deleted"] == len(dataset.old) and summary["files_failed"] == 0, summary
    # The GETs read the owner marker (owner_marker.py: read, then read back once written);
    # reading each copy back took 9 more (one per non-empty file).
    print(f"requests of the upload: {stats}")
    assert stats.get("requests GET", 0) <= 2, stats

    # the same bytes, under the same key, with a sha256 that is not Synapse's
    s3 = rgw_client(rgw)
    body = synapse.files[ORIGINAL]
    s3.put_object(Bucket=rgw_bucket, Key=f"media/{ORIGINAL}", Body=body, Metadata={"sha256": "0" * 64},
                  SSECustomerAlgorithm="AES256", SSECustomerKey=SSE_KEY)
    config = homeserver(synapse, tmp_path, rgw.endpoint_url, rgw, rgw_bucket)
    report = json.loads(offload("--json", *config, "verify", expect=1).stdout)
    assert [(f["path"], "corrupted copy" in f["error"]) for f in report["failed"]] == [(ORIGINAL, True)]
    assert report["files_verified"] == len(dataset.old) - 1


def test_a_body_damaged_on_its_way_is_refused_by_the_store_so_its_sha256_vouches_for_nothing(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, rgw: CephRGW, rgw_bucket: str, tmp_path: Path,
) -> None:
    """Under SSE-C the sha256 metadata is what verifies an upload: it must never be stored
    beside other bytes than the file's. The store checks each PUT's and part's body (its
    Content-MD5; over plain HTTP also the signature's payload hash), so a flipped byte fails
    the upload and nothing is deleted."""
    with FaultProxy(rgw.endpoint_url, Faults(flip_byte=True)) as proxy:
        config = homeserver(synapse, tmp_path, proxy.endpoint_url, rgw, rgw_bucket)
        offload(*config, "update", "30d")
        result = offload("--json", *config, "upload", "--delete", expect=1)
        flipped = proxy.stats().get("flipped", 0)
    summary = json.loads(result.stdout)
    damaged = {path for path in dataset.old if synapse.files[path]}  # the empty file has no byte to flip
    assert flipped >= len(damaged)
    assert summary["files_failed"] == len(damaged) and summary["files_deleted"] == len(dataset.old) - len(damaged)
    assert synapse.local_files() >= damaged
