"""objstore-offload with SSE-C against Ceph's RADOS Gateway, which (unlike moto) enforces the key.

The offload must verify what it wrote with the key (an SSE-C ETag is not the content's MD5),
delete local files only then, and the objects must be unreadable without the key. A wrong key
must fail verification and restores loudly, and never appear in the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from servers.ceph_rgw import CephRGW
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload
from tests.support.s3 import OTHER_KEY, SSE_KEY, rgw_client

pytestmark = [pytest.mark.ceph, pytest.mark.parametrize("engine", ["sqlite"])]
MULTIPART = "local_content/Zy/Xw/VuTsRqPoNmLk"  # the dataset's 11 MiB original: three 5 MiB parts


def rgw_block(rgw: CephRGW, bucket: str, **extra: Any) -> dict[str, Any]:
    """A provider config block for the RGW bucket, without an SSE-C key unless given."""
    return {"bucket": bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
            "secret_access_key": rgw.secret_key, "prefix": "media/", "multipart_threshold": "5MiB",
            "multipart_chunksize": "5MiB", **extra}


def test_offload_with_sse_c_verifies_with_the_key_and_the_key_is_required_to_read(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, rgw: CephRGW, rgw_bucket: str,
    workdir: Path, tmp_path: Path, engine: str,
) -> None:
    homeserver = tmp_path / "homeserver.yaml"
    homeserver.write_text(yaml.safe_dump({
        "server_name": "test", "media_store_path": str(synapse.media_store), "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider",
                                     "config": rgw_block(rgw, rgw_bucket, sse_customer_key=SSE_KEY)}],
    }))
    (workdir / "right.yaml").write_text(yaml.safe_dump(rgw_block(rgw, rgw_bucket, sse_customer_key=SSE_KEY)))
    (workdir / "wrong.yaml").write_text(yaml.safe_dump(rgw_block(rgw, rgw_bucket, sse_customer_key=OTHER_KEY)))
    config = ["--config", str(homeserver)]
    offload(*config, "update", "30d")

    # s3_media_upload's --sse-customer-key on top of the homeserver's provider block (the key Synapse reads with:
    # another is refused, test_upload_options_synapse_reads.py)
    result = offload("--json", *config, "upload", "--sse-customer-key", SSE_KEY, "--delete")
    summary = json.loads(result.stdout)
    assert summary["files_deleted"] == len(dataset.old) and summary["files_failed"] == 0, result.output
    assert not any((synapse.media_store / path).exists() for path in dataset.old)
    assert all((synapse.media_store / path).exists() for path in dataset.recent)
    assert SSE_KEY not in result.output

    s3 = rgw_client(rgw)
    assert len(synapse.files[MULTIPART]) > 10 * 1024 * 1024
    small = next(path for path in dataset.old if path.startswith("remote_content/"))
    for path in (small, MULTIPART):
        with pytest.raises(botocore.exceptions.ClientError):
            s3.get_object(Bucket=rgw_bucket, Key=f"media/{path}")
        body = s3.get_object(Bucket=rgw_bucket, Key=f"media/{path}", SSECustomerAlgorithm="AES256",
                             SSECustomerKey=SSE_KEY)["Body"].read()
        assert body == synapse.files[path]

    verified = json.loads(offload("--json", "verify", "--store-config", "right.yaml").stdout)
    assert verified["files_verified"] == len(dataset.old) and verified["files_failed"] == 0

    # a wrong key: every check fails, loudly, with neither key in the output
    wrong = offload("--json", "verify", "--store-config", "wrong.yaml", expect=None)
    assert wrong.exit_code != 0
    assert json.loads(wrong.stdout)["files_verified"] == 0
    assert OTHER_KEY not in wrong.output and SSE_KEY not in wrong.output
    assert "is sse_customer_key the key these objects were written with?" in wrong.output  # not "Bad Request" alone

    failed = offload("--json", *config, "restore", "--store-config", "wrong.yaml", expect=None)
    assert failed.exit_code != 0 and json.loads(failed.stdout)["files_restored"] == 0
    assert not any((synapse.media_store / path).exists() for path in dataset.old)

    restored = json.loads(offload("--json", *config, "restore", "--store-config", "right.yaml").stdout)
    assert restored["files_restored"] == len(dataset.old)
    assert ({p: (synapse.media_store / p).read_bytes() for p in dataset.old}
            == {p: synapse.files[p] for p in dataset.old})
