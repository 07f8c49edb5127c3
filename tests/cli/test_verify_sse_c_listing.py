"""verify on an SSE-C store proves that a configured key reads each object: the listing shows
that an object exists and its size, but needs no key, so a file whose object no configured key
reads (a key dropped from the config too early, objects written by another tool under another
key) is not verified by the listing alone, even where no sha256 of the file is recorded (media
offloaded before cache.db recorded sha256s)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from servers.ceph_rgw import CephRGW
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload
from tests.support.s3 import OTHER_KEY, SSE_KEY

pytestmark = [pytest.mark.ceph, pytest.mark.parametrize("engine", ["sqlite"])]


def test_verify_with_a_key_that_reads_nothing_verifies_nothing(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, rgw: CephRGW, rgw_bucket: str,
    workdir: Path, tmp_path: Path, engine: str,
) -> None:
    block = {"bucket": rgw_bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
             "secret_access_key": rgw.secret_key, "prefix": "media/"}
    homeserver = tmp_path / "homeserver.yaml"
    homeserver.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider",
                                     "config": {**block, "sse_customer_key": SSE_KEY}}],
    }))
    (workdir / "wrong.yaml").write_text(yaml.safe_dump({**block, "sse_customer_key": OTHER_KEY}))
    config = ["--config", str(homeserver)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    with sqlite3.connect(workdir / "cache.db") as conn:  # as cache.db has media synced by earlier versions
        conn.execute("UPDATE objstore_files SET sha256 = NULL")
        conn.execute("UPDATE objstore_media_info SET sha256 = NULL")

    wrong = offload("--json", "verify", "--store-config", "wrong.yaml", expect=None)
    report = json.loads(wrong.stdout)
    assert report["files_verified"] == 0, report
    assert wrong.exit_code != 0
    assert OTHER_KEY not in wrong.output and SSE_KEY not in wrong.output
