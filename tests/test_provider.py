"""The provider inside Synapse's own StorageProviderWrapper, against moto over HTTP."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from synapse.config._base import ConfigError as SynapseConfigError
from synapse.util.file_consumer import BackgroundFileConsumer

from servers.moto import MotoServer
from servers.process import free_port
from synapse_objstore.backends.s3 import S3BodyStream
from synapse_objstore.errors import ConsumerPausedTooLongError, ObjectStoreError
from synapse_objstore.responder import CHUNK_SIZE, CHUNKS_IN_FLIGHT, MAX_CHUNK_SIZE
from synapse_objstore.synapse_compat import ConsumerRequestedStopError
from synapse_objstore.testing.consumers import RecordingConsumer
from synapse_objstore.testing.suite import put_media
from synapse_objstore.testing.synapse_harness import load_provider, local_media, start_streaming, wait_for
from tests.support.s3 import s3_client, s3_config
from tests.support.streaming import record_suspends, wait_until, waiting_for_a_paused_client

MiB = 1024 * 1024


def test_store_file_uploads_from_the_media_store(reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer,
                                                 bucket: str, media_store: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, prefix="hs1/"))
    path, info = local_media("abcdefghijkl")
    data = os.urandom(70_000)
    put_media(media_store, path, data)

    in_reactor(provider.store_file, path, info)

    body = s3_client(moto.endpoint_url).get_object(Bucket=bucket, Key="hs1/" + path)["Body"].read()
    assert body == data


def test_fetch_streams_the_object_into_synapses_file_consumer(reactor: Any, in_reactor: Callable[..., Any],
                                                              moto: MotoServer, bucket: str, media_store: Path,
                                                              tmp_path: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    path, info = local_media("streamedmedia1")
    data = os.urandom(3 * MiB + 123)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    target = tmp_path / "copy"

    async def fetch_to_file() -> None:
        responder = await provider.fetch(path, info)
        assert responder is not None
        with responder:
            # as Synapse does: the consumer writes to the file and closes it, in a thread of its own
            consumer = BackgroundFileConsumer(open(target, "wb"), reactor)  # noqa: ASYNC230, SIM115
            await responder.write_to_consumer(consumer)
            await consumer.wait()

    in_reactor(fetch_to_file)
    assert target.read_bytes() == data


def test_missing_object_fetches_as_none(reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str,
                                        media_store: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    path, info = local_media("doesnotexist")
    assert in_reactor(provider.fetch, path, info) is None


def test_pause_stops_reading_and_resume_finishes(reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer,
                                                 bucket: str, media_store: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    path, info = local_media("pausedmedia1")
    data = os.urandom(8 * MiB)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    consumer = RecordingConsumer(pause_on_first_write=True)

    done = start_streaming(in_reactor, provider, path, info, consumer)
    wait_until(in_reactor, waiting_for_a_paused_client(consumer), "the stream to wait for the paused client")
    # A chunk already on its way when the pause came waits for the resume: nothing after it.
    chunks, after_pause = in_reactor(lambda: (len(consumer.chunks), consumer.bytes_after_pause))
    assert chunks == 1 and after_pause == 0
    assert not done.called

    in_reactor(consumer.resume)
    wait_for(in_reactor, done)
    assert consumer.data == data


class PausingLate(RecordingConsumer):
    """A client whose first write takes a while (a busy reactor) and ends with a pause: the
    next chunk is on its way to the reactor before the pause is seen."""

    def write(self, data: bytes) -> None:
        if not self.chunks:
            time.sleep(0.3)
        super().write(data)


def stream_to_late_pauser(in_reactor: Callable[..., Any], provider: Any, moto: MotoServer, bucket: str,
                          name: str) -> tuple[PausingLate, Any, bytes]:
    path, info = local_media(name)
    data = os.urandom(CHUNK_SIZE + 1000)  # two chunks; the second reaches the consumer paused
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    consumer = PausingLate(pause_on_first_write=True)
    return consumer, start_streaming(in_reactor, provider, path, info, consumer), data


def test_a_chunk_that_reaches_a_paused_client_waits_for_the_resume(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path
) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    consumer, done, data = stream_to_late_pauser(in_reactor, provider, moto, bucket, "heldchunkresume")
    wait_until(in_reactor, waiting_for_a_paused_client(consumer), "the stream to wait for the paused client")
    assert in_reactor(lambda: (len(consumer.chunks), consumer.bytes_after_pause)) == (1, 0)
    assert not done.called

    in_reactor(consumer.resume)
    wait_for(in_reactor, done)
    assert consumer.data == data and consumer.bytes_after_pause == 0


def test_a_client_that_never_resumes_a_held_last_chunk_is_let_go(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synapse_objstore import responder

    monkeypatch.setattr(responder, "PAUSE_TIMEOUT", 1.5)
    monkeypatch.setattr(responder, "RELEASE_CONNECTION_AFTER", 60.0)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    started = time.monotonic()  # before the pause begins (inside stream_to_late_pauser), so its timeout counts whole
    consumer, done, data = stream_to_late_pauser(in_reactor, provider, moto, bucket, "heldchunkstall")
    with pytest.raises(ConsumerPausedTooLongError):
        wait_for(in_reactor, done, timeout=60)
    # The bound is the feature: let go after the pause timeout, not after anything longer (such
    # as the connection's release, 60 s here); the margin above 1.5 s is for a loaded machine.
    assert 1.5 <= time.monotonic() - started < 1.5 + 15
    assert 0 < len(consumer.data) < len(data) and data.startswith(consumer.data) and consumer.bytes_after_pause == 0


def test_a_client_paused_longer_than_the_read_timeout_still_gets_every_byte(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read timeout times the store, not the client: a pause is no stall."""
    from synapse_objstore import responder

    # The stream keeps its connection through the pause, so that the read timeout could strike.
    monkeypatch.setattr(responder, "RELEASE_CONNECTION_AFTER", 60.0)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, read_timeout=1))
    path, info = local_media("pausedpastreadtimeout")
    data = os.urandom(8 * MiB)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    consumer = RecordingConsumer(pause_on_first_write=True)

    done = start_streaming(in_reactor, provider, path, info, consumer)
    wait_until(in_reactor, waiting_for_a_paused_client(consumer), "the stream to wait for the paused client")
    time.sleep(3.0)  # three read timeouts
    assert not done.called
    in_reactor(consumer.resume)
    wait_for(in_reactor, done)
    assert consumer.data == data


