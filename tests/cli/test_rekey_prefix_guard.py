"""`rekey` under a wrong prefix (on Ceph RGW, which enforces SSE-C): a listing that holds objects
that are neither Synapse media nor the owner marker (another homeserver's, under a prefix ""
typed for "hs1/") is refused, exit 2, by the dry run and by --apply, before anything is
rewritten: the other homeserver's objects still read without a key, unchanged. So is one such
object listed last, after media a run that rewrote as it listed would have rewritten already."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.ceph_rgw import CephRGW
from tests.support.offload import Offload
from tests.support.s3 import SSE_KEY, rgw_client

pytestmark = pytest.mark.ceph

MARKER = "synapse-objstore-owner.json"


def put_plain(s3: Any, bucket: str, keys: list[str]) -> None:
    for key in keys:
        body = os.urandom(2000)
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/png",
                      Metadata={"sha256": hashlib.sha256(body).hexdigest()})


def snapshot(s3: Any, bucket: str) -> dict[str, tuple[Any, ...]]:
    """Each object as a keyless HEAD shows it (an object encrypted since would fail that HEAD)."""
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]
    heads = {key: s3.head_object(Bucket=bucket, Key=key) for key in keys}
    return {key: (head["ETag"], head["LastModified"], head["ContentLength"], head["ContentType"], head["Metadata"],
                  head.get("SSECustomerKeyMD5")) for key, head in heads.items()}


def write_config(workdir: Path, rgw: CephRGW, bucket: str, prefix: str) -> str:
    (workdir / "store.yaml").write_text(yaml.safe_dump({
        "bucket": bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
        "secret_access_key": rgw.secret_key, "addressing_style": "path", "prefix": prefix,
        "sse_customer_key": SSE_KEY, "previously_unencrypted": True}))
    return "store.yaml"


def test_a_prefix_over_another_homeservers_objects_is_refused_and_nothing_rewritten(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path,
) -> None:
    s3 = rgw_client(rgw)
    put_plain(s3, rgw_bucket, [f"hs2/local_content/ab/cd/other{n}" for n in range(5)] + [f"hs2/{MARKER}"])
    put_plain(s3, rgw_bucket, [f"hs1/local_content/ef/gh/ours{n}" for n in range(3)])
    before = snapshot(s3, rgw_bucket)
    config = write_config(workdir, rgw, rgw_bucket, "")  # a typo for "hs1/"

    for apply in ([], ["--apply"]):
        result = offload("rekey", *apply, "--store-config", config, expect=2)
        message = " ".join(result.stderr.split())
        assert f"refusing to rekey s3://{rgw_bucket}/ at {rgw.endpoint_url}" in message
        assert "neither Synapse media nor this store's owner marker: hs1/local_content/ef/gh/ours0" in message
        assert "Is the prefix right?" in message and "Nothing was rewritten" in message
        assert "Traceback" not in result.output
        assert snapshot(s3, rgw_bucket) == before  # every object unencrypted, as it was
    assert s3.get_object(Bucket=rgw_bucket, Key=f"hs2/{MARKER}")["Body"].read()


def test_an_object_that_is_not_ours_listed_last_stops_the_run_before_any_rewrite(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path,
) -> None:
    s3 = rgw_client(rgw)
    put_plain(s3, rgw_bucket, [f"media/local_content/ab/cd/ours{n:02d}" for n in range(12)] + [f"media/{MARKER}"])
    put_plain(s3, rgw_bucket, ["media/zz-notes/readme.txt"])  # listed after every media
    before = snapshot(s3, rgw_bucket)
    config = write_config(workdir, rgw, rgw_bucket, "media/")

    result = offload("rekey", "--apply", "--jobs", "1", "--store-config", config, expect=2)
    message = " ".join(result.stderr.split())
    assert "its prefix 'media/' holds objects that are neither Synapse media" in message
    assert "media/zz-notes/readme.txt. Is the prefix right?" in message
    assert snapshot(s3, rgw_bucket) == before

    s3.delete_object(Bucket=rgw_bucket, Key="media/zz-notes/readme.txt")  # the admin moves it away
    assert "Rewrote 13 objects under the current key" in offload("rekey", "--apply", "--store-config", config).stdout
    for key in before.keys() - {"media/zz-notes/readme.txt"}:  # the media and the owner marker
        head = s3.head_object(Bucket=rgw_bucket, Key=key, SSECustomerAlgorithm="AES256", SSECustomerKey=SSE_KEY)
        assert head["SSECustomerKeyMD5"], key
