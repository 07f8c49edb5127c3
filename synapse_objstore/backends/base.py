"""The backend contract: what a backend must provide, and the generic parts it may reuse.

A backend turns its settings into an fsspec filesystem plus the root path under which the
object keys live. Everything else (key mapping, streaming, verification) is the store's.
A backend may override `upload` and `open_read` where its service offers something better
than fsspec's generic calls (the S3 backend does both), and `checksum_scheme` and
`object_checksum` where its store keeps a checksum of each object's content, and
`keeps_metadata` with `object_metadata` where it stores an upload's `ObjectMetadata`.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import re
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NewType

from fsspec import AbstractFileSystem

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.errors import ObjectChangedError
from synapse_objstore.settings import BackendSettings

if TYPE_CHECKING:  # typing.Self is Python 3.11+, and typing_extensions no runtime dependency
    from typing_extensions import Self

# Objects per page of a listing (S3's own maximum).
LIST_PAGE_SIZE = 1000

# Which configured encryption key reads an object: "current", "previous-1", "previous-2", ...
# (1-based position in the backend's list of previous keys), or "unencrypted". The only way a
# key is named in logs, metrics and output (besides `fingerprint`s), never the key itself.
KeyLabel = NewType("KeyLabel", str)
CURRENT = KeyLabel("current")
UNENCRYPTED = KeyLabel("unencrypted")


@dataclass(frozen=True)
class KeyedObject:
    """What `Backend.key_of` found: the key that reads an object, and the object's info as
    that read gave it (for S3 the HEAD's reply: size, ETag, Content-Type, metadata, storage
    class), which a rewrite keeps and pins to."""

    label: KeyLabel
    info: Mapping[str, Any]

    @property
    def size(self) -> int:
        return int(self.info.get("ContentLength", self.info.get("size", 0)))


@dataclass(frozen=True)
class RewriteResult:
    """What `Backend.rewrite_with_current_key` did: a copy within the store (`server_side`), or
    a rewrite through this host; and the bytes this host downloaded and uploaded (0 server-side)."""

    server_side: bool
    bytes_moved: int


class ObjectStream(abc.ABC):
    """An open object being read front to back, one bounded chunk at a time."""

    size: int | None = None
    # The Content-Type and sha256 stored with the object, where the reply that opened the
    # stream gave them (S3's GET does); None: unknown, ask `object_info`.
    metadata: ObjectMetadata | None = None

    @abc.abstractmethod
    async def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the next bytes; b"" at the end."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Give back the connection or file. Safe to call twice."""

    async def suspend(self) -> None:  # noqa: B027 - a no-op by default, not abstract: see the docstring
        """Let go of any connection while the reader waits; the next read resumes where
        the last one stopped. Streams that hold nothing costly keep this no-op."""


@dataclass(frozen=True)
class ChecksumScheme:
    """What the checksum in an object's info (`Backend.object_checksum`) is a checksum of, so
    that a local file can be compared with its remote copy without reading the copy back.

    The default, `ChecksumScheme()`, says the store gives no checksum to trust: the copy is
    then read back (or trusted on its size, if the caller settles for that).
    """

    # The checksum of a whole object is the hex MD5 of its content.
    whole_md5: bool = False
    # An object uploaded in parts has an S3-style multipart checksum, the hex MD5 of its
    # parts' binary MD5s followed by "-<number of parts>", for one of these part sizes.
    multipart_part_sizes: tuple[int, ...] = ()

    @property
    def gives_checksums(self) -> bool:
        return self.whole_md5 or bool(self.multipart_part_sizes)


@dataclass(frozen=True)
class ObjectMetadata:
    """What an upload stores beside the content, where the backend can (`Backend.keeps_metadata`):
    the Content-Type a CDN or a browser gets, and the hex SHA-256 of the content (S3's
    x-amz-meta-sha256, GCS's object metadata, Azure's blob metadata), with which a copy is
    verified without reading it back where the store's checksum is no MD5 (SSE-C)."""

    content_type: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.content_type is not None and (len(self.content_type) > MAX_CONTENT_TYPE
                                              or not CONTENT_TYPE.match(self.content_type)):
            # Synapse stores what a client sent: one that would not make an HTTP header, or one
            # that would make the store refuse the request (too long), is left out
            object.__setattr__(self, "content_type", None)
        if self.sha256 is not None and not SHA256_HEX.match(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, not {self.sha256!r}")

    @property
    def user_metadata(self) -> dict[str, str]:
        """The user-defined metadata to store (the sha256, where known)."""
        return {SHA256_KEY: self.sha256} if self.sha256 else {}


# The user metadata key of the content's SHA-256 (S3 sends it as x-amz-meta-sha256).
SHA256_KEY = "sha256"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# The longest Content-Type stored: S3 takes 8 KiB of headers in a PUT, Ceph RGW refuses about 16 KiB.
MAX_CONTENT_TYPE = 1024
# A media type (with parameters) of printable ASCII, fit for a Content-Type header.
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;[ -~]*)?$")


