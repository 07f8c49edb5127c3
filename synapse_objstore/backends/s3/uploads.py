"""Uploads to S3: one PUT below `multipart_threshold`, else a multipart upload, both within the
store's `upload_memory_limit`; and the conditional PUT (If-None-Match: *) of `if_absent`."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from typing import Any

import s3fs
from botocore.exceptions import ClientError

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import LocalContent, ObjectMetadata
from synapse_objstore.backends.part_upload import PartUpload, read_range
from synapse_objstore.backends.s3.keys import SseKey, http_status, read_keys, read_with_keys
from synapse_objstore.backends.s3.s3fs_private import call_s3, translate_error
from synapse_objstore.backends.s3.settings import S3Settings
from synapse_objstore.errors import UnknownKeyError
from synapse_objstore.upload_memory import UploadMemory

logger = logging.getLogger(__name__)


class S3Uploader:
    """The uploads of one store. Made on the I/O loop, at the first upload (its memory limit
    waits on that loop)."""

    def __init__(self, settings: S3Settings, describe: str) -> None:
        self.settings, self._describe = settings, describe
        self._memory = UploadMemory(int(settings.upload_memory_limit))
        self._conditional_put = True  # until the store answers If-None-Match with 501 Not Implemented
        # The arguments every PutObject carries, as the filesystem's `s3_additional_kwargs`
        # (SSE-C, storage class; PutObject takes them all), merged once rather than per call
        self._put_args = settings.extra_request_args()

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool,
                     metadata: ObjectMetadata | None = None, content: LocalContent | None = None) -> str | None:
        """One PUT below multipart_threshold, else a multipart upload that holds at most
        multipart_concurrency parts (sent without a copy: s3fs_private.SentAsIsBody); a failed or
        cancelled upload is aborted, not left behind (a process killed meanwhile leaves it for
        `objstore-offload reconcile`, which aborts it). `if_absent`: a conditional PUT (If-None-Match: *;
        a store that answers it with 501 gets a HEAD first from then on), or a HEAD before a
        multipart upload.

        Every PUT and part carries its Content-MD5, which the store checks against the body it
        received (400 BadDigest otherwise): botocore sends none by itself with
        `request_checksum_calculation: when_required`. So an object whose sha256 metadata we
        wrote holds the bytes we read, which is what lets verification trust that metadata
        where the ETag is no MD5 (SSE-C). `metadata`: Content-Type and x-amz-meta-sha256.
        `content`: the file's bytes and their MD5, read already (and counted in no memory
        limit: its caller holds few, small ones), sent in one PUT without reading the file."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        memory = self._memory
        # a stat of the local file: microseconds
        size = len(content.data) if content is not None else os.path.getsize(local_path)  # noqa: ASYNC240
        small = size < self.settings.multipart_threshold
        headers = _metadata_args(metadata)

        async def read() -> tuple[bytes, str]:
            if content is not None:
                return content.data, base64.b64encode(bytes.fromhex(content.md5)).decode()
            body: tuple[bytes, str] = await fs.in_thread(_read_with_md5, local_path, 0, size)
            return body

        if small and if_absent and self._conditional_put:
            try:
                async with memory.hold(size):
                    body, md5 = await read()
                    reply = await self._put_object(s3, Bucket=bucket, Key=key, Body=body, ContentMD5=md5,
                                                   IfNoneMatch="*", **headers)
                return _etag(reply)
            except OSError as error:
                status = http_status(error)
                if status == 412:  # s3fs says FileExistsError only where the store names the condition
                    raise FileExistsError(remote_path) from error
                if status != 501:
                    raise
                self._conditional_put = False
                logger.info("%s does not take If-None-Match: looking before each upload instead", self._describe)
        if if_absent and await _exists(s3, bucket, key, read_keys(self.settings)):
            raise FileExistsError(remote_path)
        if small:
            async with memory.hold(size):
                body, md5 = await read()
                reply = await self._put_object(s3, Bucket=bucket, Key=key, Body=body, ContentMD5=md5, **headers)
            return _etag(reply)
        return await MultipartUpload(fs, local_path, size, self.settings, memory, bucket, key, headers).run()

    async def _put_object(self, s3: s3fs.S3FileSystem, **kwargs: Any) -> dict[str, Any]:
        """One PutObject on the filesystem's aiobotocore client, with the store's SSE-C and
        storage class, and botocore's errors as the OSErrors `call_s3` raises. `call_s3` does the
        same with more work per call (about 0.02 ms of CPU): s3fs merges and filters the arguments against the API
        shape and logs them at each call, and wraps the call in a retry loop of one attempt
        (botocore retries, `disable_s3fs_retries`)."""
        client = await s3.set_session()
        try:
            reply: dict[str, Any] = await client.put_object(**kwargs, **self._put_args)
        except ClientError as error:
            raise translate_error(error) from error
        return reply


