"""Load the provider the way Synapse does, and consumers that behave like HTTP clients."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from synapse.media._base import FileInfo
from synapse.media.storage_provider import StorageProviderWrapper
from synapse.util.module_loader import load_module
from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer

MODULE = "synapse_objstore.ObjectStorageProvider"


def homeserver(reactor: Any, media_store: Path, enable_local_media_storage: bool = True) -> Any:
    """The parts of a HomeServer a storage provider may use."""
    media = SimpleNamespace(media_store_path=str(media_store), enable_local_media_storage=enable_local_media_storage)
    return SimpleNamespace(config=SimpleNamespace(media=media), get_reactor=lambda: reactor)


def load_provider(
    reactor: Any, media_store: Path, config: dict[str, Any], store_synchronous: bool = True
) -> StorageProviderWrapper:
    """What Synapse's media repository does with one `media_storage_providers` entry."""
    provider_class, parsed = load_module({"module": MODULE, "config": config}, ("media_storage_providers", "<item 0>"))
    backend = provider_class(homeserver(reactor, media_store), parsed)
    return StorageProviderWrapper(backend, store_local=True, store_synchronous=store_synchronous, store_remote=True)


def local_media(media_id: str) -> tuple[str, FileInfo]:
    """Synapse's relative path for a local media id, and its FileInfo."""
    return f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}", FileInfo(server_name=None, file_id=media_id)


@implementer(IConsumer)
class RecordingConsumer:
    """A consumer like a client's HTTP connection: records what it is sent, and can pause
    or hang up after its first write."""

    def __init__(self, pause_on_first_write: bool = False, stop_on_first_write: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.producer: IPushProducer | None = None
        self.paused = False
        self.bytes_after_pause = 0
        self._pause_on_first_write = pause_on_first_write
        self._stop_on_first_write = stop_on_first_write

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert streaming, "the provider must be a push producer"
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.paused:
            self.bytes_after_pause += len(data)
        self.chunks.append(data)
        if len(self.chunks) == 1 and self.producer is not None:
            if self._pause_on_first_write:
                self.pause()
            elif self._stop_on_first_write:
                self.producer.stopProducing()

    def pause(self) -> None:
        self.paused = True
        assert self.producer is not None
        self.producer.pauseProducing()

    def resume(self) -> None:
        self.paused = False
        assert self.producer is not None
        self.producer.resumeProducing()
