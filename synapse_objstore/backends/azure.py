"""Azure Blob Storage through adlfs (`pip install synapse-objstore[azure]`).

    backend: azure
    container: synapse-media
    account_name: mystorageaccount
    account_key: ...          # or sas_token, or connection_string; none of them: Entra ID
                              # (managed identity, environment, Azure CLI) via DefaultAzureCredential

Object keys are `prefix + media path` (blob names) in `container`. A file up to `block_size`
goes up in one Put Blob, a larger one as blocks staged `upload_concurrency` at a time, read
from disk in a worker thread. Either way the upload sets the blob's Content-MD5 (Azure
records one by itself only for a single Put Blob), which is what verification compares.
A stream reads by ranges, each pinned to the ETag the blob had when the stream opened
(If-Match): a blob replaced mid-stream fails the stream (ObjectChangedError) rather than
splice two versions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import os
import re
from collections.abc import AsyncGenerator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fsspec import AbstractFileSystem
from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator

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
    from azure.storage.blob import ContentSettings
    from azure.storage.blob.aio import BlobClient

    from synapse_objstore.backends.azure_filesystem import ClientAzureBlobFileSystem

MiB = 1024 * 1024
# https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


class AzureSettings(BackendSettings):
    container: str = Field(min_length=1)
    account_name: str | None = None
    # default https://<account_name>.blob.core.windows.net; for Azurite
    # http://127.0.0.1:10000/devstoreaccount1
    account_url: str | None = None
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    connection_string: SecretStr | None = None
    connect_timeout: float = Field(10.0, gt=0, le=600)
    read_timeout: float = Field(60.0, gt=0, le=3600)
    # Retries after the first attempt, after 2 s, 4 s, 8 s, ... (the SDK's default waits
    # 15 s, 18 s, 24 s)
    retries: int = Field(2, ge=0, le=10)
    block_size: ByteSize = Field(ByteSize(4 * MiB), ge=64 * 1024, le=4000 * MiB)
    upload_concurrency: int = Field(4, ge=1, le=64)

    @field_validator("container")
    @classmethod
    def _check_container(cls, container: str) -> str:
        if not CONTAINER_NAME.match(container):
            raise ValueError("must be a container name: 3 to 63 lowercase letters, digits and single hyphens, "
                             "starting and ending with a letter or digit")
        return container

    @field_validator("account_name")
    @classmethod
    def _check_account_name(cls, name: str | None) -> str | None:
        if name is not None and not ACCOUNT_NAME.match(name):
            raise ValueError("must be a storage account name: 3 to 24 lowercase letters and digits")
        return name

    @field_validator("account_url")
    @classmethod
    def _check_account_url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                raise ValueError("must be an http:// or https:// URL of the blob service, e.g. "
                                 "https://myaccount.blob.core.windows.net (a SAS goes in sas_token)")
            url = url.rstrip("/")
        return url

    @model_validator(mode="after")
    def _check_credentials(self) -> AzureSettings:
        given = [name for name in ("account_key", "sas_token", "connection_string") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are alternatives: set one of them")
        if self.connection_string is not None:
            if self.account_name is not None or self.account_url is not None:
                raise ValueError("connection_string names the account and its endpoint: "
                                 "leave out account_name and account_url")
        elif self.account_name is None and (self.account_url is None or self.account_key is not None):
            raise ValueError("account_name is required (or a connection_string)" if self.account_url is None
                             else "account_key needs account_name")
        return self

    @property
    def service_url(self) -> str | None:
        """The blob service endpoint, unless the connection string holds it."""
        if self.connection_string is not None:
            return None
        return self.account_url or f"https://{self.account_name}.blob.core.windows.net"


class AzureBackend(Backend):
    name = "azure"
    Settings = AzureSettings
    settings: AzureSettings
    batch_retries = 5  # its waits double without a cap: 2 + 4 + 8 + 16 + 32 s

    @property
    def root(self) -> str:
        return self.settings.container

    def describe(self) -> str:
        where = self.settings.service_url or "the connection string's account"
        return f"azure://{self.settings.container}/{self.settings.prefix} at {where}"

    def prepare(self) -> None:
        """Import adlfs and the Azure SDK now rather than on the I/O loop at first use."""
        _filesystem_module()

    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> ClientAzureBlobFileSystem:
        module = _filesystem_module()
        filesystem: ClientAzureBlobFileSystem = module.ClientAzureBlobFileSystem(
            service_client=self._service_client(),
            asynchronous=True,
            loop=loop,
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        return filesystem

    async def close_filesystem(self, fs: AbstractFileSystem) -> None:
        """adlfs closes its Azure client and credential only from a finalizer at exit."""
        client = fs.client
        await client.close()
        credential_close = getattr(client.credential, "close", None)
        if inspect.iscoroutinefunction(credential_close):
            await credential_close()

    def _service_client(self) -> Any:
        from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

        s = self.settings
        options: dict[str, Any] = {
            "retry_policy": ExponentialRetry(initial_backoff=0, increment_base=2, retry_total=s.retries,
                                             random_jitter_range=1),
            "connection_timeout": s.connect_timeout,
            "read_timeout": s.read_timeout,
            "max_single_put_size": int(s.block_size),
            "max_block_size": int(s.block_size),
        }
        if s.connection_string is not None:
            return BlobServiceClient.from_connection_string(s.connection_string.get_secret_value(), **options)
        url = s.service_url
        assert url is not None  # there is one unless a connection string names it
        return BlobServiceClient(url, credential=self._credential(), **options)

    def _credential(self) -> Any:
        s = self.settings
        if s.account_key is not None:
            from azure.core.credentials import AzureNamedKeyCredential

            assert s.account_name is not None  # the settings' check: an account_key needs it
            return AzureNamedKeyCredential(s.account_name, s.account_key.get_secret_value())
        if s.sas_token is not None:
            from azure.core.credentials import AzureSasCredential

            return AzureSasCredential(s.sas_token.get_secret_value().lstrip("?"))
        from azure.identity.aio import DefaultAzureCredential

        return DefaultAzureCredential()

    def checksum_scheme(self) -> ChecksumScheme:
        return ChecksumScheme(whole_md5=True)

    def object_checksum(self, info: Mapping[str, Any]) -> str | None:
        """The hex Content-MD5, which blobs written by others as blocks may lack."""
        settings = info.get("content_settings") or {}
        md5 = settings.get("content_md5") if isinstance(settings, Mapping) else getattr(settings, "content_md5", None)
        return bytes(md5).hex() if md5 else None

    async def list_pages(
        self, fs: AsyncFs, path: str, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The blobs whose names start with the key prefix in `path`, one response (page) at a
        time, in name order. adlfs's own listings gather every page first."""
        from azure.core.exceptions import ResourceNotFoundError

        container, _, name_prefix = path.partition("/")
        client = fs.fs.client.get_container_client(container)
        pages = client.list_blobs(name_starts_with=name_prefix, results_per_page=page_size).by_page()
        try:
            async for page in pages:
                entries = [_blob_entry(container, blob) async for blob in page]
                if entries:
                    yield entries
        except ResourceNotFoundError as error:
            raise FileNotFoundError(f"no container {container!r}") from error

    def pins_streams(self) -> bool:
        return True

    async def open_read(self, fs: AsyncFs, remote_path: str) -> EtagStream:
        return await EtagStream.open(fs, remote_path)

    keeps_metadata = True  # the blob's Content-Type and metadata

    def object_metadata(self, info: Mapping[str, Any]) -> ObjectMetadata:
        settings = info.get("content_settings") or {}
        content_type = (settings.get("content_type") if isinstance(settings, Mapping)
                        else getattr(settings, "content_type", None))
        return metadata_from(content_type, info.get("metadata"))

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool = False,
                     metadata: ObjectMetadata | None = None) -> None:
        """One Put Blob up to block_size, else staged blocks; with the blob's Content-MD5,
        Content-Type and metadata (the sha256)."""
        content_type = metadata.content_type if metadata else None
        custom = metadata.user_metadata if metadata else {}
        container, blob, _ = fs.fs.split_path(remote_path)
        size = os.path.getsize(local_path)  # noqa: ASYNC240 - a stat of the local file: microseconds
        block = int(self.settings.block_size)
        async with fs.fs.client.get_blob_client(container, blob) as client:
            if size <= block:
                md5 = hashlib.md5()
                data = await fs.in_thread(read_range, local_path, 0, size, md5)
                await client.upload_blob(data, overwrite=True, metadata=custom or None,
                                         content_settings=_with_md5(md5.digest(), content_type))
                return
            await BlockUpload(fs, local_path, size, block, self.settings.upload_concurrency, client,
                              content_type, custom).run()


