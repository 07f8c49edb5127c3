"""The `fsspec` backend on a local directory, directly and inside Synapse's provider wrapper."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError, ObjectStoreError
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing import BackendConformance
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.suite import open_store, put_media, read_object
from synapse_objstore.testing.synapse_harness import load_provider, local_media, start_streaming, wait_for
from tests.support.files import write
from tests.support.streaming import wait_until


def test_store_on_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "bucket"
    store = ObjectStore(parse_store_config({"backend": "fsspec", "url": f"file://{target}", "prefix": "hs/"}))
    data = os.urandom(700_000)
    run(store.put_file(write(tmp_path / "src", data), "remote_content/matrix.org/ab/cd/ef"))

    assert (target / "hs/remote_content/matrix.org/ab/cd/ef").read_bytes() == data
    assert run(read_object(store, "remote_content/matrix.org/ab/cd/ef")) == data
    info = run(store.info("remote_content/matrix.org/ab/cd/ef"))
    assert info is not None and info.size == len(data)

    async def listed() -> list[str]:
        return [o.media_path async for o in store.list("remote_content/")]

    assert run(listed()) == ["remote_content/matrix.org/ab/cd/ef"]
    run(store.delete("remote_content/matrix.org/ab/cd/ef"))
    run(store.delete("remote_content/matrix.org/ab/cd/ef"))
    assert run(store.open_read("remote_content/matrix.org/ab/cd/ef")) is None


def test_provider_streams_from_a_directory(reactor: Any, in_reactor: Callable[..., Any], tmp_path: Path,
                                           media_store: Path) -> None:
    provider = load_provider(reactor, media_store, {"backend": "fsspec", "url": f"file://{tmp_path}/objects"})
    path, info = local_media("fsspecmedia01")
    data = os.urandom(1_500_000)
    put_media(media_store, path, data)
    in_reactor(provider.store_file, path, info)
    consumer = RecordingConsumer()
    wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))
    assert consumer.data == data
    assert in_reactor(provider.fetch, *local_media("notthereatall")) is None


def test_an_object_truncated_while_it_streams_fails_the_fetch(
    reactor: Any, in_reactor: Callable[..., Any], tmp_path: Path, media_store: Path
) -> None:
    """The stream knew the object it opened: a file truncated since is an error for the
    client, not a short file it would take as whole."""
    provider = load_provider(reactor, media_store, {"backend": "fsspec", "url": f"file://{tmp_path}/objects"})
    path, info = local_media("truncatedmedia")
    data = os.urandom(3_000_000)
    put_media(media_store, path, data)
    in_reactor(provider.store_file, path, info)
    consumer = RecordingConsumer(pause_on_first_write=True)
    done = start_streaming(in_reactor, provider, path, info, consumer)
    wait_until(in_reactor, lambda: consumer.paused, "the client to pause after the first piece")
    os.truncate(tmp_path / "objects" / path, 1_000_000)

    in_reactor(consumer.resume)
    with pytest.raises(ObjectStoreError, match="catedmedia was replaced or deleted while it was streamed"):
        wait_for(in_reactor, done)
    assert len(consumer.data) < len(data) and data.startswith(consumer.data)


@pytest.mark.parametrize("replacement_size", ["same size", "larger", "smaller"])
def test_an_in_memory_object_replaced_mid_stream_is_never_spliced(tmp_path: Path, replacement_size: str) -> None:
    """The conformance suite's case on `memory://`, which declares that it pins (a memory
    file is read from a copy, so the whole original comes whether or not the check runs)."""
    url = f"memory://pinned-{uuid.uuid4().hex}"
    with open_store({"backend": "fsspec", "url": url}) as store:
        try:
            BackendConformance().check_replaced_mid_stream(store, tmp_path, replacement_size)
        finally:
            fs = store.filesystem().fs
            fs.rm(store.backend.root, recursive=True)


@pytest.mark.parametrize(("url", "pins"), [("file:///srv/media", True), ("memory://media", True),
                                           ("gs://bucket/media", True), ("ftp://127.0.0.1/media", False),
                                           ("http://127.0.0.1/media", False)])
def test_the_backend_declares_which_urls_it_streams_pinned(url: str, pins: bool) -> None:
    """Where fsspec's info tells no version apart, the backend says it cannot pin (and the
    conformance suite skips its replaced-object case) rather than claim a guarantee."""
    assert parse_store_config({"backend": "fsspec", "url": url}).pins_streams() is pins


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"backend": "fsspec", "url": "nosuchproto://x"}, "'url': unknown fsspec protocol 'nosuchproto'"),
        ({"backend": "fsspec", "url": "file://relative/dir"}, "must name an absolute directory"),
        ({"backend": "fsspec"}, "'url' is required"),
    ],
)
def test_bad_fsspec_config_is_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_store_config(config)


def test_storage_option_secrets_are_hidden(tmp_path: Path) -> None:
    backend = parse_store_config({"backend": "fsspec", "url": f"file://{tmp_path}",
                                  "storage_options": {"password": "hunter2-secret", "auto_mkdir": True}})
    assert "hunter2-secret" not in repr(backend)
    assert "password" in repr(backend)


def test_a_listing_of_many_small_directories_comes_in_full_pages(tmp_path: Path) -> None:
    """Synapse's layout puts one or two files in each directory. The walk of a local directory
    fills each page across directories in one call to its thread, rather than a page (and a
    thread hop) per directory: a million objects were listed at about 1 ms each that way."""
    target = tmp_path / "bucket"
    for index in range(25):
        (target / f"local_content/ab/c{index:02d}").mkdir(parents=True)
        (target / f"local_content/ab/c{index:02d}/media{index:02d}").write_bytes(b"x")
    backend = parse_store_config({"backend": "fsspec", "url": f"file://{target}"})
    store = ObjectStore(backend)

    async def pages() -> list[int]:
        return [len(page) async for page in backend.list_pages(store.filesystem(), str(target), page_size=10)]

    assert run(pages()) == [10, 10, 5]

    async def listed() -> list[str]:
        return [o.media_path async for o in store.list(page_size=10)]

    assert sorted(run(listed())) == [f"local_content/ab/c{index:02d}/media{index:02d}" for index in range(25)]
