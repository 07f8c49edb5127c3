"""Load the provider the way Synapse does, and stream media from it the way Synapse does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from synapse.media._base import FileInfo
from synapse.media.storage_provider import StorageProviderWrapper
from synapse.util.module_loader import load_module
from twisted.internet import defer
from twisted.internet.interfaces import IConsumer

MODULE = "synapse_objstore.ObjectStorageProvider"


def homeserver(reactor: Any, media_store: Path, hostname: str = "test.localhost") -> Any:
    """The parts of a HomeServer a storage provider keeping media on the local disk may use
    (tests/test_no_local_storage.py has one without local media storage)."""
    media = SimpleNamespace(media_store_path=str(media_store), enable_local_media_storage=True)
    return SimpleNamespace(config=SimpleNamespace(media=media), get_reactor=lambda: reactor, hostname=hostname)


def load_provider(
    reactor: Any, media_store: Path, config: dict[str, Any], store_synchronous: bool = True,
    hostname: str = "test.localhost",
) -> StorageProviderWrapper:
    """What Synapse's media repository does with one `media_storage_providers` entry;
    `hostname` is the homeserver's name (the provider labels its metrics with it)."""
    provider_class, parsed = load_module({"module": MODULE, "config": config}, ("media_storage_providers", "<item 0>"))
    backend = provider_class(homeserver(reactor, media_store, hostname=hostname), parsed)
    return StorageProviderWrapper(backend, store_local=True, store_synchronous=store_synchronous, store_remote=True)


def local_media(media_id: str) -> tuple[str, FileInfo]:
    """Synapse's relative path for a local media id, and its FileInfo."""
    return f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}", FileInfo(server_name=None, file_id=media_id)


def start_streaming(
    in_reactor: Callable[..., Any], provider: StorageProviderWrapper, path: str, info: FileInfo, consumer: IConsumer
) -> defer.Deferred[None]:
    """Fetch `path` and start streaming it into `consumer`, as Synapse does for a download.
    Returns the Deferred that fires when the response is done."""
    started: dict[str, Any] = {}

    async def start() -> None:
        responder = await provider.fetch(path, info)
        assert responder is not None, f"{path} was not found in the store"
        responder.__enter__()
        started["done"] = defer.ensureDeferred(write(responder))

    async def write(responder: Any) -> None:
        await responder.write_to_consumer(consumer)

    in_reactor(start)
    done: defer.Deferred[None] = started["done"]
    return done


def wait_for(in_reactor: Callable[..., Any], deferred: defer.Deferred[Any], timeout: float = 30.0) -> Any:
    """The result of a Deferred from `start_streaming`, or TimeoutError after `timeout` seconds."""
    return in_reactor(lambda: deferred, timeout=timeout)
