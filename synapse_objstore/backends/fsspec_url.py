"""Any fsspec filesystem, named by URL: `file:///srv/media`, `gcs://bucket/media`, `sftp://host/media`.

    backend: fsspec
    url: file:///srv/synapse-media
    storage_options: {auto_mkdir: true}

`storage_options` go to the filesystem's constructor as they are. An async implementation
is built on the I/O loop; a blocking one runs in a bounded thread pool.

A stream is pinned to the version of the object it opened (an object replaced mid-stream
fails the stream rather than splice two versions) where the filesystem's `info` tells
versions apart: `PINNING_PROTOCOLS`. It checks after each read, so it costs one `info` per
chunk (a stat, for a local file). A local file's version is its size, mtime, ctime and
inode: a rewrite within the filesystem's timestamp granularity that keeps the size goes
unseen (Linux 6.13+ gives a file looked at since its last change a new timestamp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec import AbstractFileSystem
from fsspec.core import split_protocol, strip_protocol
from pydantic import Field, field_validator

from synapse_objstore.backends.base import Backend
from synapse_objstore.hookspecs import hookimpl
from synapse_objstore.settings import BackendSettings

# Protocols whose filesystems' `info` gives a version of each object: local files (mtime,
# ctime, inode), memory (creation time), s3fs (ETag), gcsfs (generation), adlfs (etag).
PINNING_PROTOCOLS = frozenset({"file", "local", "memory", "s3", "s3a", "gs", "gcs", "abfs", "az"})

# storage_options whose values are redacted from reprs and logs
SECRET_OPTION_WORDS = ("secret", "password", "token", "key", "credential", "sas", "passphrase")


class FsspecSettings(BackendSettings):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        protocol, path = split_protocol(url)
        protocol = protocol or "file"
        try:
            filesystem_class = fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise ValueError(f"unknown fsspec protocol '{protocol}'") from None
        except ImportError as error:
            raise ValueError(f"protocol '{protocol}' needs a package that is not installed: {error}") from None
        if filesystem_class.protocol in ("file", ("file", "local")) and not path.startswith("/"):
            raise ValueError("a file:// URL must name an absolute directory, e.g. file:///srv/media")
        return url

    def secret_values(self) -> Iterator[str]:
        yield from super().secret_values()
        if password := urlsplit(self.url).password:  # sftp://user:password@host/...
            yield password
        for name, value in self.storage_options.items():
            if isinstance(value, str) and any(word in name.lower() for word in SECRET_OPTION_WORDS):
                yield value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, without_password(value) if name == "url" else value
        yield "storage_options", sorted(self.storage_options)  # names only: values may be secrets


def without_password(url: str) -> str:
    """`url` with the password of its user part, if any, as ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


class FsspecBackend(Backend):
    name = "fsspec"
    Settings = FsspecSettings
    creates_root = True  # fsspec makes the directories a file goes in
    settings: FsspecSettings

    @property
    def protocol(self) -> str:
        return split_protocol(self.settings.url)[0] or "file"

    @property
    def root(self) -> str:
        return str(strip_protocol(self.settings.url)).rstrip("/")

    def describe(self) -> str:
        root = self.root if "://" in self.root else f"{self.protocol}://{self.root}"  # http(s) keep theirs
        return without_password(f"{root}/{self.settings.prefix}")

    def pins_streams(self) -> bool:
        return self.protocol in PINNING_PROTOCOLS

    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> AbstractFileSystem:
        filesystem_class = fsspec.get_filesystem_class(self.protocol)
        options: dict[str, Any] = {"skip_instance_cache": True, **self.settings.storage_options}
        if filesystem_class.protocol in ("file", ("file", "local")):
            options.setdefault("auto_mkdir", True)
        if getattr(filesystem_class, "async_impl", False):
            options.update(asynchronous=True, loop=loop)
        return filesystem_class(**options)


@hookimpl
def register_backends(register: Any) -> None:
    register(FsspecBackend)
