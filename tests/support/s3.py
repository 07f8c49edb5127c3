"""boto3 clients for the S3 servers of the tests, and what a test reads from or puts in a bucket."""

from __future__ import annotations

from typing import Any

import boto3

from servers.ceph_rgw import CephRGW
from servers.moto import MotoServer
from synapse_objstore.cli.ownership import OWNER_MARKER

# SSE-C keys (32 bytes) for the Ceph RGW tests.
SSE_KEY = "k3y-for-synapse-media-0123456789"
OTHER_KEY = "another-key-0123456789-abcdefghi"


def s3_client(endpoint_url: str, **kwargs: Any) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", **kwargs)


def rgw_client(rgw: CephRGW) -> Any:
    from botocore.config import Config

    return s3_client(rgw.endpoint_url, aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key,
                     config=Config(request_checksum_calculation="when_required",
                                   response_checksum_validation="when_required", s3={"addressing_style": "path"}))


def rgw_config(rgw: CephRGW, bucket: str, **extra: Any) -> dict[str, Any]:
    """A store config for `bucket` on Ceph RGW, with SSE-C and 5 MiB multipart parts."""
    return {"bucket": bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
            "secret_access_key": rgw.secret_key, "addressing_style": "path", "sse_customer_key": SSE_KEY,
            "multipart_threshold": "5MiB", "multipart_chunksize": "5MiB", **extra}


def s3_config(moto: MotoServer, bucket: str, **extra: Any) -> dict[str, Any]:
    """A store config for `bucket` on moto."""
    return {"bucket": bucket, "endpoint_url": moto.endpoint_url, **extra}


def bucket_objects(moto: MotoServer, bucket: str) -> dict[str, bytes]:
    """The bucket's objects but the owner marker (`upload` and `reconcile` record the homeserver there)."""
    client = s3_client(moto.endpoint_url)
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed
            if not o["Key"].endswith(OWNER_MARKER)}


def put_objects(moto: MotoServer, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3_client(moto.endpoint_url)
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
