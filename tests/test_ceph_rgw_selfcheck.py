"""Smoke test of the throwaway Ceph cluster itself: SSE-C and storage classes are real, and it stops."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from servers.ceph_rgw import CephRGW, ceph_available

pytestmark = pytest.mark.ceph

MiB = 1024 * 1024
SSE = {"SSECustomerKey": "0123456789abcdef0123456789abcdef", "SSECustomerAlgorithm": "AES256"}


def _client(rgw: CephRGW) -> Any:
    return boto3.client("s3", endpoint_url=rgw.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key,
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required",
                                      s3={"addressing_style": "path"}))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_rgw_enforces_sse_c_keeps_storage_classes_and_stops(tmp_path: Path) -> None:
    if not ceph_available():
        if os.environ.get("OBJSTORE_REQUIRE_CEPH"):
            pytest.fail("OBJSTORE_REQUIRE_CEPH is set but Ceph RGW is not installed: run .ci/install-ceph")
        pytest.skip("Ceph RGW is not installed (.ci/install-ceph installs it)")

    with CephRGW(tmp_path) as rgw:
        pids = rgw.pids
        assert len(pids) == 3
        s3 = _client(rgw)
        bucket = f"selfcheck-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)

        s3.put_object(Bucket=bucket, Key="small", Body=b"hello ceph", StorageClass=rgw.extra_storage_class,
                      **SSE)
        head = s3.head_object(Bucket=bucket, Key="small", **SSE)
        assert head["StorageClass"] == rgw.extra_storage_class
        assert head["SSECustomerAlgorithm"] == "AES256"
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.get_object(Bucket=bucket, Key="small")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert s3.get_object(Bucket=bucket, Key="small", **SSE)["Body"].read() == b"hello ceph"

        parts = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
        upload = s3.create_multipart_upload(Bucket=bucket, Key="big", **SSE)["UploadId"]
        etags = [s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=number, Body=part,
                                **SSE)["ETag"] for number, part in enumerate(parts, 1)]
        s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, 1)]})
        assert s3.get_object(Bucket=bucket, Key="big", **SSE)["Body"].read() == b"".join(parts)

    assert rgw.pids == []
    assert not [pid for pid in pids if _alive(pid)]
