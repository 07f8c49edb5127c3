"""The provider with `enable_local_media_storage: false`, inside Synapse's own MediaStorage (its
store_into_file, spam-check callbacks and StorageProviderWrapper), against moto over HTTP.

Synapse writes each new file to a temporary file, which it deletes as soon as the providers'
store_file returned: the provider must upload the bytes all the same, also from a background
upload (store_synchronous false), and leave neither the file nor its disk space behind.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.version import Version
from synapse.api.errors import Codes
from synapse.config._base import ConfigError as SynapseConfigError
from synapse.config.repository import MediaStorageProviderConfig
from synapse.media._base import FileInfo, ThumbnailInfo
from synapse.media.filepath import MediaFilePaths
from synapse.media.storage_provider import FileStorageProviderBackend, StorageProviderWrapper
from synapse.util.module_loader import load_module
from twisted.internet import defer

from servers.moto import MotoServer
from synapse_objstore.errors import UploadNotHeldError
from synapse_objstore.held_uploads import HeldFile, HeldUploads, open_held_file
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from synapse_objstore.testing.synapse_harness import MODULE
from tests.support.s3 import s3_client

if Version(version("matrix-synapse")) < Version("1.146"):
    pytest.skip("this Synapse has no enable_local_media_storage (added in 1.146)", allow_module_level=True)

# Imported once the version is known: older Synapses lack them, or take other arguments.
from synapse.media import media_storage
from synapse.module_api.callbacks.spamchecker_callbacks import SpamCheckerModuleApiCallbacks
from synapse.util.clock import Clock


class Homeserver:
    """What MediaStorage and the provider use of a HomeServer without local media storage:
    Synapse's real spam-checker callbacks (registered through the module API's method) and clock."""

    def __init__(self, reactor: Any, media_store: Path, store_local: bool = True, store_remote: bool = True) -> None:
        self.hostname = "test.localhost"
        self._reactor = reactor
        self._clock = Clock(reactor, server_name=self.hostname)
        self.spam_checker = SpamCheckerModuleApiCallbacks(self)  # type: ignore[arg-type]
        self.wrapper_config = MediaStorageProviderConfig(store_local, store_remote, False)
        media = SimpleNamespace(media_store_path=str(media_store), enable_local_media_storage=False,
                                media_storage_providers=[])
        self.config = SimpleNamespace(media=media, config_files=[])

    def get_reactor(self) -> Any:
        return self._reactor

    def get_clock(self) -> Clock:
        return self._clock

    def get_module_api_callbacks(self) -> Any:
        return SimpleNamespace(spam_checker=self.spam_checker)

    def get_module_api(self) -> Any:
        return SimpleNamespace(register_spam_checker_callbacks=self.spam_checker.register_callbacks)


@pytest.fixture
def temp_dir(tmp_path: Path) -> Iterator[Path]:
    """Synapse's temporary files go here (tempfile's default directory) during the test."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(directory)
    try:
        yield directory
    finally:
        tempfile.tempdir = saved


def open_deleted_files(directory: Path) -> list[str]:
    """Files under `directory` this process still holds open although they were deleted: disk
    space a held upload never gave back."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith(" (deleted)"):
            held.append(target)
    return held


def media_storage_with_provider(hs: Homeserver, media_store: Path, config: dict[str, Any],
                                store_synchronous: bool) -> tuple[Any, Any]:
    """Synapse's MediaStorage with no local provider and ours, loaded as Synapse loads it; and ours."""
    provider_class, parsed = load_module({"module": MODULE, "config": config}, ("media_storage_providers", "<item 0>"))
    hs.config.media.media_storage_providers.append((provider_class, parsed, hs.wrapper_config))
    provider = provider_class(hs, parsed)
    wrapper = StorageProviderWrapper(provider, store_local=hs.wrapper_config.store_local,
                                     store_synchronous=store_synchronous, store_remote=hs.wrapper_config.store_remote)
    storage = media_storage.MediaStorage(hs, MediaFilePaths(str(media_store)), [wrapper], None)  # type: ignore[arg-type]
    return storage, provider


