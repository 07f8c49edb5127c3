"""Synapse media on a local or mounted disk, written so that a crash never leaves half a file.

    media_storage_providers:
    - module: synapse_objstore.ObjectStorageProvider
      store_local: true
      config:
        backend: localdisk
        directory: /mnt/media-archive

Objects live under `directory/objects/`. An upload is copied into `directory/incoming/`,
flushed to disk, and renamed into place (on the same filesystem, so the rename is atomic):
a reader, a listing or `objstore-offload verify` sees the whole old file or the whole new
one, never a partial copy, and a copy that was verified is on the disk, not in a cache.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from pydantic import Field, field_validator

from synapse_objstore.backends import AsyncFs, Backend, BackendSettings, hookimpl

COPY_BLOCK = 1024 * 1024


class LocalDiskSettings(BackendSettings):
    directory: str = Field(min_length=1, description="An absolute directory; objects go to its objects/.")
    fsync: bool = Field(True, description="Flush each object to disk before it counts as stored.")

    @field_validator("directory")
    @classmethod
    def _check_directory(cls, directory: str) -> str:
        if not os.path.isabs(directory):
            raise ValueError("must be an absolute path, e.g. /mnt/media-archive")
        return os.path.normpath(directory)


class LocalDiskBackend(Backend):
    name = "localdisk"
    Settings = LocalDiskSettings
    creates_root = True  # durable_copy makes the directories
    settings: LocalDiskSettings

    @property
    def root(self) -> str:
        return os.path.join(self.settings.directory, "objects")

    @property
    def incoming(self) -> str:
        return os.path.join(self.settings.directory, "incoming")

    def describe(self) -> str:
        return f"localdisk:{self.root}/{self.settings.prefix}"

    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> LocalFileSystem:
        return LocalFileSystem(skip_instance_cache=True)

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool = False) -> None:
        await fs.in_thread(durable_copy, local_path, remote_path, self.incoming, self.settings.fsync)


def durable_copy(source: str, target: str, incoming: str, fsync: bool) -> None:
    """Copy `source` to `target` through a temporary file in `incoming`, renamed into place."""
    os.makedirs(incoming, exist_ok=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(source, "rb") as src:  # before the temporary file: a missing source leaves nothing
        fd, temporary = tempfile.mkstemp(dir=incoming)
        try:
            with os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_BLOCK)
                if fsync:
                    dst.flush()
                    os.fsync(dst.fileno())
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    if fsync:
        _fsync_directory(os.path.dirname(target))


def _fsync_directory(path: str) -> None:
    """Make a rename into `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def register_backends(register: Any) -> None:
    register(LocalDiskBackend)
