"""Google Cloud Storage through gcsfs (`pip install synapse-objstore[gcs]`).

    backend: gcs
    bucket: my-synapse-media
    project: my-project             # optional
    token: /etc/synapse/gcs-key.json   # or google_default (the default), cloud, anon

Object keys are `prefix + media path` in `bucket`. Uploads go in one request up to
`chunk_size`, and as a resumable upload of `chunk_size` chunks above it, reading the file in
a worker thread. GCS keeps the MD5 of every object written in one piece (all of ours), which
is what verification compares. A stream reads by ranges, each pinned to the generation
the object had when the stream opened (`ifGenerationMatch`): an object replaced mid-stream
fails the stream (ObjectChangedError) rather than splice two generations.

This uses gcsfs's JSON-API filesystem, not the gRPC one gcsfs picks by default for zonal
buckets: it asks a gRPC control API for each bucket's type, which emulators do not serve.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, field_validator

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import (
    LIST_PAGE_SIZE,
    Backend,
    ChecksumScheme,
    ObjectMetadata,
    RangedReadStream,
    changed_error,
    metadata_from,
)
from synapse_objstore.backends.part_upload import PartUpload, read_range
from synapse_objstore.errors import ConfigError
from synapse_objstore.hookspecs import hookimpl
from synapse_objstore.settings import BackendSettings

if TYPE_CHECKING:
    from synapse_objstore.backends.gcs_filesystem import ThreadedAuthGCSFileSystem

logger = logging.getLogger(__name__)

# The Content-Type of an upload whose type is not known (Synapse sends its own on downloads).
CONTENT_TYPE = "application/octet-stream"
KiB = 1024
MiB = 1024 * KiB
# A resumable upload's chunks (all but the last) must be multiples of this.
CHUNK_GRANULARITY = 256 * KiB
TOKEN_METHODS = ("google_default", "cloud", "anon")
# https://cloud.google.com/storage/docs/buckets#naming (names with dots may be up to 222)
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


class GcsSettings(BackendSettings):
    bucket: str = Field(min_length=1)
    project: str | None = Field(None, min_length=1)
    # "google_default": Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
    # login, or the metadata server); "cloud": the metadata server only; "anon": no credentials
    # (public buckets, emulators); else the path of a service-account or authorized-user JSON file.
    token: str = Field("google_default", min_length=1)
    endpoint_url: str | None = None
    connect_timeout: float = Field(10.0, gt=0, le=600)
    read_timeout: float = Field(60.0, gt=0, le=3600)
    # Retries after the first attempt, with gcsfs's backoff (1 s, 2 s, 4 s, ...).
    retries: int = Field(2, ge=0, le=10)
    chunk_size: ByteSize = Field(ByteSize(8 * MiB), ge=CHUNK_GRANULARITY, le=1024 * MiB)

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, bucket: str) -> str:
        if not BUCKET_NAME.match(bucket):
            raise ValueError("must be a bucket name: 3 to 222 lowercase letters, digits, '-', '_' or '.', "
                             "starting and ending with a letter or digit")
        return bucket

    @field_validator("token")
    @classmethod
    def _check_token(cls, token: str) -> str:
        if token not in TOKEN_METHODS and not os.path.isfile(token):
            raise ValueError(f"must be one of {', '.join(TOKEN_METHODS)} or the path of a JSON credentials file "
                             "(no such file)")
        return token

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
                raise ValueError("must be an http:// or https:// URL of a host, e.g. http://127.0.0.1:9023")
            url = url.rstrip("/")
        return url

    @field_validator("chunk_size")
    @classmethod
    def _check_chunk_size(cls, size: ByteSize) -> ByteSize:
        if size % CHUNK_GRANULARITY:
            raise ValueError("must be a multiple of 256 KiB (GCS requires it of resumable upload chunks)")
        return size


class GcsBackend(Backend):
    name = "gcs"
    Settings = GcsSettings
    settings: GcsSettings

    @property
    def root(self) -> str:
        return self.settings.bucket

    def describe(self) -> str:
        where = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
        return f"gs://{self.settings.bucket}/{self.settings.prefix}{where}"

    def prepare(self) -> None:
        """Import gcsfs now: with the gRPC client it brings, that takes over half a second,
        which on the I/O loop would stall every download in flight."""
        _filesystem_module()

    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> ThreadedAuthGCSFileSystem:
        from aiohttp import ClientTimeout

        s = self.settings
        filesystem: ThreadedAuthGCSFileSystem = _filesystem_module().ThreadedAuthGCSFileSystem(
            project=s.project or "",  # None makes gcsfs warn; only bucket listing needs one
            token=s.token,
            endpoint_url=s.endpoint_url,
            attempts=s.retries + 1,
            requests_timeout=ClientTimeout(sock_connect=s.connect_timeout, sock_read=s.read_timeout),
            asynchronous=True,
            loop=loop,
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        return filesystem

    keeps_metadata = True  # contentType and the object's custom metadata

    def checksum_scheme(self) -> ChecksumScheme:
        return ChecksumScheme(whole_md5=True)

    def object_metadata(self, info: Mapping[str, Any]) -> ObjectMetadata:
        return metadata_from(info.get("contentType"), info.get("metadata"))

    def object_checksum(self, info: Mapping[str, Any]) -> str | None:
        """The hex MD5 from `md5Hash` (base64); composite objects have none."""
        md5 = info.get("md5Hash")
        if not isinstance(md5, str):
            return None
        try:
            return base64.b64decode(md5, validate=True).hex()
        except binascii.Error:
            return None

    async def list_pages(
        self, fs: AsyncFs, path: str, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The JSON API's object listing under the key prefix in `path`, one response (page)
        at a time, in key order. gcsfs's own listings gather every page first."""
        gcs: ThreadedAuthGCSFileSystem = fs.fs
        bucket, _, key_prefix = path.partition("/")
        page_token = None
        while True:
            page = await gcs.list_page(bucket, key_prefix, page_size, page_token)
            if page.get("items"):
                yield [_object_entry(bucket, item) for item in page["items"]]
            page_token = page.get("nextPageToken")
            if not page_token:
                return

    def pins_streams(self) -> bool:
        return True

    async def open_read(self, fs: AsyncFs, remote_path: str) -> GenerationStream:
        return await GenerationStream.open(fs, remote_path)

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool = False,
                     metadata: ObjectMetadata | None = None) -> None:
        """One request below chunk_size, else a resumable upload holding one chunk in memory;
        a failed resumable upload is cancelled. `metadata`: contentType and custom metadata."""
        content_type = (metadata.content_type if metadata else None) or CONTENT_TYPE
        custom = metadata.user_metadata if metadata else {}
        gcs: ThreadedAuthGCSFileSystem = fs.fs
        bucket, key, _ = gcs.split_path(remote_path)
        size = os.path.getsize(local_path)  # noqa: ASYNC240 - a stat of the local file: microseconds
        chunk = int(self.settings.chunk_size)
        if size <= chunk:
            data = await fs.in_thread(read_range, local_path, 0, size)
            await gcs.upload_in_one(bucket, key, data, content_type, custom)
            return
        await ResumableUpload(fs, local_path, size, chunk, bucket, key, content_type, custom).run()


