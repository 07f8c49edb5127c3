"""Objects under the prefix whose names a media path check refuses or a path normalisation
rewrites ('..', '.', '//', a '/' right after the prefix), written by another tool: no media of
Synapse's, so `rekey` refuses the prefix (exit 2) naming them, and rewrites nothing, on Ceph
RGW (which enforces SSE-C) as on moto; never takes one for the object its normalised name would
be. The listing gives those names as they are, so `reconcile` is not fooled by them into taking
one for a media of Synapse's (and deleting that media's object)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from servers.ceph_rgw import CephRGW
from servers.moto import MotoServer
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import OTHER_KEY, SSE_KEY, rgw_client, s3_client

PREFIX = "media/"
# after the prefix: the name as listed, and the object key
ODD = [
    "local_content/od/d1/../name",
    "local_content/od/d2/./name",
    "local_content//od/d3name",
    "/local_content/od/d4/name",  # the key is media//local_content/...
    "local_content/od/d5/name/..",
    "local_content/od/d6/name",  # an ordinary one, beside them
]


def sse(key: str | None) -> dict[str, str]:
    return {} if key is None else {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def put_all(s3: Any, bucket: str, key: str | None) -> dict[str, bytes]:
    bodies = {}
    for name in ODD:
        body = bodies[name] = os.urandom(3000)
        s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=body, ContentType="image/png",
                      Metadata={"sha256": hashlib.sha256(body).hexdigest()}, **sse(key))
    return bodies


def listed_keys(s3: Any, bucket: str) -> set[str]:
    return {item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def refused(offload: Offload, *args: str) -> str:
    result = offload("rekey", *args, "--store-config", "store.yaml", expect=2)
    message = " ".join(result.stderr.split())
    # the first three in the listing's (key) order: '/local_content...' sorts first
    assert ("neither Synapse media nor this store's owner marker: media//local_content/od/d4/name, "
            "media/local_content//od/d3name, media/local_content/od/d1/../name, and maybe more") in message, message
    assert "Nothing was rewritten" in message and "Traceback" not in result.output
    return message


@pytest.mark.ceph
def test_odd_names_are_refused_and_left_as_they_are(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path,
) -> None:
    s3 = rgw_client(rgw)
    bodies = put_all(s3, rgw_bucket, OTHER_KEY)
    assert listed_keys(s3, rgw_bucket) == {PREFIX + name for name in ODD}  # the store keeps each name as it is
    (workdir / "store.yaml").write_text(yaml.safe_dump({
        "bucket": rgw_bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
        "secret_access_key": rgw.secret_key, "addressing_style": "path", "prefix": PREFIX,
        "sse_customer_key": SSE_KEY, "previous_sse_customer_keys": [OTHER_KEY]}))

    refused(offload)
    refused(offload, "--apply")
    assert listed_keys(s3, rgw_bucket) == {PREFIX + name for name in ODD}  # no object added, none lost
    for name, body in bodies.items():  # each still under the old key alone
        reply = s3.get_object(Bucket=rgw_bucket, Key=PREFIX + name, **sse(OTHER_KEY))
        assert reply["Body"].read() == body, name
        with pytest.raises(botocore.exceptions.ClientError):
            s3.head_object(Bucket=rgw_bucket, Key=PREFIX + name, **sse(SSE_KEY))


def test_odd_names_are_refused_on_moto(offload: Offload, moto: MotoServer, bucket: str, workdir: Path) -> None:
    s3 = s3_client(moto.endpoint_url)
    put_all(s3, bucket, None)
    before = {item["Key"]: (item["ETag"], item["LastModified"])
              for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    (workdir / "store.yaml").write_text(yaml.safe_dump(
        {**store_block(moto, bucket), "prefix": PREFIX, "sse_customer_key": SSE_KEY, "previously_unencrypted": True}))

    refused(offload, "--apply")
    assert {item["Key"]: (item["ETag"], item["LastModified"])
            for item in s3.list_objects_v2(Bucket=bucket)["Contents"]} == before


@pytest.mark.parametrize("engine", ["sqlite"])
def test_reconcile_takes_no_odd_name_for_a_media(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, moto: MotoServer, bucket: str,
) -> None:
    """'media//local_content/ab/cd/ef' is no object of the media local_content/ab/cd/ef: it is kept as
    an unknown object, never counted as (nor deleted as) that media's object."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    s3 = s3_client(moto.endpoint_url)
    odd = "media//local_content/Zz/Yy/XxWwVvUuTtSs"  # a media Synapse does not have
    s3.put_object(Bucket=bucket, Key=odd, Body=b"written by another tool")
    before = listed_keys(s3, bucket)

    result = offload("--json", *config, "reconcile", "--grace", "0s", "--apply", "--max-delete-share", "100")
    summary = json.loads(result.stdout)
    assert summary["objects_unknown"] == 1 and summary["files_deleted"] == 0
    assert "kept /local_content/Zz/Yy/XxWwVvUuTtSs: not a media path Synapse writes" in result.output
    assert before <= listed_keys(s3, bucket)  # nothing deleted (reconcile uploads the recent media)
