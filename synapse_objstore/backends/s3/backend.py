"""The s3 backend: Amazon S3 and S3-compatible stores (Ceph RGW, MinIO, R2, B2, ...) through s3fs.

Object keys are `prefix + media path` in `bucket`, so a bucket written by
synapse-s3-storage-provider keeps working.
"""

from __future__ import annotations

import asyncio
import errno
import functools
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import s3fs
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError
from fsspec import AbstractFileSystem

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import (
    CURRENT,
    LIST_PAGE_SIZE,
    Backend,
    ChecksumScheme,
    IncompleteUpload,
    KeyedObject,
    KeyLabel,
    LocalContent,
    ObjectMetadata,
    ObjectStream,
    RewriteResult,
    metadata_from,
)
from synapse_objstore.backends.s3 import fast_listing
from synapse_objstore.backends.s3.client import create_s3_filesystem, load_botocore_session
from synapse_objstore.backends.s3.keys import SseKey, fingerprint, object_label, read_keys, read_with_keys
from synapse_objstore.backends.s3.rewrite import Rewriter
from synapse_objstore.backends.s3.s3fs_private import call_s3, close_client, translate_error
from synapse_objstore.backends.s3.settings import BOTO3_PART_SIZE, S3Settings
from synapse_objstore.backends.s3.streaming import S3BodyStream
from synapse_objstore.backends.s3.uploads import S3Uploader
from synapse_objstore.errors import exception_chain


