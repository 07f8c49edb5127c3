"""The Synapse media storage provider.

    media_storage_providers:
    - module: synapse_objstore.ObjectStorageProvider
      store_local: true
      store_remote: true
      store_synchronous: true
      config:
        backend: s3        # the default
        bucket: media

Synapse calls `parse_config` at startup and then `cls(hs, parsed)`. Uploads, fetches,
deletes and streams all run on the I/O loop; the reactor thread only submits work, writes
chunks and updates the metrics (synapse_objstore/metrics.py).

Uploads come from media_store_path, or, with `enable_local_media_storage: false`, from
Synapse's temporary files, held open from its media spam check on (held_uploads.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from synapse.config._base import ConfigError as SynapseConfigError
from synapse.logging.context import make_deferred_yieldable
from synapse.media._base import FileInfo, Responder
from synapse.media.media_storage import ReadableFileWrapper
from synapse.media.storage_provider import StorageProvider
from synapse.module_api import NOT_SPAM
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from synapse_objstore.backends.base import Backend, ObjectStream
from synapse_objstore.breaker import StoreBreaker
from synapse_objstore.config import parse_store_config
from synapse_objstore.deadline import within_deadline
from synapse_objstore.errors import ConfigError, StoreDownError, UploadNotHeldError
from synapse_objstore.health import check_store
from synapse_objstore.held_uploads import (
    HeldFile,
    HeldUploads,
    close_in_thread,
    open_held_file,
    proc_fd_available,
)
from synapse_objstore.io_loop import submit
from synapse_objstore.local_storage import local_media_storage_enabled
from synapse_objstore.metrics import Operation, ProviderMetrics
from synapse_objstore.reactor_bridge import run_on_io_loop
from synapse_objstore.responder import ObjectResponder
from synapse_objstore.store import ObjectStore
from synapse_objstore.uploads_in_flight import UploadsInFlight

if TYPE_CHECKING:
    from synapse.server import HomeServer

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a temporary file opened by the media spam check waits for its `store_file`. Only
# the spam checks after ours and the storage providers before ours run in between; an hour
# covers a slow upload to another provider, and bounds what a rejected upload keeps on disk.
HOLD_EXPIRY = 3600.0


class ObjectStorageProvider(StorageProvider):
    def __init__(self, hs: HomeServer, backend: Backend) -> None:
        media_config = hs.config.media
        self._reactor = hs.get_reactor()
        self._media_store_path = media_config.media_store_path
        # Uploads Synapse keeps only in temporary files: None while it keeps them on its disk.
        self._held_uploads: HeldUploads | None = None
        self._uploads_in_flight = UploadsInFlight()
        if not local_media_storage_enabled(hs):
            self._hold_uploads_from_spam_check(hs, backend)
        backend.prepare()
        self._store = ObjectStore(backend)
        self._server_name = hs.hostname
        self._metrics = ProviderMetrics(backend.name, hs.hostname)
        backend.watch_key_reads(self._metrics.count_previous_key_read)
        self._breaker = StoreBreaker(
            backend.describe(), self._probe, clock=self._reactor, on_change=self._metrics.store_up.set
        )
        logger.info("media storage provider: %s", backend.describe())
        # Build the client once the reactor runs (after any daemonizing fork), on the I/O
        # loop, so that the first fetch neither waits for it nor blocks the reactor.
        self._reactor.callWhenRunning(self._connect_in_background)

    def __str__(self) -> str:
        return f"ObjectStorageProvider[{self._store.backend.describe()}]"

    @staticmethod
    def parse_config(config: dict[str, Any] | None) -> Backend:
        try:
            return parse_store_config(config)
        except ConfigError as error:
            raise SynapseConfigError(f"synapse_objstore: {error}") from None

    async def store_file(self, path: str, file_info: FileInfo) -> None:
        started = time.perf_counter()
        if self._held_uploads is None:
            local_path = os.path.join(self._media_store_path, path)
            size = await self._call("store", path, lambda: self._put(local_path, path))
        else:
            # Taken before the first await: Synapse deletes its temporary file as soon as this
            # returns (at once, with store_synchronous false), the descriptor keeps the bytes.
            held = self._take_held_upload(path, file_info)
            with self._uploads_in_flight.uploading(path):
                try:
                    size = await self._call("store", path, lambda: self._put_held(held, path))
                except StoreDownError:  # refused before the upload began, which closes it
                    close_in_thread(held)
                    raise
        self._metrics.store_duration.observe(time.perf_counter() - started)
        self._metrics.stored_objects.inc()
        self._metrics.stored_bytes.inc(size)

    async def fetch(self, path: str, file_info: FileInfo) -> Responder | None:
        started = time.perf_counter()
        await self._upload_in_flight(path)
        stream = await self._call("fetch", path, lambda: self._store.open_read(path), release=_close_stream)
        if stream is None:
            self._metrics.fetch_misses.inc()
            return None
        return ObjectResponder(self._reactor, stream, path, self._metrics, started)

    async def _upload_in_flight(self, path: str) -> None:
        """Wait for a background upload of `path` by this process (uploads_in_flight.py), for at
        most fetch_deadline: a fetch never waits longer than that for the store, whatever an
        upload does. After that the fetch goes on, and finds the object or not."""
        uploaded = self._uploads_in_flight.finished(path)
        if uploaded is None:
            return
        seconds = self._store.backend.settings.fetch_deadline
        uploaded.addTimeout(seconds, self._reactor)
        try:
            await make_deferred_yieldable(uploaded)
        except defer.TimeoutError:
            logger.warning("fetch of %r: its upload did not end within fetch_deadline (%g s); reading the store",
                           path, seconds)

    async def delete(self, path: str, file_info: FileInfo) -> None:
        """Delete the object of a media file; one that is gone already counts as deleted.

        For the storage-provider delete hook proposed to Synapse (1.163 calls no provider when
        media is deleted; `objstore-offload reconcile` removes such objects meanwhile)."""
        await self._call("delete", path, lambda: self._store.delete(path))
        self._metrics.deleted_objects.inc()

    async def _call(
        self,
        operation: Operation,
        path: str,
        start: Callable[[], Coroutine[Any, Any, T]],
        release: Callable[[T], Coroutine[Any, Any, None] | None] | None = None,
    ) -> T:
        """Run the store call `start()` on the I/O loop within its deadline (store_deadline
        for an upload, fetch_deadline otherwise), unless the store is down: then fail at once.
        The outcome tells the breaker whether the store answered. `release` gets a result that
        arrives after the caller stopped waiting (the deadline, or Synapse cancelling)."""
        settings = self._store.backend.settings
        try:
            self._breaker.check(operation, path)
        except StoreDownError as error:
            self._metrics.count_failed_fast(operation, error)
            raise
        key, seconds = ("store_deadline", settings.store_deadline) if operation == "store" else (
            "fetch_deadline", settings.fetch_deadline)
        message = (f"could not {operation} {path!r} on {self._store.backend.describe()}: the store did not "
                   f"{'finish' if operation == 'store' else 'answer'} within {key} "
                   f"({seconds:g} s, all retries included)")
        if operation == "store":
            message += "; a large file over a slow link may need a larger store_deadline"
        on_reactor = None if release is None else lambda result: _submit_cleanup(release(result))
        try:
            result = await make_deferred_yieldable(run_on_io_loop(
                self._reactor, within_deadline(start(), seconds, message, release), release=on_reactor
            ))
        except CancelledError:  # Synapse gave up waiting: neither the store's answer nor its failure
            raise
        except Exception as error:
            self._breaker.record(error)
            self._metrics.count_error(operation, error)
            raise
        self._breaker.record(None)
        return result

    def _probe(self) -> Deferred[None]:
        """Ask a store that is down whether it answers again: the startup check's request (for
        S3 a HEAD of the bucket), within fetch_deadline. Runs while the store is down only."""
        seconds = self._store.backend.settings.fetch_deadline
        message = f"{self._store.backend.describe()} did not answer a probe within fetch_deadline ({seconds:g} s)"
        return run_on_io_loop(self._reactor, within_deadline(check_store(self._store), seconds, message))

    async def _put(self, local_path: str, path: str) -> int:
        """Upload the file; its size, for the metrics."""
        await self._store.put_file(local_path, path)
        return os.path.getsize(local_path)  # noqa: ASYNC240 - a stat of the local file: microseconds

    async def _put_held(self, held: HeldFile, path: str) -> int:
        """Upload a held temporary file, then close it; its size, for the metrics."""
        try:
            await self._store.put_file(held.path, path)
            return held.size()
        finally:
            await asyncio.to_thread(held.close)

    def _hold_uploads_from_spam_check(self, hs: HomeServer, backend: Backend) -> None:
        """Get the bytes of each new file from Synapse's media spam check (held_uploads.py)."""
        if not proc_fd_available():
            raise SynapseConfigError(
                "synapse_objstore.ObjectStorageProvider: enable_local_media_storage: false needs Linux's "
                "/proc/self/fd, to upload Synapse's temporary files after Synapse deleted them; it is missing "
                "here. Keep local media storage and free the disk with 'objstore-offload upload --delete'."
            )
        self._stores_local, self._stores_remote = _stored_media(hs, backend)
        if not _any_provider_stores_local_media(hs):
            raise SynapseConfigError(
                "synapse_objstore.ObjectStorageProvider: enable_local_media_storage is false, but no entry "
                "of media_storage_providers has store_local: true (Synapse's default is false), so every file "
                "users upload would be stored nowhere and lost as soon as Synapse deletes its temporary file. "
                "Add 'store_local: true' to this provider's entry (and 'store_remote: true' to keep remote "
                "media)."
            )
        self._held_uploads = HeldUploads(time.monotonic, HOLD_EXPIRY)
        hs.get_module_api().register_spam_checker_callbacks(check_media_file_for_spam=self._hold_upload)

    async def _hold_upload(self, file: ReadableFileWrapper, file_info: FileInfo) -> Literal["NOT_SPAM"]:
        """Synapse's media spam check: never spam; open the temporary file (in a thread) and
        hold it for `store_file`, unless Synapse will not give this file to the provider."""
        assert self._held_uploads is not None
        if not self._will_store(file_info):
            return NOT_SPAM
        opened = asyncio.to_thread(open_held_file, file.path, time.monotonic())
        held = await make_deferred_yieldable(run_on_io_loop(self._reactor, opened, release=close_in_thread))
        self._held_uploads.put(file_info, held)
        return NOT_SPAM

    def _will_store(self, file_info: FileInfo) -> bool:
        """Whether Synapse's StorageProviderWrapper passes this file on to `store_file`."""
        if file_info.url_cache:
            return False
        return self._stores_remote if file_info.server_name else self._stores_local

    def _take_held_upload(self, path: str, file_info: FileInfo) -> HeldFile:
        assert self._held_uploads is not None
        held = self._held_uploads.take(file_info)
        if held is None:
            error = UploadNotHeldError(
                f"cannot store {path!r}: Synapse keeps new media only in temporary files (enable_local_media_storage: "
                f"false) and the media spam check gave the provider no open copy of this one (or it was older than "
                f"{HOLD_EXPIRY:g} s); nothing was uploaded"
            )
            self._metrics.count_error("store", error)
            raise error
        return held

    def _connect_in_background(self) -> None:
        """Build the client and, if `check_on_startup` asks, check the store (health.py)."""
        mode = self._store.backend.settings.check_on_startup
        if mode is False:
            submit(self._store.connect()).add_done_callback(self._report_connection)
            return
        checked = run_on_io_loop(self._reactor, check_store(self._store, self._server_name))
        checked.addCallbacks(
            self._report_check_passed, self._report_check_failed, errbackArgs=(mode == "required",)
        )

    def _report_connection(self, done: concurrent.futures.Future[None]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            logger.warning("could not connect to %s yet: %s", self._store.backend.describe(), error)

    def _report_check_passed(self, _: None) -> None:
        logger.info("check_on_startup: %s answers: OK", self._store.backend.describe())

    def _report_check_failed(self, failure: Failure, required: bool) -> None:
        error = failure.value
        assert error is not None  # a Failure always holds its exception
        self._metrics.count_error("check", error)
        if not required:
            logger.error("check_on_startup: %s; media will fail until this is fixed", error)
            return
        logger.critical("check_on_startup: %s; stopping Synapse (check_on_startup is \"required\")", error)
        _stop_process()



def _stored_media(hs: HomeServer, backend: Backend) -> tuple[bool, bool]:
    """`store_local` and `store_remote` of this provider's media_storage_providers entry (the
    one whose parsed config is `backend`); both true where the entry cannot be found."""
    for _, parsed_config, wrapper_config in getattr(hs.config.media, "media_storage_providers", []):
        if parsed_config is backend:
            return bool(wrapper_config.store_local), bool(wrapper_config.store_remote)
    return True, True


def _any_provider_stores_local_media(hs: HomeServer) -> bool:
    """Whether some entry of media_storage_providers (ours or another) takes local uploads."""
    return any(wrapper_config.store_local
               for _, _, wrapper_config in getattr(hs.config.media, "media_storage_providers", []))


def _close_stream(stream: ObjectStream | None) -> Coroutine[Any, Any, None] | None:
    return None if stream is None else stream.close()


def _submit_cleanup(cleanup: Coroutine[Any, Any, None] | None) -> None:
    if cleanup is not None:
        submit(cleanup)


def _stop_process() -> NoReturn:
    """Stop Synapse the way it stops itself when its own startup fails
    (synapse.app._base.register_start): say so on the real stderr too, then exit with status
    1. A SystemExit raised here would only be caught by the reactor. This ends every
    homeserver in the process, which is what "required" asks for."""
    print("synapse_objstore: the media store check failed; stopping (see the log)", file=sys.__stderr__)
    logging.shutdown()
    os._exit(1)
