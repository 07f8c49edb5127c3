"""The Synapse media storage provider.

    media_storage_providers:
    - module: synapse_objstore.ObjectStorageProvider
      store_local: true
      store_remote: true
      store_synchronous: true
      config:
        backend: s3        # the default
        bucket: media

Synapse calls `parse_config` at startup and then `cls(hs, parsed)`. Uploads, fetches and
streams all run on the I/O loop; the reactor thread only submits work and writes chunks.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from synapse.config._base import ConfigError as SynapseConfigError
from synapse.logging.context import make_deferred_yieldable
from synapse.media._base import FileInfo, Responder
from synapse.media.storage_provider import StorageProvider

from synapse_objstore.backends.base import Backend, ObjectStream
from synapse_objstore.config import ConfigError, parse_store_config
from synapse_objstore.io_loop import submit
from synapse_objstore.reactor_bridge import run_on_io_loop
from synapse_objstore.responder import ObjectResponder
from synapse_objstore.store import ObjectStore

if TYPE_CHECKING:
    from synapse.server import HomeServer

logger = logging.getLogger(__name__)


class ObjectStorageProvider(StorageProvider):
    def __init__(self, hs: HomeServer, backend: Backend) -> None:
        media_config = hs.config.media
        if not getattr(media_config, "enable_local_media_storage", True):
            raise SynapseConfigError(
                "synapse_objstore.ObjectStorageProvider uploads files from media_store_path, but "
                "enable_local_media_storage is false, so Synapse keeps new media only in temporary "
                "files it does not tell the provider about. Set enable_local_media_storage: true "
                "(and offload old media with objstore-offload) to use this provider."
            )
        self._reactor = hs.get_reactor()
        self._media_store_path = media_config.media_store_path
        backend.prepare()
        self._store = ObjectStore(backend)
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
        local_path = os.path.join(self._media_store_path, path)
        await make_deferred_yieldable(run_on_io_loop(self._reactor, self._store.put_file(local_path, path)))

    async def fetch(self, path: str, file_info: FileInfo) -> Responder | None:
        stream = await make_deferred_yieldable(
            run_on_io_loop(self._reactor, self._store.open_read(path), release=self._close_stream)
        )
        if stream is None:
            return None
        return ObjectResponder(self._reactor, stream, path)

    def _connect_in_background(self) -> None:
        def report(done: Any) -> None:
            if not done.cancelled() and done.exception() is not None:
                logger.warning("could not connect to %s yet: %s", self._store.backend.describe(), done.exception())

        submit(self._store.connect()).add_done_callback(report)

    @staticmethod
    def _close_stream(stream: ObjectStream | None) -> None:
        if stream is not None:
            submit(stream.close())
