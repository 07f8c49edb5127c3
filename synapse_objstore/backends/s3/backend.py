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
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import s3fs
from aiobotocore.response import AioStreamingBody
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError
from fsspec import AbstractFileSystem
from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from s3fs.errors import translate_boto_error

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import (
    LIST_PAGE_SIZE,
    Backend,
    ChecksumScheme,
    IncompleteUpload,
    ObjectStream,
)
from synapse_objstore.config import BackendSettings
from synapse_objstore.hookspecs import hookimpl
from synapse_objstore.upload_memory import UploadMemory

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# S3 refuses multipart parts smaller than this (all but the last).
MIN_PART_SIZE = 5 * MiB
# boto3's TransferConfig default part size, with which s3_media_upload and
# synapse-s3-storage-provider upload.
BOTO3_PART_SIZE = 8 * MiB

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
    # File content all uploads of this store hold in memory at once (the HTTP client copies
    # it once more); an upload waits for room.
    upload_memory_limit: ByteSize = Field(ByteSize(32 * MiB), ge=MIN_PART_SIZE)

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
    _upload_memory: UploadMemory | None = None  # made on the I/O loop, at the first upload
    _conditional_put = True  # until the store answers If-None-Match with 501 Not Implemented

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

    async def close_filesystem(self, fs: AbstractFileSystem) -> None:
        """s3fs closes its aiobotocore client by itself only when it is synchronous."""
        creator = getattr(fs, "_s3creator", None)
        if creator is not None:
            await creator.__aexit__(None, None, None)

    def checksum_scheme(self) -> ChecksumScheme:
        """The ETag: the content's MD5 for a single PUT, the MD5 of the parts' MD5s for a
        multipart upload (with our part size, or boto3's for objects the older tools wrote).
        With SSE-C it is neither."""
        if self.settings.sse_customer_key is not None:
            return ChecksumScheme()
        return ChecksumScheme(
            whole_md5=True, multipart_part_sizes=(int(self.settings.multipart_chunksize), BOTO3_PART_SIZE)
        )

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

    async def object_info(self, fs: AsyncFs, remote_path: str) -> dict[str, Any]:
        """One HEAD (SSE-C added by the filesystem). s3fs's `info` follows a 404 with a
        listing, to tell a directory: a second request for every missing object."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        reply = await s3._call_s3("head_object", Bucket=bucket, Key=key)
        return {
            "name": remote_path, "type": "file", "size": int(reply["ContentLength"]), "ETag": reply.get("ETag"),
            "LastModified": reply.get("LastModified"), "StorageClass": reply.get("StorageClass", "STANDARD"),
        }

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool = False) -> str | None:
        """One PUT below multipart_threshold, else a multipart upload that holds at most
        multipart_concurrency parts (each copied once more by the HTTP client); an interrupted
        upload is aborted, not left behind. `if_absent`: a conditional PUT (If-None-Match: *;
        a store that answers it with 501 gets a HEAD first from then on), or a HEAD before a
        multipart upload."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        if self._upload_memory is None:
            self._upload_memory = UploadMemory(int(self.settings.upload_memory_limit))
        memory = self._upload_memory
        size = os.path.getsize(local_path)
        small = size < self.settings.multipart_threshold
        if small and if_absent and self._conditional_put:
            try:
                async with memory.hold(size):
                    body = await fs.in_thread(_read_range, local_path, 0, size)
                    reply = await s3._call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
                return _etag(reply)
            except OSError as error:
                status = _http_status(error)
                if status == 412:  # s3fs says FileExistsError only where the store names the condition
                    raise FileExistsError(remote_path) from error
                if status != 501:
                    raise
                self._conditional_put = False
                logger.info("%s does not take If-None-Match: looking before each upload instead", self.describe())
        if if_absent and await _exists(s3, bucket, key):
            raise FileExistsError(remote_path)
        if small:
            async with memory.hold(size):
                body = await fs.in_thread(_read_range, local_path, 0, size)
                reply = await s3._call_s3("put_object", Bucket=bucket, Key=key, Body=body)
            return _etag(reply)
        chunk = int(self.settings.multipart_chunksize)
        started = await s3._call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        upload_id = started["UploadId"]
        slots = asyncio.Semaphore(self.settings.multipart_concurrency)

        async def upload_part(number: int) -> dict[str, Any]:
            async with slots, memory.hold(min(chunk, size - (number - 1) * chunk)):
                body = await fs.in_thread(_read_range, local_path, (number - 1) * chunk, chunk)
                reply = await s3._call_s3(
                    "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": reply["ETag"]}

        try:
            parts = await asyncio.gather(*(upload_part(n) for n in range(1, -(-size // chunk) + 1)))
            reply = await s3._call_s3(
                "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(_abort_quietly(s3, bucket, key, upload_id))
            raise
        return _etag(reply)

    async def open_read(self, fs: AsyncFs, remote_path: str) -> ObjectStream:
        """One streamed GET (SSE-C added by the filesystem); the body is read as consumed."""
        s3: s3fs.S3FileSystem = fs.fs
        bucket, key, _ = s3.split_path(remote_path)
        reply = await s3._call_s3("get_object", Bucket=bucket, Key=key)
        return S3BodyStream(s3, bucket, key, reply, self.settings.read_timeout)

    async def list_pages(
        self, fs: AsyncFs, path: str, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """ListObjectsV2 under the key prefix in `path`, one response (page) at a time, in key
        order. Listing needs no SSE-C key, so the client is used as it is."""
        bucket, _, key_prefix = path.partition("/")
        client = await fs.fs.set_session()
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
            raise translate_boto_error(error) from error

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
            raise translate_boto_error(error) from error

    async def abort_incomplete_upload(self, fs: AsyncFs, upload: IncompleteUpload) -> None:
        bucket, _, key = upload.path.partition("/")
        await fs.fs._call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.upload_id)


class S3BodyStream(ObjectStream):
    """The body of a GET, read as consumed. Suspended, it closes the connection; the next
    read continues with a ranged GET that must match the same ETag, so a reader paused for
    long holds no pooled connection and never splices two versions of an object.

    A read returns the next piece of the body as aiohttp received it. aiobotocore's
    `body.read(n)` joins every piece buffered into one new buffer: a copy of each byte, a
    quarter of the CPU of a stream. Only a plain body is read this way; one that aiobotocore
    wraps to validate a checksum (`response_checksum_validation`) is read through that wrapper.
    A plain body's reads are timed by a `TimedPieceReader` rather than by aiohttp.
    """

    def __init__(
        self, s3: s3fs.S3FileSystem, bucket: str, key: str, reply: dict[str, Any], read_timeout: float
    ) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._etag: str | None = reply.get("ETag")
        self.size = int(reply["ContentLength"])
        self._read_timeout = read_timeout
        self._offset = 0
        self._rest = b""  # what is left of a piece longer than a read asked for
        self._open(reply)

    def _open(self, reply: dict[str, Any]) -> None:
        self._body: Any = reply["Body"]
        raw = getattr(self._body, "_raw_stream", None)
        plain = type(self._body) is AioStreamingBody and isinstance(raw, aiohttp.ClientResponse)
        self._pieces: TimedPieceReader | None = TimedPieceReader(raw, self._read_timeout) if plain else None

    async def read(self, max_bytes: int) -> bytes:
        if self._body is None:
            if self._offset >= self.size:
                return b""
            condition = {"IfMatch": self._etag} if self._etag else {}
            self._open(await self._s3._call_s3(
                "get_object", Bucket=self._bucket, Key=self._key, Range=f"bytes={self._offset}-", **condition
            ))
        data = await self._next_piece(max_bytes)
        self._offset += len(data)
        return data

    async def _next_piece(self, max_bytes: int) -> bytes:
        if self._pieces is None:
            data: bytes = await self._body.read(max_bytes)
            return data
        piece = self._rest
        if not piece:
            piece = await self._pieces.read_piece()
        piece, self._rest = (piece[:max_bytes], piece[max_bytes:]) if len(piece) > max_bytes else (piece, b"")
        return piece

    async def suspend(self) -> None:
        await self.close()

    async def close(self) -> None:
        body, self._body = self._body, None
        if self._pieces is not None:
            self._pieces.stop()
        self._pieces, self._rest = None, b""
        if body is not None:
            body.close()


class TimedPieceReader:
    """Reads a response's body piece by piece, and fails a read that has waited `timeout`
    for its next piece (the read timeout, as aiohttp's `sock_read` would).

    aiohttp re-arms a timer for every piece it receives, two timer operations per 256 KiB:
    about a seventh of the I/O thread's time in a fast stream. This one looks at most every
    half `timeout` instead, and when it finds a read waiting, looks again when that read's
    `timeout` is up: a stall fails `timeout` after the read began to wait, never later. Only a
    read that waits is timed: a reader that stops reading (its client paused) is never failed
    by it.
    """

    def __init__(self, response: aiohttp.ClientResponse, timeout: float) -> None:
        self._reader = response.content
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        if response.connection is not None:  # still receiving: this times it, not aiohttp
            response.connection.protocol.read_timeout = None  # set again for the connection's next request
        self._check = self._loop.call_later(timeout / 2, self._look)

    async def read_piece(self) -> bytes:
        self._waiting_since = self._loop.time()
        try:
            piece, _ = await self._reader.readchunk()
        finally:
            self._waiting_since = None
        return piece

    def _look(self) -> None:
        if self._reader.is_eof() or self._reader.exception() is not None:
            return  # nothing more to time
        delay = self._timeout / 2
        since = self._waiting_since
        if since is not None:
            left = since + self._timeout - self._loop.time()
            if left <= 0:
                self._reader.set_exception(aiohttp.ServerTimeoutError(f"no data from the store for {self._timeout:g} s"))
                return
            delay = min(delay, left)
        self._check = self._loop.call_later(delay, self._look)

    def stop(self) -> None:
        self._check.cancel()


async def _exists(s3: s3fs.S3FileSystem, bucket: str, key: str) -> bool:
    try:
        await s3._call_s3("head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return False
    return True


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of the S3 reply behind an error s3fs translated, if there was one."""
    while error is not None:
        if isinstance(error, ClientError):
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return int(status) if status else None
        error = error.__cause__  # type: ignore[assignment]
    return None


def _etag(reply: dict[str, Any]) -> str | None:
    etag = reply.get("ETag")
    return etag.strip('"') if isinstance(etag, str) else None


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