def wait_for_object(s3: Any, bucket: str, key: str, timeout: float = 60.0) -> bytes:
    """The object's bytes once a background upload wrote it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise AssertionError(f"{key} did not appear in the bucket within {timeout} s") from None
            time.sleep(0.05)


REMOTE = FileInfo(server_name="remote.example", file_id="RemoteFileId1")
REMOTE_THUMBNAIL = FileInfo(server_name="remote.example", file_id="RemoteFileId1",
                            thumbnail=ThumbnailInfo(width=32, height=32, method="crop", type="image/jpeg", length=9))
LOCAL = FileInfo(server_name=None, file_id="LocalMediaId123")


@pytest.mark.parametrize("store_synchronous", [True, False], ids=["synchronous", "background"])
def test_remote_media_and_thumbnails_are_uploaded_from_synapses_temporary_files(
        reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
        temp_dir: Path, store_synchronous: bool) -> None:
    hs = Homeserver(reactor, media_store)
    storage, provider = media_storage_with_provider(hs, media_store, {"bucket": bucket,
                                                                      "endpoint_url": moto.endpoint_url,
                                                                      "multipart_threshold": "5MiB",
                                                                      "multipart_chunksize": "5MiB"},
                                                    store_synchronous)
    files = {REMOTE: os.urandom(11 * 1024 * 1024), REMOTE_THUMBNAIL: os.urandom(20_000)}  # a multipart upload too

    for info, data in files.items():
        in_reactor(storage.store_file, io.BytesIO(data), info)

    s3 = s3_client(moto.endpoint_url)
    keys = {REMOTE: "remote_content/remote.example/Re/mo/teFileId1",
            REMOTE_THUMBNAIL: "remote_thumbnail/remote.example/Re/mo/teFileId1/32-32-image-jpeg-crop"}
    for info, data in files.items():
        assert wait_for_object(s3, bucket, keys[info]) == data
    wait_until_released(provider, temp_dir)
    assert list(temp_dir.iterdir()) == []
    assert not any(media_store.iterdir())


def wait_until_released(provider: Any, directory: Path, timeout: float = 60.0) -> None:
    """Wait until the provider holds no temporary file (a background upload closes its own once
    the object is written), then check that none of them stays open."""
    deadline = time.monotonic() + timeout
    while len(provider._held_uploads) or open_deleted_files(directory):
        if time.monotonic() > deadline:
            raise AssertionError(f"still held after {timeout} s: {open_deleted_files(directory)}")
        time.sleep(0.05)


def test_media_the_provider_does_not_store_is_not_held(reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer,
                                                       bucket: str, media_store: Path, temp_dir: Path) -> None:
    """store_remote false: Synapse's wrapper never calls store_file for remote media, so holding
    its temporary file would keep it on disk for nothing."""
    hs = Homeserver(reactor, media_store, store_remote=False)
    storage, provider = media_storage_with_provider(hs, media_store, {"bucket": bucket,
                                                                      "endpoint_url": moto.endpoint_url}, True)

    in_reactor(storage.store_file, io.BytesIO(b"remote bytes"), REMOTE)
    in_reactor(storage.store_file, io.BytesIO(b"local bytes"), LOCAL)

    assert open_deleted_files(temp_dir) == [] and len(provider._held_uploads) == 0
    keys = [item["Key"] for item in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["local_content/Lo/ca/lMediaId123"]


def test_store_file_without_a_held_temporary_file_fails_and_uploads_nothing(
        reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path) -> None:
    hs = Homeserver(reactor, media_store)
    _, provider = media_storage_with_provider(hs, media_store, {"bucket": bucket, "endpoint_url": moto.endpoint_url},
                                              True)

    with pytest.raises(UploadNotHeldError, match=r"enable_local_media_storage: false.*nothing was uploaded"):
        in_reactor(provider.store_file, "local_content/Lo/ca/lMediaId123", LOCAL)
    assert "Contents" not in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket)


def test_upload_rejected_by_a_later_spam_check_is_not_stored_and_its_file_is_closed_on_expiry(
        reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
        temp_dir: Path) -> None:
    hs = Homeserver(reactor, media_store)
    storage, provider = media_storage_with_provider(hs, media_store, {"bucket": bucket,
                                                                      "endpoint_url": moto.endpoint_url}, True)

    async def reject(file: Any, file_info: FileInfo) -> Codes:
        return Codes.FORBIDDEN

    hs.spam_checker.register_callbacks(check_media_file_for_spam=reject)  # runs after the provider's
    with pytest.raises(media_storage.SpamMediaException):
        in_reactor(storage.store_file, io.BytesIO(b"spam"), LOCAL)

    assert "Contents" not in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket)
    assert len(provider._held_uploads) == 1 and len(open_deleted_files(temp_dir)) == 1
    provider._held_uploads._now = lambda: time.monotonic() + 3601  # an hour later
    in_reactor(provider._held_uploads.close_expired)
    wait_until_released(provider, temp_dir)


def test_an_upload_a_provider_before_this_one_failed_gives_its_disk_space_back_at_the_next_upload(
        reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
        temp_dir: Path, tmp_path: Path) -> None:
    """Synapse's `file_system` provider before ours cannot copy from a media store that holds
    nothing: each upload fails before ours is called, and a client retrying a large upload would
    otherwise keep a deleted temporary file held (its disk space taken) for an hour per try."""
    hs = Homeserver(reactor, media_store)
    storage, provider = media_storage_with_provider(hs, media_store, {"bucket": bucket,
                                                                      "endpoint_url": moto.endpoint_url}, True)
    backup = StorageProviderWrapper(FileStorageProviderBackend(hs, str(tmp_path / "backup")),  # type: ignore[arg-type]
                                    store_local=True, store_synchronous=True, store_remote=True)
    ours = storage.storage_providers
    storage.storage_providers = [backup, *ours]
    for _ in range(3):  # the client retries
        with pytest.raises(FileNotFoundError):
            in_reactor(storage.store_file, io.BytesIO(os.urandom(100_000)), LOCAL)
    # each try gave the one before back (closed in a worker thread: within moments, not an hour)
    deadline = time.monotonic() + 5
    while len(open_deleted_files(temp_dir)) > 1:
        assert time.monotonic() < deadline, open_deleted_files(temp_dir)
        time.sleep(0.05)

    storage.storage_providers = ours  # the admin removes the failing provider
    in_reactor(storage.store_file, io.BytesIO(b"next upload"), FileInfo(server_name=None, file_id="NextMediaId45"))
    wait_until_released(provider, temp_dir, timeout=10)
    assert "Contents" in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket)


def test_a_file_passed_over_by_a_crossed_upload_is_kept_for_its_own(tmp_path: Path) -> None:
    """Two requests make the same thumbnail (equal FileInfo) and cross: the second's store_file
    takes the first's file, then Synapse deletes the second's file, whose bytes the first's
    store_file still needs. Synapse having deleted it does not make it an orphan."""
    held = HeldUploads(time.monotonic, expiry=3600)
    paths = []
    for content in (b"first", b"second"):
        path = tmp_path / content.decode()
        path.write_bytes(content)
        paths.append(path)
        held.put(REMOTE_THUMBNAIL, open_held_file(str(path), time.monotonic()))
    taken = held.take(REMOTE_THUMBNAIL)  # the second request's store_file
    assert taken is not None and Path(taken.path).read_bytes() == b"first"
    paths[1].unlink()  # Synapse is done with the second request's file
    held.close_orphans()
    left = held.take(REMOTE_THUMBNAIL)  # the first request's store_file
    assert left is not None and Path(left.path).read_bytes() == b"second"
    taken.close()
    left.close()


def test_held_uploads_are_taken_in_order_and_closed_after_expiry(tmp_path: Path) -> None:
    now = [1000.0]
    held = HeldUploads(lambda: now[0], expiry=60)
    files = []
    for content in (b"first", b"second"):
        path = tmp_path / content.decode()
        path.write_bytes(content)
        files.append(open_held_file(str(path), now[0]))
    for file in files:
        held.put(LOCAL, file)

    first = held.take(LOCAL)
    (tmp_path / "first").unlink()  # as Synapse does once store_file took it: the descriptor keeps the bytes
    assert first is not None and Path(first.path).read_bytes() == b"first"
    first.close()
    now[0] += 61
    held.close_expired()
    assert held.take(LOCAL) is None and len(held) == 0
    wait_closed(files[1])


def wait_closed(file: HeldFile, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not file.closed:
        assert time.monotonic() < deadline, "the expired file was not closed"
        time.sleep(0.02)



def test_a_fetch_waits_for_the_background_upload_of_the_same_file(
        reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
        temp_dir: Path) -> None:
    """Synapse makes an upload's thumbnails from a download of it, at once: with store_synchronous
    false the upload may not be in the bucket yet. Here it is held unanswered by the store until
    the fetch has begun; the fetch must wait for it rather than answer "not found"."""
    path = "local_content/Lo/ca/lMediaId123"
    data = os.urandom(3 * 1024 * 1024)
    with FaultProxy(moto.endpoint_url, Faults(silent=True, match=path)) as proxy:
        hs = Homeserver(reactor, media_store)
        storage, provider = media_storage_with_provider(
            hs, media_store, {"bucket": bucket, "endpoint_url": proxy.endpoint_url, "retries": 3}, False)
        in_reactor(storage.store_file, io.BytesIO(data), LOCAL)  # answers at once: the upload runs on
        wait_for(lambda: proxy.stats().get("requests PUT", 0) >= 1, "the upload to reach the store")
        fetched: dict[str, Any] = {}

        async def fetch() -> None:
            responder = await provider.fetch(path, LOCAL)
            fetched["found"] = responder is not None
            if responder is not None:
                consumer = RecordingConsumer()
                with responder:
                    await responder.write_to_consumer(consumer)
                fetched["body"] = consumer.data

        started = in_reactor(lambda: [defer.ensureDeferred(fetch())])
        proxy.set(silent=False)  # the held upload is reset, and retried
        in_reactor(lambda: started[0], timeout=60)

    assert fetched == {"found": True, "body": data}
    wait_until_released(provider, temp_dir)


def test_a_fetch_waits_for_an_upload_no_longer_than_fetch_deadline(
        reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
        temp_dir: Path) -> None:
    """A background upload to a store that stopped answering runs until store_deadline (minutes);
    a fetch of the same file waits for it at most fetch_deadline, then reads the store itself,
    so that a download never waits for an upload longer than it would wait for the store."""
    path = "local_content/Lo/ca/lMediaId123"
    config = {"bucket": bucket, "endpoint_url": "", "retries": 0, "fetch_deadline": 1, "store_deadline": 120}
    with FaultProxy(moto.endpoint_url, Faults(silent=True, match=path)) as proxy:
        hs = Homeserver(reactor, media_store)
        storage, provider = media_storage_with_provider(
            hs, media_store, {**config, "endpoint_url": proxy.endpoint_url}, False)
        in_reactor(storage.store_file, io.BytesIO(os.urandom(64 * 1024)), LOCAL)
        wait_for(lambda: proxy.stats().get("requests PUT", 0) >= 1, "the upload to reach the store")
        outcome: dict[str, Any] = {}

        async def fetch() -> None:
            try:
                outcome["found"] = await provider.fetch(path, LOCAL) is not None
            except Exception as error:  # the silent store: an error within fetch_deadline
                outcome["error"] = str(error)

        # Without the bound the fetch would wait for the upload's store_deadline (120 s).
        in_reactor(fetch, timeout=60)
        proxy.set(silent=False)

    assert "fetch_deadline" in outcome.get("error", ""), outcome


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def test_a_system_without_proc_self_fd_is_refused_at_startup(reactor: Any, moto: MotoServer, bucket: str,
                                                             media_store: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploading a deleted temporary file needs Linux's /proc/self/fd; elsewhere the provider
    says so at startup rather than fail every upload."""
    monkeypatch.setattr("synapse_objstore.held_uploads.PROC_FD", str(tmp_path / "no-proc"))
    with pytest.raises(SynapseConfigError, match="needs Linux's /proc/self/fd"):
        media_storage_with_provider(Homeserver(reactor, media_store), media_store,
                                    {"bucket": bucket, "endpoint_url": moto.endpoint_url}, True)


def test_no_provider_storing_local_media_is_refused_at_startup(reactor: Any, moto: MotoServer, bucket: str,
                                                               media_store: Path) -> None:
    """Synapse's store_local defaults to false. Without local media storage, an entry that omits it
    would have Synapse answer every upload with an mxc URI and keep its bytes nowhere: the
    provider refuses to start, naming the key, unless another entry of the list stores local media."""
    with pytest.raises(SynapseConfigError, match="no entry of media_storage_providers has store_local: true"):
        media_storage_with_provider(Homeserver(reactor, media_store, store_local=False), media_store,
                                    {"bucket": bucket, "endpoint_url": moto.endpoint_url}, True)

    hs = Homeserver(reactor, media_store, store_local=False)
    other = SimpleNamespace()  # another provider of the list, which does store local media
    other_entry = (type(other), other, MediaStorageProviderConfig(True, False, True))
    hs.config.media.media_storage_providers.append(other_entry)
    _, provider = media_storage_with_provider(hs, media_store,
                                              {"bucket": bucket, "endpoint_url": moto.endpoint_url}, True)
    assert not provider._will_store(LOCAL) and provider._will_store(REMOTE)