class GenerationStream(RangedReadStream):
    """Ranged reads of the generation the object had when the stream opened."""

    @classmethod
    def version_of(cls, info: Mapping[str, Any]) -> Any:
        generation = info.get("generation")
        if generation is None:  # every GCS object has one; an emulator without is no store to trust
            raise ValueError(f"GCS gave no generation for {info.get('name')!r}: cannot stream it pinned")
        return str(generation)

    async def _read_range(self, start: int, end: int) -> bytes:
        gcs: ThreadedAuthGCSFileSystem = self._fs.fs
        bucket, key, _ = gcs.split_path(self._path)
        try:
            return await gcs.read_generation(bucket, key, self._version, start, end)
        except FileExistsError as error:
            raise changed_error(self._path, f"HTTP 412, not generation {self._version} any more") from error
        except FileNotFoundError as error:
            raise changed_error(self._path, "HTTP 404, no such object any more") from error


class ResumableUpload(PartUpload[None, None]):
    """A resumable upload, one chunk at a time and in order (GCS takes no other), so one
    chunk is in memory; cancelled if it fails."""

    def __init__(self, fs: AsyncFs, local_path: str, size: int, chunk_size: int, bucket: str, key: str,
                 content_type: str = CONTENT_TYPE, metadata: dict[str, str] | None = None) -> None:
        super().__init__(fs, local_path, size, chunk_size)
        self.gcs: ThreadedAuthGCSFileSystem = fs.fs
        self.bucket, self.key = bucket, key
        self.content_type, self.metadata = content_type, metadata
        self.location = ""

    async def start(self) -> None:
        self.location = await self.gcs.start_resumable_upload(self.bucket, self.key, self.content_type, self.metadata)

    async def send_part(self, number: int, offset: int, data: bytes) -> None:
        await self.gcs.upload_resumable_chunk(self.location, data, offset, self.size, self.content_type)

    async def finish(self, receipts: list[None]) -> None:
        """The last chunk completed the upload."""

    async def abandon(self) -> None:
        try:
            await self.gcs.cancel_resumable_upload(self.location)
        except Exception as error:  # the upload failed already; report, and let that error stand
            logger.warning("could not cancel the resumable upload of gs://%s/%s (GCS drops it after a week): %s",
                           self.bucket, self.key, error)


def _filesystem_module() -> ModuleType:
    try:
        from synapse_objstore.backends import gcs_filesystem
    except ImportError as error:
        raise ConfigError(f"the gcs backend needs gcsfs: pip install 'synapse-objstore[gcs]' ({error})") from None
    return gcs_filesystem


def _object_entry(bucket: str, item: dict[str, Any]) -> dict[str, Any]:
    """An fsspec info dict of one listed object, as gcsfs's info() gives it."""
    updated = item.get("updated")
    return {
        **item,
        "name": f"{bucket}/{item['name']}",
        "type": "file",
        "size": int(item["size"]),
        "mtime": datetime.fromisoformat(updated.replace("Z", "+00:00")) if isinstance(updated, str) else None,
    }


@hookimpl
def register_backends(register: Any) -> None:
    register(GcsBackend)