class EtagStream(RangedReadStream):
    """Ranged reads of the blob with the ETag it had when the stream opened (If-Match)."""

    @classmethod
    def version_of(cls, info: Mapping[str, Any]) -> Any:
        etag = info.get("etag")
        if not etag:  # every blob has one
            raise ValueError(f"Azure gave no ETag for {info.get('name')!r}: cannot stream it pinned")
        return etag

    async def _read_range(self, start: int, end: int) -> bytes:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        container, blob, _ = self._fs.fs.split_path(self._path)
        try:
            async with self._fs.fs.client.get_blob_client(container, blob) as client:
                download = await client.download_blob(offset=start, length=end - start, etag=self._version,
                                                      match_condition=MatchConditions.IfNotModified)
                data: bytes = await download.readall()
        except (ResourceModifiedError, ResourceNotFoundError) as error:
            raise changed_error(self._path, f"HTTP {error.status_code} {getattr(error, 'error_code', '')}") from error
        return data


class BlockUpload(PartUpload[None, None]):
    """Blocks read in order (for the blob's MD5) and staged `upload_concurrency` at a time,
    then committed with that MD5. Staged blocks that are never committed expire after a week,
    so a failed upload leaves nothing to abort."""

    def __init__(self, fs: AsyncFs, local_path: str, size: int, block_size: int, concurrency: int,
                 client: BlobClient, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        self.md5 = hashlib.md5()
        super().__init__(fs, local_path, size, block_size, concurrency=concurrency, digest=self.md5)
        self.client = client
        self.content_type, self.metadata = content_type, metadata

    async def send_part(self, number: int, offset: int, data: bytes) -> None:
        await self.client.stage_block(_block_id(offset), data)

    async def finish(self, receipts: list[None]) -> None:
        from azure.storage.blob import BlobBlock

        blocks = [BlobBlock(_block_id(offset)) for offset in range(0, self.size, self.part_size)]
        await self.client.commit_block_list(blocks, metadata=self.metadata or None,
                                            content_settings=_with_md5(self.md5.digest(), self.content_type))


def _blob_entry(container: str, blob: Any) -> dict[str, Any]:
    """An fsspec info dict of one listed blob, as adlfs's info() gives it."""
    return {
        "name": f"{container}/{blob.name}",
        "type": "file",
        "size": blob.size,
        "etag": blob.etag,
        "last_modified": blob.last_modified,
        "content_settings": {"content_md5": blob.content_settings.content_md5},
    }


def _with_md5(md5: bytes, content_type: str | None = None) -> ContentSettings:
    """The blob's Content-MD5, which verification compares, and its Content-Type."""
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_md5=bytearray(md5), content_type=content_type)


def _block_id(offset: int) -> str:
    """Block ids of one blob must all have the same length."""
    return base64.b64encode(f"{offset:020d}".encode()).decode()


def _filesystem_module() -> ModuleType:
    try:
        from synapse_objstore.backends import azure_filesystem
    except ImportError as error:
        raise ConfigError(f"the azure backend needs adlfs: pip install 'synapse-objstore[azure]' ({error})") from None
    return azure_filesystem


@hookimpl
def register_backends(register: Any) -> None:
    register(AzureBackend)
