"""ObjectStore: the one object store that the provider and the CLI share.

It maps media paths to object keys (`prefix + media path`, as synapse-s3-storage-provider
does), checks paths, and offers put / streamed read / info / delete / list over the
backend's fsspec filesystem. It knows nothing of Synapse. Every coroutine here runs on the
I/O loop (`synapse_objstore.io_loop`); the filesystem is built there on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import (
    CURRENT,
    LIST_PAGE_SIZE,
    Backend,
    IncompleteUpload,
    KeyedObject,
    KeyLabel,
    LocalContent,
    ObjectMetadata,
    ObjectStream,
    RewriteResult,
)
from synapse_objstore.errors import BucketMissingError, LocalFileChangedError, MediaPathError, UnknownKeyError
from synapse_objstore.failures import is_outage, store_error
from synapse_objstore.io_loop import io_loop
from synapse_objstore.redaction import redact, register_secrets

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    media_path: str
    size: int
    etag: str | None = None
    storage_class: str | None = None
    last_modified: datetime | None = None
    # Content-Type and sha256 stored with it, from `info` (a listing gives none) on backends
    # that keep metadata (`Backend.keeps_metadata`); empty otherwise.
    metadata: ObjectMetadata = field(default_factory=ObjectMetadata)

    @property
    def sha256(self) -> str | None:
        return self.metadata.sha256

    @property
    def content_type(self) -> str | None:
        return self.metadata.content_type


def check_media_path(media_path: str) -> str:
    """`media_path` if it is a relative path with no empty, '.' or '..' segment."""
    if not isinstance(media_path, str) or not media_path:
        raise MediaPathError("empty media path")
    if media_path.startswith("/"):
        raise MediaPathError(f"absolute media path {media_path!r}: expected one relative to the media store")
    if "\0" in media_path:
        raise MediaPathError(f"media path {media_path!r} contains a NUL byte")
    if any(segment in ("", ".", "..") for segment in media_path.split("/")):
        raise MediaPathError(f"media path {media_path!r} has an empty, '.' or '..' segment")
    return media_path


class ObjectStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.prefix = backend.settings.prefix
        self._fs: AsyncFs | None = None
        # When the store last answered a call (time.monotonic()): a result, a missing object,
        # an error status; not a timeout or a connection that failed. A batch run watches it
        # to tell a store gone silent from one that is only slow (cli/store_watch.py).
        self.last_answer = time.monotonic()
        # Calls (and stream reads) waiting for the store now, and since when the store has had
        # calls of ours waiting without a break: with last_heard, how long it has held them all
        # unanswered (`unanswered_for`).
        self.in_flight = 0
        self._busy_since = time.monotonic()
        register_secrets(backend.settings.secret_values())

    def __repr__(self) -> str:
        return f"<ObjectStore {self.backend.describe()}>"

    @property
    def last_heard(self) -> float:
        """When the store last answered anything: a call, or one step of a longer call (a part)."""
        return max(self.last_answer, self._fs.step_answered if self._fs is not None else 0.0)

    def unanswered_for(self) -> float:
        """How long (s) the store has held calls of ours with no answer to any of them: 0 when
        none waits."""
        if not self.in_flight:
            return 0.0
        return time.monotonic() - max(self.last_heard, self._busy_since)

    def key(self, media_path: str) -> str:
        """The object key of a media path: exactly `prefix + media path`."""
        return self.prefix + check_media_path(media_path)

    def remote_path(self, media_path: str) -> str:
        return f"{self.backend.root}/{self.key(media_path)}"

    def filesystem(self) -> AsyncFs:
        """The backend's filesystem, built on first use. Call on the I/O loop."""
        if self._fs is None:
            self._fs = AsyncFs(self.backend.create_filesystem(io_loop()), self.backend.settings.threadpool_size)
        return self._fs

    async def connect(self) -> None:
        """Build the filesystem and, where it has one, its client session."""
        fs = self.filesystem().fs
        if hasattr(fs, "set_session"):
            await self._guard("connect to", "/", fs.set_session, asks_the_store=False)

    async def ask_about_root(self) -> None:
        """Ask the store about the root (for S3, a HEAD of the bucket), which touches no object:
        FileNotFoundError when it does not exist."""
        await self._guard("inspect", "/", lambda: self.filesystem().call("info", self.backend.root))

    async def put_file(self, local_path: str, media_path: str, if_absent: bool = False,
                       metadata: ObjectMetadata | None = None, content: LocalContent | None = None) -> str | None:
        """Upload a local file as the object for `media_path`, replacing any object there.
        Returns the store's checksum of the object, where its reply gives one. `if_absent`:
        FileExistsError rather than a replaced object, where the store can say so. `metadata`:
        stored with the object where the backend keeps metadata. `content`: the file's bytes,
        read already, sent instead of the file where the backend takes them."""
        remote_path = self.remote_path(media_path)
        # Only a backend that keeps metadata (takes content) is given it: a plugin written
        # before these arguments existed keeps working.
        extra: dict[str, Any] = {"metadata": metadata} if metadata is not None and self.backend.keeps_metadata else {}
        if content is not None and self.backend.takes_content:
            extra["content"] = content
        try:
            return await self._guard(
                "store", media_path,
                lambda: self.backend.upload(self.filesystem(), local_path, remote_path, if_absent, **extra),
            )
        except FileNotFoundError as error:
            # (with `content`, the file was not read)
            if content is None and not os.path.exists(local_path):  # noqa: ASYNC240 - a stat, on this error path only
                raise FileNotFoundError(f"local file {local_path} (media {media_path!r}) does not exist") from None
            # s3fs reports a missing bucket as a missing file
            raise BucketMissingError(
                f"could not store {media_path!r} on {self.backend.describe()}: the bucket or directory does not exist "
                f"({redact(str(error))})"
            ) from error

    async def open_read(self, media_path: str) -> ObjectStream | None:
        """The object opened for streaming, or None when it does not exist."""
        remote_path = self.remote_path(media_path)
        try:
            stream = await self._guard(
                "fetch", media_path, lambda: self.backend.open_read(self.filesystem(), remote_path)
            )
        except FileNotFoundError:
            return None
        return _HeardStream(stream, self)

    async def info(self, media_path: str) -> ObjectInfo | None:
        """Size and checksum of the object, or None when it does not exist."""
        remote_path = self.remote_path(media_path)
        try:
            raw = await self._guard(
                "inspect", media_path, lambda: self.backend.object_info(self.filesystem(), remote_path)
            )
        except FileNotFoundError:
            return None
        if raw.get("type") == "directory":
            return None
        return self._object_info(media_path, raw)

    async def exists(self, media_path: str) -> bool:
        return await self.info(media_path) is not None

    async def delete(self, media_path: str) -> None:
        """Delete the object; deleting one that does not exist succeeds."""
        remote_path = self.remote_path(media_path)
        with contextlib.suppress(FileNotFoundError):
            await self._guard("delete", media_path, lambda: self.filesystem().call("rm_file", remote_path))

    async def list(self, media_prefix: str = "", page_size: int = LIST_PAGE_SIZE) -> AsyncIterator[ObjectInfo]:
        """Every object under a media directory ('' for all, else ending in '/').

        The listing streams: one page of at most `page_size` objects is fetched at a time,
        and only when the caller has taken the previous one, so a bucket of millions of
        objects costs the memory of one page. Each page is sorted (S3 lists in key order). Each
        object is named by its key after the prefix, exactly: not necessarily a media path."""
        if media_prefix and (not media_prefix.endswith("/") or media_prefix.startswith("/")):
            raise MediaPathError(f"list takes a media directory ending in '/', not {media_prefix!r}")
        if media_prefix:
            check_media_path(media_prefix.rstrip("/"))
        base = f"{self.backend.root}/{self.prefix}"
        stripped = self.filesystem().fs._strip_protocol(base)
        # the '/' that ends the base, where the filesystem's names have it and `stripped` not
        separator = "/" if base.endswith("/") and not stripped.endswith("/") else ""
        pages = self.backend.list_pages(self.filesystem(), base + media_prefix, page_size)
        async with contextlib.aclosing(pages):
            while (page := await self._guard("list", media_prefix or "/", lambda: anext(pages, None))) is not None:
                for raw in sorted(page, key=lambda raw: str(raw["name"])):
                    # the key after the prefix exactly: 'media//x' is '/x', not 'x' (the object
                    # 'media/x' is another), so that no command takes one object for another
                    media_path = str(raw["name"])[len(stripped):].removeprefix(separator)
                    if raw.get("type") != "directory" and media_path and not media_path.endswith("/"):
                        yield self._object_info(media_path, raw)

    async def incomplete_uploads(self) -> AsyncIterator[IncompleteUpload]:
        """Uploads under the prefix that were begun and never completed nor aborted."""
        uploads = self.backend.incomplete_uploads(self.filesystem(), f"{self.backend.root}/{self.prefix}")
        async with contextlib.aclosing(uploads):
            while upload := await self._guard("list incomplete uploads in", "/", lambda: anext(uploads, None)):
                yield upload

    async def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        await self._guard(
            "abort upload", upload.path, lambda: self.backend.abort_incomplete_upload(self.filesystem(), upload)
        )

    async def close(self) -> None:
        if self._fs is not None:
            await self.backend.close_filesystem(self._fs.fs)
            self._fs.close()
            self._fs = None

    async def key_of(self, listed: ObjectInfo, first: KeyLabel = CURRENT) -> KeyedObject:
        """Which configured encryption key reads the object `list` gave as `listed` (SSE-C key
        rotation), trying `first` first, with its info; FileNotFoundError when it does not exist,
        UnknownKeyError when no configured key reads it."""
        remote_path = self._listed_remote_path(listed)
        return await self._guard("inspect", listed.media_path,
                                 lambda: self.backend.key_of(self.filesystem(), remote_path, first),
                                 passed=(UnknownKeyError,))

    async def rewrite_with_current_key(self, listed: ObjectInfo, found: KeyedObject) -> RewriteResult:
        """Rewrite the object `list` gave as `listed`, which `key_of` found under another key,
        under the current one, where it is."""
        remote_path = self._listed_remote_path(listed)
        return await self._guard("rewrite", listed.media_path,
                                 lambda: self.backend.rewrite_with_current_key(self.filesystem(), remote_path, found))

    def _listed_remote_path(self, listed: ObjectInfo) -> str:
        """The remote path of an object as `list` named it: `prefix + media path` exactly, not
        checked as a media path. Whatever is under the prefix is rekeyed where it is: a name
        with an empty, '.' or '..' segment (written by another tool) would be refused by the
        check on every run, and normalised it would name another object."""
        return f"{self.backend.root}/{self.prefix}{listed.media_path}"

    async def _guard(self, action: str, media_path: str, operation: Callable[[], Awaitable[T]],
                     passed: tuple[type[Exception], ...] = (), asks_the_store: bool = True) -> T:
        """Run `operation`; a failure other than a missing object (or one of `passed`) becomes a
        store error of its kind (synapse_objstore.errors) that names the action, the object and
        the store, with any secret redacted: where what the client libraries raise crosses into
        the store. Unless the operation `asks_the_store` nothing (building a client), its outcome
        other than an outage is an answer of the store (`last_answer`, which the silent-store
        watch reads: counting a client built without a request would hide a silent store)."""
        answers: tuple[type[Exception], ...] = (FileNotFoundError, FileExistsError, *passed)
        self._waits(asks_the_store)
        try:
            result = await operation()
        except answers:
            self._answered(asks_the_store)
            raise
        except (MediaPathError, LocalFileChangedError):
            raise
        except Exception as error:
            detail = redact(f"{type(error).__name__}: {error}{self.backend.failure_hint(error)}")
            message = f"could not {action} {media_path!r} on {self.backend.describe()}: {detail}"
            failure = store_error(message, error)
            if not is_outage(failure):
                self._answered(asks_the_store)
            raise failure from error
        finally:
            self._waited(asks_the_store)
        self._answered(asks_the_store)
        return result

    def _waits(self, asks_the_store: bool) -> None:
        if asks_the_store:
            if not self.in_flight:
                self._busy_since = time.monotonic()
            self.in_flight += 1

    def _waited(self, asks_the_store: bool) -> None:
        if asks_the_store:
            self.in_flight -= 1

    def _answered(self, asks_the_store: bool) -> None:
        if asks_the_store:
            self.last_answer = time.monotonic()

    def _object_info(self, media_path: str, raw: dict[str, Any]) -> ObjectInfo:
        modified = raw.get("LastModified") or raw.get("last_modified") or raw.get("mtime") or raw.get("created")
        if isinstance(modified, (int, float)):
            modified = datetime.fromtimestamp(modified).astimezone()
        return ObjectInfo(
            media_path=media_path,
            size=int(raw["size"]),
            etag=self.backend.object_checksum(raw),
            storage_class=raw.get("StorageClass"),
            last_modified=modified if isinstance(modified, datetime) else None,
            metadata=self.backend.object_metadata(raw),
        )


class _HeardStream(ObjectStream):
    """A store's stream whose reads count as calls waiting for the store, and whose bytes as its
    answers: a body that stops coming is a store holding a call unanswered (store_watch.py)."""

    def __init__(self, stream: ObjectStream, store: ObjectStore) -> None:
        self._stream, self._store = stream, store
        self.size, self.metadata = stream.size, stream.metadata

    async def read(self, max_bytes: int) -> bytes:
        self._store._waits(True)
        try:
            data = await self._stream.read(max_bytes)
        finally:
            self._store._waited(True)
        self._store._answered(True)
        return data

    async def close(self) -> None:
        await self._stream.close()

    async def suspend(self) -> None:
        await self._stream.suspend()
