"""A PUT's or a part's body is not copied whole on its way to the socket
(backends/s3/s3fs_private.py SentAsIsBody): the memory an upload holds is its body, once."""

from __future__ import annotations

import asyncio
import os
import tracemalloc

import pytest

from servers.moto import MotoServer
from synapse_objstore.backends.s3.client import create_s3_filesystem
from synapse_objstore.backends.s3.s3fs_private import call_s3
from synapse_objstore.backends.s3.settings import S3Settings
from tests.support.s3 import s3_client

MiB = 1024 * 1024
BODY = 8 * MiB


async def put_and_measure(moto: MotoServer, bucket: str, body: bytes, operation: str) -> int:
    """The most memory allocated at once (beyond `body`) while the body is sent."""
    settings = S3Settings.model_validate({"bucket": bucket, "endpoint_url": moto.endpoint_url,
                                          "region_name": "us-east-1"})
    s3 = create_s3_filesystem(settings, None, asyncio.get_running_loop())
    client = await s3.set_session()
    try:
        await call_s3(s3, "head_bucket", Bucket=bucket)  # the connection and the client's lazy parts, first
        upload_id = ""
        if operation == "upload_part":
            upload_id = (await call_s3(s3, "create_multipart_upload", Bucket=bucket, Key="k"))["UploadId"]
        tracemalloc.start()
        try:
            if operation == "upload_part":
                part = await call_s3(s3, "upload_part", Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1,
                                     Body=body)
            else:
                await call_s3(s3, "put_object", Bucket=bucket, Key="k", Body=body)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if operation == "upload_part":
            await call_s3(s3, "complete_multipart_upload", Bucket=bucket, Key="k", UploadId=upload_id,
                          MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        return peak
    finally:
        await client.close()


@pytest.mark.parametrize("operation", ["put_object", "upload_part"])
def test_a_body_is_sent_without_a_copy_of_it_whole(moto: MotoServer, bucket: str, operation: str) -> None:
    body = os.urandom(BODY)
    peak = asyncio.run(put_and_measure(moto, bucket, body, operation))
    # aiohttp sends it 256 KiB at a time; botocore hashes it (SigV4 over http) 1 MiB at a time
    assert peak < BODY // 2, f"{peak / MiB:.1f} MiB allocated while an {BODY // MiB} MiB body was sent"
    assert s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key="k")["Body"].read() == body