class PausingOnceAt(RecordingConsumer):
    """A client that keeps up until it has `pause_at` bytes, then pauses (its buffers full)."""

    def __init__(self, pause_at: int, on_pause: Callable[[], None]) -> None:
        super().__init__()
        self.received = 0
        self._pause_at = pause_at
        self._on_pause = on_pause

    def write(self, data: bytes) -> None:
        super().write(data)
        self.received += len(data)
        if self.received >= self._pause_at and self._pause_at:
            self._pause_at = 0
            self._on_pause()
            self.pause()


def test_chunks_grow_while_the_client_keeps_up_and_start_small_after_a_pause(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that keeps up gets the object in ever larger chunks (fewer thread hops); a
    paused one holds at most two chunks read ahead, and after it resumes, chunks start small."""
    asked: list[int] = []  # the chunk size each read of the store's body asked for
    pulled = [0]
    read = S3BodyStream.read

    async def recording_read(self: S3BodyStream, max_bytes: int) -> bytes:
        data = await read(self, max_bytes)
        asked.append(max_bytes)
        pulled[0] += len(data)
        return data

    monkeypatch.setattr(S3BodyStream, "read", recording_read)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    path, info = local_media("growingchunks")
    data = os.urandom(24 * MiB)
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=path, Body=data)
    reads_at_pause: list[int] = []
    consumer = PausingOnceAt(12 * MiB, on_pause=lambda: reads_at_pause.append(len(asked)))

    done = start_streaming(in_reactor, provider, path, info, consumer)
    wait_until(in_reactor, waiting_for_a_paused_client(consumer), "the stream to wait for the paused client")
    written, read_ahead = in_reactor(lambda: (consumer.received, pulled[0] - consumer.received))
    assert written >= 12 * MiB and not done.called
    # at most CHUNKS_IN_FLIGHT chunks; a chunk is pieces adding up to at least its size, each read
    # asking for the whole size, so one can come to just under twice MAX_CHUNK_SIZE
    assert 0 < read_ahead < CHUNKS_IN_FLIGHT * 2 * MAX_CHUNK_SIZE
    assert asked[0] == CHUNK_SIZE and max(asked) == MAX_CHUNK_SIZE > CHUNK_SIZE

    in_reactor(consumer.resume)
    wait_for(in_reactor, done)
    assert consumer.data == data
    assert min(asked[reads_at_pause[0]:]) == CHUNK_SIZE


def test_client_going_away_stops_the_stream_and_frees_the_connection(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path
) -> None:
    # One connection only: if the abandoned stream kept it, the next fetch could never start.
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, max_pool_connections=1, read_timeout=5))
    big_path, big_info = local_media("abandonedmedia")
    small_path, small_info = local_media("nextmedia0001")
    client = s3_client(moto.endpoint_url)
    client.put_object(Bucket=bucket, Key=big_path, Body=os.urandom(16 * MiB))
    client.put_object(Bucket=bucket, Key=small_path, Body=b"next")

    leaving = RecordingConsumer(stop_on_first_write=True)
    done = start_streaming(in_reactor, provider, big_path, big_info, leaving)
    with pytest.raises(ConsumerRequestedStopError):
        wait_for(in_reactor, done)
    assert len(leaving.chunks) == 1 and leaving.producer is None

    staying = RecordingConsumer()
    wait_for(in_reactor, start_streaming(in_reactor, provider, small_path, small_info, staying), timeout=20)
    assert staying.data == b"next"


def test_store_down_fetch_fails_fast_instead_of_hanging(reactor: Any, in_reactor: Callable[..., Any],
                                                        media_store: Path) -> None:
    config = {"bucket": "media", "endpoint_url": f"http://127.0.0.1:{free_port()}", "retries": 1, "connect_timeout": 2}
    provider = load_provider(reactor, media_store, config)
    path, info = local_media("unreachable01")
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match="could not fetch"):
        in_reactor(provider.fetch, path, info)
    assert time.monotonic() - started < 20  # the bound is the feature: fast, not hanging (a 2 s connect timeout)


def test_upload_of_a_missing_local_file_is_a_clear_error(reactor: Any, in_reactor: Callable[..., Any],
                                                         moto: MotoServer, bucket: str, media_store: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    path, info = local_media("notondiskatall")
    with pytest.raises(FileNotFoundError, match=r"local file .*/local_content/no/to/ndiskatall .*does not exist"):
        in_reactor(provider.store_file, path, info)


def test_background_uploads_arrive(reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str,
                                   media_store: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket), store_synchronous=False)
    path, info = local_media("backgroundupl")
    put_media(media_store, path, b"later")
    in_reactor(provider.store_file, path, info)

    client = s3_client(moto.endpoint_url)
    deadline = time.monotonic() + 20
    while "Contents" not in client.list_objects_v2(Bucket=bucket) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get_object(Bucket=bucket, Key=path)["Body"].read() == b"later"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"bucket": "m", "bogus_key": 1}, "unknown key 'bogus_key'"),
        ({"backend": "nosuch"}, "unknown backend 'nosuch'; registered backends: azure, fsspec, gcs, s3"),
        ({"bucket": "m", "threadpool_size": "many"}, "'threadpool_size': Input should be a valid integer"),
        ({}, "'bucket' is required"),
        ({"bucket": "m", "endpoint_url": "localhost:9000"}, "'endpoint_url': must be an http:// or https:// URL"),
    ],
)
def test_bad_config_stops_synapse_with_a_message_naming_the_key(reactor: Any, media_store: Path,
                                                                config: dict[str, Any], named: str) -> None:
    with pytest.raises(SynapseConfigError) as raised:
        load_provider(reactor, media_store, config)
    error = raised.value
    text = " ".join(str(part) for part in (error, error.__cause__, getattr(error, "msg", "")) if part)
    assert named in text


def test_provider_config_repr_hides_secrets() -> None:
    from synapse_objstore.provider import ObjectStorageProvider

    backend = ObjectStorageProvider.parse_config(
        {"bucket": "m", "access_key_id": "AKID", "secret_access_key": "s3cr3t-value", "session_token": "tok-value",
         "sse_customer_key": "K" * 32}
    )
    shown = repr(backend) + str(backend.settings) + repr(backend.settings.model_dump())
    for secret in ("s3cr3t-value", "tok-value", "K" * 32):
        assert secret not in shown
    assert "AKID" in shown


def test_a_file_stored_through_the_provider_fetches_back_whole(reactor: Any, in_reactor: Callable[..., Any],
                                                               moto: MotoServer, bucket: str,
                                                               media_store: Path) -> None:
    """Uploading then fetching through the same provider gives back the bytes uploaded."""
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, prefix="x/"))
    path, info = local_media("roundtripmedia")
    data = os.urandom(1 * MiB)
    put_media(media_store, path, data)
    in_reactor(provider.store_file, path, info)
    (media_store / path).unlink()
    consumer = RecordingConsumer()
    wait_for(in_reactor, start_streaming(in_reactor, provider, path, info, consumer))
    assert io.BytesIO(consumer.data).getvalue() == data


def test_a_long_paused_client_gives_back_its_connection_and_still_gets_every_byte(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synapse_objstore import responder

    monkeypatch.setattr(responder, "RELEASE_CONNECTION_AFTER", 0.3)
    suspends = record_suspends(monkeypatch)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, max_pool_connections=1, read_timeout=5))
    slow_path, slow_info = local_media("slowclientmedia")
    other_path, other_info = local_media("otherclientmed")
    data = os.urandom(6 * MiB)
    client = s3_client(moto.endpoint_url)
    client.put_object(Bucket=bucket, Key=slow_path, Body=data)
    client.put_object(Bucket=bucket, Key=other_path, Body=b"other")

    slow = RecordingConsumer(pause_on_first_write=True)
    slow_done = start_streaming(in_reactor, provider, slow_path, slow_info, slow)
    wait_until(in_reactor, lambda: bool(suspends), "the paused stream to give its connection back")
    # The only pooled connection is free again: another client is served meanwhile.
    other = RecordingConsumer()
    wait_for(in_reactor, start_streaming(in_reactor, provider, other_path, other_info, other), timeout=20)
    assert other.data == b"other"

    in_reactor(slow.resume)
    wait_for(in_reactor, slow_done)
    assert slow.data == data and slow.bytes_after_pause == 0


def test_an_object_replaced_while_its_reader_was_paused_is_not_spliced(
    reactor: Any, in_reactor: Callable[..., Any], moto: MotoServer, bucket: str, media_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synapse_objstore import responder

    monkeypatch.setattr(responder, "RELEASE_CONNECTION_AFTER", 0.3)
    suspends = record_suspends(monkeypatch)
    provider = load_provider(reactor, media_store, s3_config(moto, bucket))
    path, info = local_media("replacedmedia1")
    client = s3_client(moto.endpoint_url)
    client.put_object(Bucket=bucket, Key=path, Body=b"a" * (4 * MiB))

    consumer = RecordingConsumer(pause_on_first_write=True)
    done = start_streaming(in_reactor, provider, path, info, consumer)
    wait_until(in_reactor, lambda: bool(suspends), "the paused stream to give its connection back")
    client.put_object(Bucket=bucket, Key=path, Body=b"b" * (4 * MiB))
    in_reactor(consumer.resume)
    with pytest.raises(ObjectStoreError, match=r"could not stream 'local_content/re/pl/acedmedia1': .*pre-condition"):
        wait_for(in_reactor, done)
    assert b"b" not in consumer.data


def test_delete_removes_the_object_and_a_second_delete_succeeds(reactor: Any, in_reactor: Callable[..., Any],
                                                                moto: MotoServer, bucket: str,
                                                                media_store: Path) -> None:
    provider = load_provider(reactor, media_store, s3_config(moto, bucket, prefix="hs1/"))
    path, info = local_media("deletedmedia1")
    kept_path, _ = local_media("keptmedia0001")
    client = s3_client(moto.endpoint_url)
    client.put_object(Bucket=bucket, Key="hs1/" + path, Body=b"to be deleted")
    client.put_object(Bucket=bucket, Key="hs1/" + kept_path, Body=b"kept")

    in_reactor(provider.backend.delete, path, info)

    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["hs1/" + kept_path]
    assert in_reactor(provider.fetch, path, info) is None
    in_reactor(provider.backend.delete, path, info)  # gone already: still a success


def test_delete_with_the_store_down_fails_fast_naming_the_object(reactor: Any, in_reactor: Callable[..., Any],
                                                                 media_store: Path) -> None:
    config = {"bucket": "media", "endpoint_url": f"http://127.0.0.1:{free_port()}", "retries": 1,
              "connect_timeout": 2, "check_on_startup": False}
    provider = load_provider(reactor, media_store, config)
    path, info = local_media("undeletable01")
    started = time.monotonic()
    expected = r"could not delete 'local_content/un/de/letable01' on s3://media/"
    with pytest.raises(ObjectStoreError, match=expected):
        in_reactor(provider.backend.delete, path, info)
    assert time.monotonic() - started < 20