class S3Backend(Backend):
    name = "s3"
    Settings = S3Settings
    keeps_metadata = True  # Content-Type and x-amz-meta-sha256, given back on HEAD
    takes_content = True
    settings: S3Settings

    _session: AioSession | None = None
    _uploader: S3Uploader | None = None  # made on the I/O loop, at the first upload
    _rewriter: Rewriter | None = None  # likewise, at the first rewrite

    @property
    def root(self) -> str:
        return self.settings.bucket

    def prepare(self) -> None:
        """Load botocore's JSON data now, before the reactor runs (see `load_botocore_session`)."""
        self._session = load_botocore_session()

    def describe(self) -> str:
        region = self.settings.region_name
        where = self.settings.endpoint_url or (f"AWS {region}" if region else "AWS")
        return f"s3://{self.settings.bucket}/{self.settings.prefix} at {where}"

    async def close_filesystem(self, fs: AbstractFileSystem) -> None:
        await close_client(fs)

    def pins_streams(self) -> bool:
        """A resumed stream's ranged GET must match the ETag of the first (S3BodyStream)."""
        return True

    def checksum_scheme(self) -> ChecksumScheme:
        """The ETag: the content's MD5 for a single PUT, the MD5 of the parts' MD5s for a
        multipart upload (with our part size, or boto3's for objects the older tools wrote).
        With SSE-C it is neither (also for objects still under a previous key)."""
        if self.settings.sse_customer_key is not None or self.settings.previous_sse_customer_keys:
            return ChecksumScheme()
        return ChecksumScheme(
            whole_md5=True, multipart_part_sizes=(int(self.settings.multipart_chunksize), BOTO3_PART_SIZE)
        )

    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> s3fs.S3FileSystem:
        return create_s3_filesystem(self.settings, self._session, loop)

    @functools.cached_property
    def _keys(self) -> tuple[SseKey, ...]:
        return read_keys(self.settings)

    def key_labels(self) -> tuple[KeyLabel, ...]:
        return tuple(key.label for key in self._keys)

    def key_fingerprints(self) -> Mapping[KeyLabel, str]:
        """"key md5 1a2b3c4d": the start of the MD5 that S3 itself sends and stores with each
        SSE-C object (`keys.fingerprint`)."""
        return {key.label: fingerprint(key.key) for key in self._keys if key.key is not None}

    def failure_hint(self, error: BaseException) -> str:
        """With SSE-C, a 400 to a read: the store's answer to a key other than the object's
        (a HEAD's has no body, so botocore and s3fs say only "Bad Request")."""
        if not any(key.key is not None for key in self._keys):
            return ""
        if not any(_is_bad_request(link) for link in exception_chain(error)):
            return ""
        return (" (with SSE-C, a 400 is the store's answer to a key other than the object's: is "
                "sse_customer_key the key these objects were written with?)")

    async def object_info(self, fs: AsyncFs, remote_path: str) -> dict[str, Any]:
        """One HEAD (SSE-C added by the filesystem), and one more per earlier key tried
        (`keys.read_with_keys`). s3fs's `info` follows a 404 with a listing, to tell a
        directory: a second request for every missing object."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        reply, used = await read_with_keys(s3, self._keys, "head_object", Bucket=bucket, Key=key)
        self._key_read(object_label(used, reply))
        return {
            "name": remote_path, "type": "file", "size": int(reply["ContentLength"]), "ETag": reply.get("ETag"),
            "LastModified": reply.get("LastModified"), "StorageClass": reply.get("StorageClass", "STANDARD"),
            "ContentType": reply.get("ContentType"), "Metadata": reply.get("Metadata") or {},
        }

    async def key_of(self, fs: AsyncFs, remote_path: str, first: KeyLabel = CURRENT) -> KeyedObject:
        """One HEAD per key tried, `first` first, then in the order reads try them (objects
        listed together were mostly written in the same period, under one key: trying the last
        one's key first saves a failed HEAD per key before it); see `keys.object_label`."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        keys = tuple(sorted(self._keys, key=lambda k: k.label != first))  # stable: else the config's order
        reply, used = await read_with_keys(s3, keys, "head_object", Bucket=bucket, Key=key)
        return KeyedObject(object_label(used, reply), reply)

    async def rewrite_with_current_key(self, fs: AsyncFs, remote_path: str, source: KeyedObject) -> RewriteResult:
        """See `rewrite.Rewriter.rewrite`."""
        if self._rewriter is None:
            self._rewriter = Rewriter(self.settings, self._keys, self.describe())
        return await self._rewriter.rewrite(fs, remote_path, source)

    def object_metadata(self, info: Mapping[str, Any]) -> ObjectMetadata:
        """From a HEAD (`object_info`); a listing gives none."""
        return metadata_from(info.get("ContentType"), info.get("Metadata"))

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool = False,
                     metadata: ObjectMetadata | None = None, content: LocalContent | None = None) -> str | None:
        """See `S3Uploader.upload`."""
        if self._uploader is None:
            self._uploader = S3Uploader(self.settings, self.describe())
        return await self._uploader.upload(fs, local_path, remote_path, if_absent, metadata, content)

    async def open_read(self, fs: AsyncFs, remote_path: str) -> ObjectStream:
        """One streamed GET (SSE-C added by the filesystem), and one more per earlier key
        tried; the body is read as consumed."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        reply, used = await read_with_keys(s3, self._keys, "get_object", Bucket=bucket, Key=key)
        self._key_read(object_label(used, reply))
        return S3BodyStream(s3, bucket, key, reply, self.settings.read_timeout, used, self._keys)

    async def list_pages(
        self, fs: AsyncFs, path: str, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """ListObjectsV2 under the key prefix in `path`, one response (page) at a time, in key
        order. Listing needs no SSE-C key, so the client is used as it is."""
        bucket, _, key_prefix = path.partition("/")
        client = await fs.fs.set_session()
        fast_listing.register(client)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key_prefix, PaginationConfig={"PageSize": page_size}
        )
        try:
            async for page in pages:
                if "Contents" in page:  # a page may come back empty, with more to follow
                    yield [
                        {"name": f"{bucket}/{item['Key']}", "type": "file", "size": item["Size"],
                         "ETag": item.get("ETag"), "LastModified": item.get("LastModified"),
                         "StorageClass": item.get("StorageClass")}
                        for item in page["Contents"]
                    ]
        except ClientError as error:
            raise translate_error(error) from error

    async def incomplete_uploads(self, fs: AsyncFs, path: str) -> AsyncGenerator[IncompleteUpload, None]:
        """Multipart uploads under the key prefix in `path` that were never completed nor aborted."""
        bucket, _, key_prefix = path.partition("/")
        client = await fs.fs.set_session()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key_prefix)
        try:
            async for page in pages:
                for upload in page.get("Uploads", []):
                    yield IncompleteUpload(f"{bucket}/{upload['Key']}", upload["UploadId"], upload.get("Initiated"))
        except ClientError as error:
            raise translate_error(error) from error

    async def abort_incomplete_upload(self, fs: AsyncFs, upload: IncompleteUpload) -> None:
        bucket, _, key = upload.path.partition("/")
        await call_s3(fs.fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.upload_id)


def _is_bad_request(error: BaseException) -> bool:
    """A 400 from S3, as botocore raises it or as s3fs translates it (an OSError, EINVAL)."""
    if isinstance(error, ClientError):
        return bool(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 400)
    return isinstance(error, OSError) and error.errno == errno.EINVAL
