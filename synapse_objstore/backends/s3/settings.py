"""The s3 backend's settings: every key of synapse-s3-storage-provider, meaning what it meant
there, plus timeouts, retries and the multipart upload's sizes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator

from synapse_objstore.settings import BackendSettings

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
    # SSE-C key rotation: earlier keys, newest first, that reads try after sse_customer_key;
    # and whether objects written without SSE-C may remain (reads then try no key last).
    previous_sse_customer_keys: list[SecretStr] = Field(default_factory=list)
    previously_unencrypted: bool = False
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
    # File content all uploads of this store hold in memory at once (the HTTP client sends it
    # as it is, 256 KiB at a time: see s3fs_private.SentAsIsBody); an upload waits for room.
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
            if parts.username is not None or parts.password is not None:
                # S3 signs with access_key_id/secret_access_key, never with the URL's user part; and
                # a password there would show wherever the endpoint is named (errors, logs)
                raise ValueError("must not hold a user or password: set access_key_id and secret_access_key")
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
        self._check_previous_keys()
        return self

    def _check_previous_keys(self) -> None:
        """Each previous key by its position (1-based, as its label "previous-N"), never its value."""
        current = self.sse_customer_key.get_secret_value() if self.sse_customer_key is not None else None
        seen: dict[str, int] = {}
        for position, secret in enumerate(self.previous_sse_customer_keys, start=1):
            value = secret.get_secret_value()
            name = f"previous_sse_customer_keys entry {position}"
            if not value:
                raise ValueError(f"{name} is empty")
            if self.sse_customer_algo == "AES256" and len(value.encode()) != 32:
                raise ValueError(f"{name} must be exactly 32 bytes for AES256 (it has {len(value.encode())})")
            if value == current:
                raise ValueError(f"{name} is the current sse_customer_key: remove it from the previous keys")
            if value in seen:
                raise ValueError(f"{name} repeats entry {seen[value]}: list each previous key once")
            seen[value] = position
        if self.previously_unencrypted and current is None:
            raise ValueError("previously_unencrypted needs sse_customer_key: without SSE-C every object is "
                             "read without a key already")

    def secret_values(self) -> Iterator[str]:
        yield from super().secret_values()
        for key in self.sse_keys():  # botocore logs a key as sent: base64-encoded
            yield key
            yield base64.b64encode(key.encode()).decode()

    def sse_keys(self) -> list[str]:
        """The current SSE-C key, if any, then the previous ones, in order."""
        current = [self.sse_customer_key.get_secret_value()] if self.sse_customer_key is not None else []
        return current + [key.get_secret_value() for key in self.previous_sse_customer_keys]

    @property
    def pool_size(self) -> int:
        """Connections kept to the store. Async downloads hold no thread, so the pool, not
        threadpool_size, is what bounds them; it never goes below 100."""
        return self.max_pool_connections or max(self.threadpool_size, 100)

    def extra_request_args(self) -> dict[str, str]:
        """SSE-C and storage class, for every request whose shape accepts them."""
        args = {"StorageClass": self.storage_class}
        if self.sse_customer_key is not None:
            args["SSECustomerKey"] = self.sse_customer_key.get_secret_value()
            args["SSECustomerAlgorithm"] = self.sse_customer_algo
        return args
