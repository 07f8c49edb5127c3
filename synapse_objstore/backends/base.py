"""The backend contract: what a backend must provide, and the generic parts it may reuse.

A backend turns its settings into an fsspec filesystem plus the root path under which the
object keys live. Everything else (key mapping, streaming, verification) is the store's.
A backend may override `upload` and `open_read` where its service offers something better
than fsspec's generic calls (the S3 backend does both).
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, BinaryIO, ClassVar

from fsspec import AbstractFileSystem

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.config import BackendSettings


class ObjectStream(abc.ABC):
    """An open object being read front to back, one bounded chunk at a time."""

    size: int | None = None

    @abc.abstractmethod
    async def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the next bytes; b"" at the end."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Give back the connection or file. Safe to call twice."""

    async def suspend(self) -> None:
        """Let go of any connection while the reader waits; the next read resumes where
        the last one stopped. Streams that hold nothing costly keep this no-op."""  # noqa: B027


class Backend(abc.ABC):
    """One kind of object storage.

    Subclasses set `name` (the `backend:` value) and `Settings` (a `BackendSettings`
    subclass). The constructor only keeps the settings: no client is built until the store
    first needs one, on the I/O loop, because Synapse may fork after loading the provider.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[BackendSettings]]

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def prepare(self) -> None:  # noqa: B027
        """Do slow, fork-safe set-up (loading data files, no sockets or threads) now, while
        Synapse starts and before its reactor runs, rather than on the I/O loop later."""

    @abc.abstractmethod
    def create_filesystem(self, loop: asyncio.AbstractEventLoop) -> AbstractFileSystem:
        """Build the filesystem. Runs on the I/O loop `loop`; an async implementation should
        be created with `asynchronous=True, loop=loop`."""

    @property
    @abc.abstractmethod
    def root(self) -> str:
        """The filesystem path under which object keys live (for S3, the bucket)."""

    def describe(self) -> str:
        """Where the media goes, for log lines and errors. Never includes a secret."""
        return f"{self.name}:{self.root}"

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str) -> None:
        await fs.call("put_file", local_path, remote_path)

    async def open_read(self, fs: AsyncFs, remote_path: str) -> ObjectStream:
        """Open an object for streaming; FileNotFoundError when it does not exist."""
        if fs.is_async:
            return await RangedReadStream.open(fs, remote_path)
        return await BlockingFileStream.open(fs, remote_path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} {self.settings!r}>"


class RangedReadStream(ObjectStream):
    """Streams an object of an async filesystem by ranged reads, one per chunk.

    Holds no connection between reads, so a paused reader costs nothing on the server.
    """

    def __init__(self, fs: AsyncFs, path: str, size: int) -> None:
        self._fs, self._path, self.size, self._offset = fs, path, size, 0

    @classmethod
    async def open(cls, fs: AsyncFs, path: str) -> RangedReadStream:
        info = await fs.call("info", path)
        if info.get("type") == "directory":
            raise FileNotFoundError(path)
        return cls(fs, path, int(info["size"]))

    async def read(self, max_bytes: int) -> bytes:
        assert self.size is not None
        if self._offset >= self.size:
            return b""
        end = min(self._offset + max_bytes, self.size)
        data: bytes = await self._fs.call("cat_file", self._path, start=self._offset, end=end)
        self._offset += len(data)
        return data

    async def close(self) -> None:
        self._offset = self.size or 0


class BlockingFileStream(ObjectStream):
    """Streams an object of a blocking filesystem; every file call runs in the fs's threads."""

    def __init__(self, fs: AsyncFs, file: BinaryIO, size: int | None) -> None:
        self._fs, self._file, self.size = fs, file, size

    @classmethod
    async def open(cls, fs: AsyncFs, path: str) -> BlockingFileStream:
        def open_file() -> tuple[Any, int | None]:
            if fs.fs.isdir(path):
                raise FileNotFoundError(path)
            file = fs.fs.open(path, "rb")
            return file, getattr(file, "size", None)

        file, size = await fs.in_thread(open_file)
        return cls(fs, file, size)

    async def read(self, max_bytes: int) -> bytes:
        data: bytes = await self._fs.in_thread(self._file.read, max_bytes)
        return data

    async def close(self) -> None:
        if not self._file.closed:
            await self._fs.in_thread(self._file.close)