class MultipartUpload(PartUpload[dict[str, Any], "str | None"]):
    """CreateMultipartUpload, UploadPart `multipart_concurrency` at a time, then
    CompleteMultipartUpload; AbortMultipartUpload if it fails."""

    def __init__(
        self, fs: AsyncFs, local_path: str, size: int, settings: S3Settings, memory: UploadMemory,
        bucket: str, key: str, create_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(fs, local_path, size, int(settings.multipart_chunksize),
                         concurrency=settings.multipart_concurrency, memory=memory)
        self.s3: s3fs.S3FileSystem = fs.fs
        self.bucket, self.key = bucket, key
        self.create_args = create_args or {}  # more CreateMultipartUpload arguments (metadata, ...)
        self.upload_id = ""

    async def start(self) -> None:
        started = await call_s3(self.s3, "create_multipart_upload", Bucket=self.bucket, Key=self.key,
                                **self.create_args)
        self.upload_id = started["UploadId"]

    async def send_part(self, number: int, offset: int, data: bytes) -> dict[str, Any]:
        md5 = await self.fs.in_thread(_md5_base64, data)
        return await self.send_part_with_md5(number, data, md5)

    async def send_part_with_md5(self, number: int, data: bytes, md5: str) -> dict[str, Any]:
        reply = await call_s3(self.s3, "upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                              PartNumber=number, Body=data, ContentMD5=md5)
        return {"PartNumber": number, "ETag": reply["ETag"]}

    async def finish(self, receipts: list[dict[str, Any]]) -> str | None:
        reply = await call_s3(self.s3, "complete_multipart_upload", Bucket=self.bucket, Key=self.key,
                              UploadId=self.upload_id, MultipartUpload={"Parts": receipts})
        return _etag(reply)

    async def abandon(self) -> None:
        try:
            await call_s3(self.s3, "abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as error:  # the upload failed already; report, and let that error stand
            logger.warning("could not abort multipart upload of s3://%s/%s: %s", self.bucket, self.key, error)


async def _exists(s3: s3fs.S3FileSystem, bucket: str, key: str, keys: tuple[SseKey, ...]) -> bool:
    """A HEAD with each configured SSE-C key in turn (key rotation): an object under an old key,
    or under none that is configured, is there all the same."""
    try:
        await read_with_keys(s3, keys, "head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return False
    except UnknownKeyError:
        pass
    return True


def _metadata_args(metadata: ObjectMetadata | None) -> dict[str, Any]:
    """PutObject's (and CreateMultipartUpload's) arguments for the object's metadata."""
    if metadata is None:
        return {}
    args: dict[str, Any] = {}
    if metadata.content_type:
        args["ContentType"] = metadata.content_type
    if metadata.user_metadata:
        args["Metadata"] = metadata.user_metadata
    return args


def _md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _read_with_md5(path: str, offset: int, length: int) -> tuple[bytes, str]:
    """The bytes at `offset` of a file and their base64 MD5 (a Content-MD5 header), in one go."""
    data = read_range(path, offset, length)
    return data, _md5_base64(data)


def _etag(reply: dict[str, Any]) -> str | None:
    """The ETag an upload was acknowledged with; None for none, or an empty one (Ceph RGW has
    answered a CompleteMultipartUpload with `<ETag></ETag>` under load), which names no content."""
    etag = reply.get("ETag")
    return (etag.strip('"') or None) if isinstance(etag, str) else None