def metadata_from(content_type: object, user_metadata: object) -> ObjectMetadata:
    """ObjectMetadata from what a store gives back: a Content-Type and a mapping of user metadata
    (whose keys some stores give in another case). A sha256 that is no hex digest is left out."""
    sha256 = None
    if isinstance(user_metadata, Mapping):
        for key, value in user_metadata.items():
            if str(key).lower() == SHA256_KEY and isinstance(value, str) and SHA256_HEX.match(value.lower()):
                sha256 = value.lower()
    return ObjectMetadata(content_type if isinstance(content_type, str) and content_type else None, sha256)


@dataclass(frozen=True)
class LocalContent:
    """A local file's bytes as they were read for its digest, and their hex MD5: an upload
    given them (`Backend.takes_content`) sends these bytes, without reading the file again."""

    data: bytes
    md5: str


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload begun and never completed nor aborted (an S3 multipart upload): its parts
    are kept, and billed, until it is aborted."""

    path: str  # the filesystem path it was to be written to: root, then the object key
    upload_id: str
    initiated: datetime | None


class Backend(abc.ABC):
    """One kind of object storage.

    Subclasses set `name` (the `backend:` value) and `Settings` (a `BackendSettings`
    subclass). The constructor only keeps the settings: no client is built until the store
    first needs one, on the I/O loop, because Synapse may fork after loading the provider.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[BackendSettings]]
    # Whether the first upload makes the root (a directory tree) rather than needing it to
    # exist (a bucket, a container): the startup check and the CLI then accept a missing root.
    creates_root: ClassVar[bool] = False
    # The `retries` the batch commands (objstore-offload) give each request of this backend
    # when its settings have that key; None: the commands' default. A backend whose waits
    # between retries grow without a cap sets fewer.
    batch_retries: ClassVar[int | None] = None
    # Whether `upload` stores its ObjectMetadata (Content-Type, sha256) and `object_metadata`
    # reads it back. The generic fsspec way (put_file) stores none: fsspec has no metadata API
    # (a local disk, SFTP, ... have nowhere to keep it), and none is claimed.
    keeps_metadata: ClassVar[bool] = False
    # Whether `upload` takes `content`: the file's bytes, read already (`LocalContent`).
    takes_content: ClassVar[bool] = False

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

    async def upload(self, fs: AsyncFs, local_path: str, remote_path: str, if_absent: bool = False,
                     metadata: ObjectMetadata | None = None) -> str | None:
        """Store a local file as an object, replacing any there. Returns the store's checksum
        of what it wrote, in `checksum_scheme`'s form, when its reply carries one (so the
        copy is verified without asking again), else None.

        `metadata`: stored with the object where `keeps_metadata` says so; the generic way
        (fsspec's put_file) has nowhere to put it and drops it. `content` (given only where
        `takes_content` says so): the file's bytes, to send instead of reading the file.

        `if_absent`: the caller would rather not replace an object that is there already, and
        saves a lookup by asking the store to refuse (FileExistsError). A store that cannot be
        asked writes anyway, which is also correct: the local file is the one to keep."""
        await fs.call("put_file", local_path, remote_path)
        return None

    async def object_info(self, fs: AsyncFs, remote_path: str) -> dict[str, Any]:
        """The info dict of one object (`size`, and what `object_checksum` reads);
        FileNotFoundError when there is none. The default is the filesystem's `info`;
        override it where that costs more than one request for a missing object."""
        info: dict[str, Any] = await fs.call("info", remote_path)
        return info

    def pins_streams(self) -> bool:
        """Whether every stream `open_read` returns is pinned to the version of the object it
        opened: an object replaced (or deleted) mid-stream makes the stream fail with
        ObjectChangedError, never hand out bytes of two versions. The default streams pin
        wherever the filesystem's `info` gives a version (`object_version`), which this
        contract cannot know for any filesystem: claim it where the store guarantees it."""
        return False

    async def open_read(self, fs: AsyncFs, remote_path: str) -> ObjectStream:
        """Open an object for streaming; FileNotFoundError when it does not exist."""
        if fs.is_async:
            return await RangedReadStream.open(fs, remote_path)
        return await BlockingFileStream.open(fs, remote_path)

    async def list_pages(
        self, fs: AsyncFs, path: str, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Every object under `path` (a directory, or a key prefix), in pages of at most
        `page_size` fsspec info dicts, each with the object's full path as `name`.

        The generic way walks the tree one directory at a time, so memory holds one
        directory's listing rather than the whole tree's. A blocking filesystem's walk fills
        each page in one call in its thread, across directories: Synapse's layout has one or
        two files per directory, and a page per directory would cost a thread hop per object
        or two."""
        if fs.is_async:
            async for _, _, files in fs.fs._walk(path, detail=True):
                for page in _pages(list(files.values()), page_size):
                    yield page
            return
        entries = (info for _, _, files in fs.fs.walk(path, detail=True) for info in files.values())
        while page := await fs.in_thread(_take, entries, page_size):
            yield page

    async def incomplete_uploads(self, fs: AsyncFs, path: str) -> AsyncGenerator[IncompleteUpload, None]:
        """Uploads under `path` begun and never completed nor aborted. Stores without the
        concept (where a failed write leaves nothing behind) have none."""
        return
        yield  # makes this an async generator that yields nothing

    async def abort_incomplete_upload(self, fs: AsyncFs, upload: IncompleteUpload) -> None:
        """Discard what an incomplete upload kept. Only backends that list some implement it."""
        raise NotImplementedError(f"the {self.name} backend has no incomplete uploads to abort")

    async def close_filesystem(self, fs: AbstractFileSystem) -> None:
        """Close the client session `fs` holds, on the I/O loop. fsspec's async filesystems
        (gcsfs, HTTP) keep theirs in `_session` and close it only from a finalizer at exit,
        when the loop may be gone; override where a filesystem keeps its client elsewhere."""
        session = getattr(fs, "_session", None)
        if session is not None:
            await session.close()

    def key_labels(self) -> tuple[KeyLabel, ...]:
        """The keys reads try, in order. A backend without customer keys (the default) has one."""
        return (CURRENT,)

    def key_fingerprints(self) -> Mapping[KeyLabel, str]:
        """A short public fingerprint of each key that has one, by label, so that an admin can
        tell which key a label is (keys swapped between sse_customer_key and the previous ones
        show); never the key. The default has none."""
        return {}

    def failure_hint(self, error: BaseException) -> str:
        """What an admin should check about a failed call to the store (" (is ... ?)"), added to
        its error where the client's own words say too little; "" (the default) when nothing."""
        return ""

    def watch_key_reads(self, listener: Callable[[KeyLabel], None]) -> None:
        """Have `listener` called (on the I/O loop) with the label of each read that only a key
        other than the current one could make: the provider counts them in a metric."""
        self._key_read_listener = listener

    def _key_read(self, label: KeyLabel) -> None:
        if label != CURRENT:
            listener = getattr(self, "_key_read_listener", None)
            if listener is not None:
                listener(label)

    async def key_of(self, fs: AsyncFs, remote_path: str, first: KeyLabel = CURRENT) -> KeyedObject:
        """Which configured key reads the object, and its info; FileNotFoundError when it does
        not exist. `first`: the key to try first (the one the last object was under, say). A
        backend without customer keys (the default) has only the "current" one."""
        return KeyedObject(CURRENT, await self.object_info(fs, remote_path))

    async def rewrite_with_current_key(self, fs: AsyncFs, remote_path: str, source: KeyedObject) -> RewriteResult:
        """Rewrite an object that `key_of` found under another key so that it reads with the
        current key, keeping its content and metadata, and only the version `key_of` saw. Only
        backends with customer keys implement it."""
        raise NotImplementedError(f"the {self.name} backend has no encryption keys to rotate")

    def checksum_scheme(self) -> ChecksumScheme:
        """What `object_checksum` gives, for these settings. Claim only what the store
        guarantees: a wrong claim makes every copy look changed (or, worse, verified)."""
        return ChecksumScheme()

    def object_checksum(self, info: Mapping[str, Any]) -> str | None:
        """The store's checksum (or ETag) of one object, taken from the filesystem's
        `info()` dict, in the form `checksum_scheme` describes; None if it has none."""
        value = info.get("ETag") or info.get("etag") or info.get("md5")
        return value.strip('"') if isinstance(value, str) else None

    def object_metadata(self, info: Mapping[str, Any]) -> ObjectMetadata:
        """The ObjectMetadata stored with an object, from its `object_info` dict; empty where
        the backend keeps none."""
        return ObjectMetadata()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} {self.settings!r}>"


