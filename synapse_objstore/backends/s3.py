"""Amazon S3 and S3-compatible stores (Ceph RGW, MinIO, R2, B2, ...) through s3fs.

Every key of synapse-s3-storage-provider means what it meant there, and object keys are
`prefix + media path` in `bucket`, so a bucket written by it keeps working.

SSE-C and the storage class are set once on the filesystem (`s3_additional_kwargs`): s3fs
then adds them to every call whose API shape accepts them (PutObject, CreateMultipartUpload,
UploadPart, HeadObject, GetObject, CopyObject) and drops them from the rest. Passed per call,
s3fs loses them on some paths, so one filesystem serves one key.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import s3fs
from aiobotocore.session import AioSession
from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import Backend, ObjectStream
from synapse_objstore.config import BackendSettings
from synapse_objstore.hookspecs import hookimpl

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# S3 refuses multipart parts smaller than this (all but the last).
MIN_PART_SIZE = 5 * MiB

ChecksumMode = Literal["when_supported", "when_required"]


class S3Settings(BackendSettings):
    bucket: str = Field(min_length=1)
    region_name: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    sse_customer_key: SecretStr | None = None
    sse_customer_algo: str = "AES256"
    # Any class the store knows (STANDARD_IA, GLACIER_IR, a Ceph placement class, ...).
    storage_class: str = Field("STANDARD", min_length=1, pattern=r"^\S+$")
    request_checksum_calculation: ChecksumMode = "when_required"
    response_checksum_validation: ChecksumMode = "when_required"
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout: float = Field(10.0, gt=0, le=600)
    read_timeout: float = Field(60.0, gt=0, le=3600)
    # Retries after the first attempt (botocore's standard mode); s3fs adds none of its own.
    retries: int = Field(2, ge=0, le=20)
    max_pool_connections: int | None = Field(None, ge=1, le=10000)
    multipart_threshold: ByteSize = Field(ByteSize(16 * MiB), ge=MIN_PART_SIZE)
    multipart_chunksize: ByteSize = Field(ByteSize(8 * MiB), ge=MIN_PART_SIZE, le=5 * 1024 * MiB)
    multipart_concurrency: int = Field(4, ge=1, le=64)

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, bucket: str) -> str:
        if "/" in bucket or bucket.strip() != bucket:
            raise ValueError("must be a bucket name, without '/' or surrounding spaces")
        return bucket

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host, e.g. https://s3.example.com")
        return url

    @model_validator(mode="after")
    def _check_pairs(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together: set both, or neither to use "
                             "the usual AWS credential chain (environment, shared files, instance role)")
        key = self.sse_customer_key
        if key is not None and self.sse_customer_algo == "AES256":
            length = len(key.get_secret_value().encode())
            if length != 32:
                raise ValueError(f"sse_customer_key must be exactly 32 bytes for AES256 (it has {length})")
        return self

    def secret_values(self) -> Iterator[str]:
        yield from super().secret_values()
        if self.sse_customer_key is not None:  # botocore logs the key as sent: base64-encoded
            yield base64.b64encode(self.sse_customer_key.get_secret_value().encode()).decode()

    @property
    def pool_size(self) -> int:
        """Connections kept to the store. Async downloads hold no thread, so the pool, not
        threadpool_size, is what bounds them; it never goes below 100."""
        return self.max_pool_connections or max(self.threadpool_size, 100)


class S3Backend(Backend):
    name = "s3"
    Settings = S3Settings
    settings: S3Settings

    _session: AioSession | None = None

    @property
    def root(self) -> str:
        return self.settings.bucket

    def prepare(self) -> None:
        """Load botocore's JSON data now: each file is one long json.loads holding the GIL
        (endpoints.json alone takes 15-30 ms), which on the I/O thread would stall Synapse's
        reactor. The session holds plain data, no socket or thread, so a later fork is safe;
        credentials are still resolved when the client is built."""
        session = AioSession()
        loader = session.get_component("data_loader")
        for name in ("endpoints", "partitions", "sdk-default-configuration"):
            loader.load_data(name)
        for kind in ("service-2", "endpoint-rule-set-1", "paginators-1"):
            loader.load_service_model("s3", kind)
        self._session = session

    def describe(self) -> str:
        where = self.settings.endpoint_url or (f"AWS {self.settings.region_name}" if self.settings.region_name else "AWS")
        return f"s3://{self.settings.bucket}/{self.settings.prefix} at {where}"

    def extra_request_args(self) -> dict[str, str]:
        """SSE-C and storage class, for every request whose shape accepts them."""
        args = {"StorageClass": self.settings.storage_class}
        if self.settings.sse_customer_key is not None:
            args["SSECustomerKey"] = self.settings.sse_customer_key.get_secret_value()
            args["SSECustomerAlgorithm"] = self.settings.sse_customer_algo
        return args

    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> s3fs.S3FileSystem:
        s = self.settings
        client_kwargs = {k: v for k, v in {"region_name": s.region_name}.items() if v is not None}
        config_kwargs: dict[str, Any] = {
            "connect_timeout": s.connect_timeout,
            "read_timeout": s.read_timeout,
            "retries": {"mode": "standard", "total_max_attempts": s.retries + 1},
            "max_pool_connections": s.pool_size,
            "request_checksum_calculation": s.request_checksum_calculation,
            "response_checksum_validation": s.response_checksum_validation,
            "s3": {"addressing_style": s.addressing_style},
        }
        filesystem = s3fs.S3FileSystem(
            endpoint_url=s.endpoint_url,
            key=s.access_key_id,
            secret=s.secret_access_key.get_secret_value() if s.secret_access_key else None,
            token=s.session_token.get_secret_value() if s.session_token else None,
            client_kwargs=client_kwargs,
            config_kwargs=config_kwargs,
            s3_additional_kwargs=self.extra_request_args(),
            max_concurrency=s.multipart_concurrency,
            asynchronous=True,
            loop=loop,
            skip_instance_cache=True,
            use_listings_cache=False,
            session=self._session,
        )
        filesystem.retries = 1  # botocore retries already; s3fs's own loop would multiply them
        return filesystem

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str) -> None:
        """One PUT below multipart_threshold, else a multipart upload whose memory is at
        most multipart_concurrency parts; an interrupted upload is aborted, not left behind."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        size = os.path.getsize(local_path)
        if size < self.settings.multipart_threshold:
            body = await fs.in_thread(_read_range, local_path, 0, size)
            await s3._call_s3("put_object", Bucket=bucket, Key=key, Body=body)
            return
        chunk = int(self.settings.multipart_chunksize)
        started = await s3._call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        upload_id = started["UploadId"]
        slots = asyncio.Semaphore(self.settings.multipart_concurrency)

        async def upload_part(number: int) -> dict[str, Any]:
            async with slots:
                body = await fs.in_thread(_read_range, local_path, (number - 1) * chunk, chunk)
                reply = await s3._call_s3(
                    "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": reply["ETag"]}

        try:
            parts = await asyncio.gather(*(upload_part(n) for n in range(1, -(-size // chunk) + 1)))
            await s3._call_s3(
                "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(_abort_quietly(s3, bucket, key, upload_id))
            raise

    async def open_read(self, fs: AsyncFs, remote_path: str) -> ObjectStream:
        """One streamed GET (SSE-C added by the filesystem); the body is read as consumed."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        reply = await s3._call_s3("get_object", Bucket=bucket, Key=key)
        return S3BodyStream(s3, bucket, key, reply)


class S3BodyStream(ObjectStream):
    """The body of a GET, read as consumed. Suspended, it closes the connection; the next
    read continues with a ranged GET that must match the same ETag, so a reader paused for
    long holds no pooled connection and never splices two versions of an object."""

    def __init__(self, s3: s3fs.S3FileSystem, bucket: str, key: str, reply: dict[str, Any]) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._body: Any = reply["Body"]
        self._etag: str | None = reply.get("ETag")
        self.size = int(reply["ContentLength"])
        self._offset = 0

    async def read(self, max_bytes: int) -> bytes:
        if self._body is None:
            if self._offset >= (self.size or 0):
                return b""
            condition = {"IfMatch": self._etag} if self._etag else {}
            reply = await self._s3._call_s3(
                "get_object", Bucket=self._bucket, Key=self._key, Range=f"bytes={self._offset}-", **condition
            )
            self._body = reply["Body"]
        data: bytes = await self._body.read(max_bytes)
        self._offset += len(data)
        return data

    async def suspend(self) -> None:
        await self.close()

    async def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


async def _abort_quietly(s3: s3fs.S3FileSystem, bucket: str, key: str, upload_id: str) -> None:
    try:
        await s3._call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as error:  # the upload failed already; report, and let that error stand
        logger.warning("could not abort multipart upload of s3://%s/%s: %s", bucket, key, error)


@hookimpl
def register_backends(register: Any) -> None:
    register(S3Backend)