def _take(entries: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return list(itertools.islice(entries, count))


def _pages(entries: list[dict[str, Any]], page_size: int) -> list[list[dict[str, Any]]]:
    return [entries[start:start + page_size] for start in range(0, len(entries), page_size)]


# The keys of an fsspec info dict that change when an object is replaced: a generation or
# version id, an ETag, a modification or creation time, an inode.
VERSION_KEYS = ("generation", "VersionId", "version_id", "ETag", "etag", "mtime", "LastModified", "last_modified",
                "created", "ino")


def object_version(info: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What tells this version of an object from the next one, from its info dict: the size
    and every `VERSION_KEYS` value it has; None where it has none (the stream cannot pin)."""
    present = [(key, info[key]) for key in VERSION_KEYS if info.get(key) is not None]
    return (info.get("size"), *present) if present else None


def changed_error(path: str, answer: object = None) -> ObjectChangedError:
    """The error of a stream whose object changed; `answer`: what the store said, if anything."""
    said = f" (the store said: {answer})" if answer is not None else ""
    return ObjectChangedError(f"{path} was replaced or deleted while it was streamed: stopped rather than mix "
                              f"two versions of it{said}")


async def _fresh_info(fs: AsyncFs, path: str) -> dict[str, Any]:
    """The object's info as the store gives it now. s3fs, gcsfs and adlfs answer `info` from
    the listings they cached (a `list` fills them, and they never expire): a version from
    there would not see the object replaced by anyone else, so the path is dropped from the
    cache first."""
    fs.fs.invalidate_cache(path)
    info: dict[str, Any] = await fs.call("info", path)
    return info


class RangedReadStream(ObjectStream):
    """Streams an object of an async filesystem by ranged reads, one per chunk.

    Holds no connection between reads, so a paused reader costs nothing on the server. Each
    range is checked against the object's version when it was opened (`_read_range`), so a
    replaced object fails the stream (ObjectChangedError) rather than splice two versions.
    The generic check asks for the object's info after each range: one more request per
    chunk, and none where the info gives no version. Backends whose store takes a condition
    on a ranged read (a GCS generation, an Azure ETag) override `_read_range`.
    """

    def __init__(self, fs: AsyncFs, path: str, size: int, version: Any = None) -> None:
        self._fs, self._path, self.size, self._offset = fs, path, size, 0
        self._version = version

    @classmethod
    async def open(cls, fs: AsyncFs, path: str) -> Self:
        info = await _fresh_info(fs, path)
        if info.get("type") == "directory":
            raise FileNotFoundError(path)
        return cls(fs, path, int(info["size"]), cls.version_of(info))

    @classmethod
    def version_of(cls, info: Mapping[str, Any]) -> Any:
        """What `_read_range` checks each range against."""
        return object_version(info)

    async def read(self, max_bytes: int) -> bytes:
        assert self.size is not None
        if self._offset >= self.size:
            return b""
        end = min(self._offset + max_bytes, self.size)
        data = await self._read_range(self._offset, end)
        self._offset += len(data)
        return data

    async def _read_range(self, start: int, end: int) -> bytes:
        """Bytes `start` to `end` (exclusive) of the version opened; ObjectChangedError if the
        object is another one now."""
        try:
            data: bytes = await self._fs.call("cat_file", self._path, start=start, end=end)
            if self._version is not None and object_version(await _fresh_info(self._fs, self._path)) != self._version:
                raise changed_error(self._path)
        except FileNotFoundError:
            raise changed_error(self._path) from None
        return data

    async def close(self) -> None:
        self._offset = self.size or 0


class BlockingFileStream(ObjectStream):
    """Streams an object of a blocking filesystem; every file call runs in the fs's threads.

    Where the filesystem's info gives a version, it is asked again after each read (a stat,
    for a local file): a file replaced or rewritten since it was opened fails the stream
    (ObjectChangedError) rather than hand out what the read got, which may be the new bytes
    of a file rewritten in place."""

    def __init__(self, fs: AsyncFs, file: BinaryIO, size: int | None, path: str = "", version: Any = None) -> None:
        self._fs, self._file, self.size = fs, file, size
        self._path, self._version = path, version

    @classmethod
    async def open(cls, fs: AsyncFs, path: str) -> BlockingFileStream:
        def open_file() -> tuple[Any, int | None, Any]:
            info = fs.fs.info(path)
            kind = info.get("type")
            if kind == "directory":
                raise FileNotFoundError(path)
            if kind not in ("file", None):  # a FIFO would block the read forever, a device never end
                raise OSError(f"{path} is not a regular file but {kind!r}")
            file = fs.fs.open(path, "rb")
            return file, getattr(file, "size", None), object_version(info)

        file, size, version = await fs.in_thread(open_file)
        return cls(fs, file, size, path, version)

    async def read(self, max_bytes: int) -> bytes:
        data: bytes = await self._fs.in_thread(self._read_checked, max_bytes)
        return data

    def _read_checked(self, max_bytes: int) -> bytes:
        data: bytes = self._file.read(max_bytes)
        if self._version is not None:
            try:
                now = object_version(self._fs.fs.info(self._path))
            except FileNotFoundError:
                now = None
            if now != self._version:
                raise changed_error(self._path)
        return data

    async def close(self) -> None:
        if not self._file.closed:
            await self._fs.in_thread(self._file.close)
