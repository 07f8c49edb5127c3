"""The conformance suite: what every backend must do, exercised as Synapse and the CLI use it.

Subclass `BackendConformance` in a test module and give it a `store_config` fixture: a
provider `config:` block for a fresh, empty location. Every test runs each store call on
the I/O loop under a deadline, so a backend that hangs fails with a message naming the
store instead of stalling the run. The tests that go through Synapse's storage provider skip
when matrix-synapse is not installed; those of an unreachable store and of refused
credentials skip until their fixtures give a config.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from synapse_objstore import io_loop
from synapse_objstore.backends.base import ObjectMetadata
from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError, ObjectChangedError, ObjectStoreError, StoreUnusableError
from synapse_objstore.health import preflight
from synapse_objstore.store import ObjectInfo, ObjectStore
from synapse_objstore.testing.memory import peak_memory
from synapse_objstore.verification import RemoteChecker, State

T = TypeVar("T")

MiB = 1024 * 1024
LARGE_OBJECT_SIZE = 50 * MiB
# What a reader asks for at once (Synapse's responder reads 512 KiB).
READ_SIZE = 256 * 1024

# Server names as Synapse puts them into remote media paths: with a port, internationalised
# (Synapse keeps the Unicode form it was given), and IPv6 literals.
SERVER_NAMES = ["example.com:8448", "例え.テスト", "bücher.example:443", "[2001:db8::1]:8448", "127.0.0.1:8008"]


class BackendConformance:
    """Every test here is what Synapse or objstore-offload relies on a backend to do."""

    # Deadline of one store call against a working store, in seconds.
    call_deadline: ClassVar[float] = 60.0
    # Deadline of uploading or reading the large object.
    large_object_deadline: ClassVar[float] = 300.0
    # How long a call to a store that is down or refuses the credentials may take to fail:
    # a user waits this long for an error page.
    failure_deadline: ClassVar[float] = 30.0
    # Most memory uploading a 50 MiB object may take, in bytes: less than the object, so a
    # backend that holds a whole object in memory fails. A backend that uploads parts in
    # parallel may need more (and says why where it raises this).
    upload_memory_limit: ClassVar[int] = 40 * MiB
    # Most memory streaming a 50 MiB object to a reader (the store's, or Synapse's client) may
    # take: a stream holds a few chunks, never the object.
    stream_memory_limit: ClassVar[int] = 16 * MiB

    # --- the fixtures a backend's test class gives -------------------------------------

    @pytest.fixture
    def store_config(self) -> dict[str, Any]:
        """A provider `config:` block for a fresh, empty location. Override this."""
        raise NotImplementedError(f"{type(self).__name__} must define a `store_config` fixture")

    @pytest.fixture
    def unreachable_store_config(self) -> dict[str, Any] | None:
        """A config block whose service is down (e.g. a closed 127.0.0.1 port), or None."""
        return None

    @pytest.fixture
    def bad_credentials_store_config(self) -> dict[str, Any] | None:
        """A config block for a working service with credentials it refuses, or None."""
        return None

    @pytest.fixture
    def pinning_store_config(self, store_config: dict[str, Any]) -> dict[str, Any]:
        """A config block like `store_config`, for a service that honours the conditions a
        stream pins an object's version with (by default `store_config` itself). Give one
        where the emulator ignores them: gcp-storage-emulator ignores `ifGenerationMatch` on
        downloads, so the GCS tests put the fault proxy (`gcs_generation_match`) in front."""
        return store_config

    # --- the suite's own fixtures -------------------------------------------------------

    @pytest.fixture
    def objstore(self, store_config: dict[str, Any]) -> Iterator[ObjectStore]:
        with open_store(store_config) as objstore:
            yield objstore

    @pytest.fixture
    def objstore_media_store(self, tmp_path: Path) -> Path:
        """Synapse's media_store_path: where the provider uploads from."""
        path = tmp_path / "media_store"
        path.mkdir()
        return path

    @pytest.fixture
    def objstore_provider(self, request: pytest.FixtureRequest, store_config: dict[str, Any],
                          objstore_media_store: Path) -> Any:
        """The backend as Synapse loads it: our provider inside Synapse's StorageProviderWrapper."""
        pytest.importorskip("synapse.media.storage_provider", reason="matrix-synapse is not installed")
        from synapse_objstore.testing.synapse_harness import load_provider

        return load_provider(request.getfixturevalue("objstore_reactor"), objstore_media_store, store_config)

    # --- storing and reading --------------------------------------------------------------

    def test_a_stored_file_reads_back_byte_for_byte(self, objstore: ObjectStore, tmp_path: Path) -> None:
        data = os.urandom(1 * MiB + 12_345)
        media_path = "local_content/ab/cd/efghijklmnop"
        self.call(objstore, objstore.put_file(local_file(tmp_path, data), media_path), "store")

        info = self.call(objstore, objstore.info(media_path), "inspect")
        assert info is not None and info.size == len(data) and info.media_path == media_path
        assert self.call(objstore, objstore.exists(media_path), "inspect")
        assert self.call(objstore, read_object(objstore, media_path, READ_SIZE), "fetch") == data

    def test_a_stream_hands_out_no_more_than_asked_for(self, objstore: ObjectStore, tmp_path: Path) -> None:
        """Backpressure starts here: the responder asks for one chunk at a time, and a stream
        must not read ahead into memory beyond it."""
        data = os.urandom(3 * MiB + 7)
        media_path = "local_content/st/re/amedmedia"
        self.call(objstore, objstore.put_file(local_file(tmp_path, data), media_path), "store")

        async def read_in_small_chunks() -> tuple[list[int], int | None]:
            stream = await objstore.open_read(media_path)
            assert stream is not None
            sizes = []
            try:
                while chunk := await stream.read(64 * 1024):
                    sizes.append(len(chunk))
            finally:
                await stream.close()
                await stream.close()  # closing twice is allowed
            return sizes, stream.size

        sizes, reported_size = self.call(objstore, read_in_small_chunks(), "fetch")
        assert max(sizes) <= 64 * 1024 and sum(sizes) == len(data)
        assert reported_size in (None, len(data))

    @pytest.mark.parametrize("replacement_size", ["same size", "larger", "smaller"])
    def test_an_object_replaced_mid_stream_is_never_spliced(
        self, pinning_store_config: dict[str, Any], tmp_path: Path, replacement_size: str
    ) -> None:
        """A stream gives the whole object it opened, or fails with ObjectChangedError: never
        the start of one version and the rest of another, which Synapse would serve as one
        file. The reader pauses after its first chunk (the stream is suspended, as the
        responder does for a paused client) and the object is replaced meanwhile. A backend
        whose `pins_streams()` says it cannot pin is skipped."""
        with open_store(pinning_store_config) as objstore:
            self.check_replaced_mid_stream(objstore, tmp_path, replacement_size)

    def check_replaced_mid_stream(self, objstore: ObjectStore, tmp_path: Path, replacement_size: str) -> None:
        if not objstore.backend.pins_streams():
            pytest.skip(f"{objstore.backend.describe()} declares that it cannot pin a stream to a version")
        media_path = "local_content/re/pl/acedmidstream"
        original = os.urandom(1 * MiB)
        size = {"same size": len(original), "larger": len(original) + 100_000, "smaller": len(original) // 2}
        replacement = local_file(tmp_path, os.urandom(size[replacement_size]))
        self.call(objstore, objstore.put_file(local_file(tmp_path, original), media_path), "store")

        async def read_across_a_replacement() -> tuple[bytes, ObjectChangedError | None]:
            stream = await objstore.open_read(media_path)
            assert stream is not None
            try:
                got = bytearray(await stream.read(64 * 1024))
                await stream.suspend()
                await objstore.put_file(replacement, media_path)
                try:
                    while chunk := await stream.read(64 * 1024):
                        got += chunk
                except ObjectChangedError as error:
                    return bytes(got), error
            finally:
                await stream.close()
            return bytes(got), None

        got, error = self.call(objstore, read_across_a_replacement(), "fetch")
        if error is None:
            assert got == original, (f"{len(got)} bytes streamed across a replacement are not the object opened: "
                                     "two versions were spliced")
        else:
            assert original.startswith(got) and len(got) < len(original), "bytes of the new version were handed out"
            assert "replaced or deleted while it was streamed" in str(error)
        # and a new stream reads the new version
        new = Path(replacement).read_bytes()
        assert self.call(objstore, read_object(objstore, media_path, READ_SIZE), "fetch") == new

    def test_a_missing_object_is_none_not_an_error(self, objstore: ObjectStore) -> None:
        media_path = "local_content/no/th/ere"
        assert self.call(objstore, objstore.open_read(media_path), "fetch") is None
        assert self.call(objstore, objstore.info(media_path), "inspect") is None
        assert not self.call(objstore, objstore.exists(media_path), "inspect")

    def test_storing_again_replaces_the_object(self, objstore: ObjectStore, tmp_path: Path) -> None:
        media_path = "remote_content/matrix.org/ab/cd/efgh"
        longer = local_file(tmp_path, b"first version, the longer one")
        self.call(objstore, objstore.put_file(longer, media_path), "store")
        self.call(objstore, objstore.put_file(local_file(tmp_path, b"second"), media_path), "store")

        assert self.call(objstore, read_object(objstore, media_path, READ_SIZE), "fetch") == b"second"
        info = self.call(objstore, objstore.info(media_path), "inspect")
        assert info is not None and info.size == len(b"second")
        assert [o.media_path for o in self.call(objstore, list_objects(objstore, ""), "list")] == [media_path]

    def test_an_empty_file_is_an_empty_object(self, objstore: ObjectStore, tmp_path: Path) -> None:
        media_path = "local_content/em/pt/yfile"
        self.call(objstore, objstore.put_file(local_file(tmp_path, b""), media_path), "store")
        info = self.call(objstore, objstore.info(media_path), "inspect")
        assert info is not None and info.size == 0
        assert self.call(objstore, read_object(objstore, media_path, READ_SIZE), "fetch") == b""

    def test_delete_removes_the_object_and_can_be_repeated(
        self, objstore: ObjectStore, tmp_path: Path
    ) -> None:
        media_path = "local_thumbnails/ab/cd/efgh/32-32-image-png-crop"
        kept = "local_thumbnails/ab/cd/efgh/640-480-image-jpeg-scale"
        for path in (media_path, kept):
            self.call(objstore, objstore.put_file(local_file(tmp_path, b"thumbnail"), path), "store")

        self.call(objstore, objstore.delete(media_path), "delete")
        assert self.call(objstore, objstore.info(media_path), "inspect") is None
        assert self.call(objstore, objstore.open_read(media_path), "fetch") is None
        self.call(objstore, objstore.delete(media_path), "delete")  # already gone: still fine
        self.call(objstore, objstore.delete("local_content/ne/ve/rstored"), "delete")
        assert self.call(objstore, read_object(objstore, kept, READ_SIZE), "fetch") == b"thumbnail"

    # --- listing --------------------------------------------------------------------------

    def test_listing_gives_the_objects_under_a_media_directory_and_nothing_else(
        self, objstore: ObjectStore, tmp_path: Path
    ) -> None:
        objects = {
            "local_content/ab/cd/efgh": b"a" * 10,
            "local_thumbnails/ab/cd/efgh/32-32-image-png-crop": b"b" * 20,
            "remote_content/matrix.org/ab/cd/ef": b"c" * 30,
            # shares "remote_content/matrix.org" as a string prefix, not as a directory
            "remote_content/matrix.org.evil/ab/cd/ef": b"d" * 40,
        }
        for media_path, data in objects.items():
            self.call(objstore, objstore.put_file(local_file(tmp_path, data), media_path), "store")

        def listed(media_prefix: str) -> dict[str, int]:
            found = self.call(objstore, list_objects(objstore, media_prefix), "list")
            return {info.media_path: info.size for info in found}

        assert listed("") == {path: len(data) for path, data in objects.items()}
        assert listed("remote_content/") == {
            "remote_content/matrix.org/ab/cd/ef": 30, "remote_content/matrix.org.evil/ab/cd/ef": 40}
        assert listed("remote_content/matrix.org/") == {"remote_content/matrix.org/ab/cd/ef": 30}
        assert listed("remote_thumbnail/") == {}

    def test_objects_outside_the_configured_prefix_are_not_listed(
        self, objstore: ObjectStore, store_config: dict[str, Any], tmp_path: Path
    ) -> None:
        prefix = objstore.prefix
        if not prefix.endswith("/"):
            pytest.skip("store_config sets no prefix ending in '/'")
        # "hs-neighbour/" next to "hs/": the same key prefix "hs", another directory
        with open_store({**store_config, "prefix": prefix.rstrip("/") + "-neighbour/"}) as neighbour:
            theirs, ours = local_file(tmp_path, b"not ours"), local_file(tmp_path, b"ours")
            self.call(neighbour, neighbour.put_file(theirs, "local_content/ne/ig/hbour"), "store")
            self.call(objstore, objstore.put_file(ours, "local_content/ou/rs/media"), "store")

            assert [o.media_path for o in self.call(objstore, list_objects(objstore, ""), "list")] == [
                "local_content/ou/rs/media"]
            assert self.call(objstore, objstore.info("local_content/ne/ig/hbour"), "inspect") is None

    # --- media paths Synapse really produces ----------------------------------------------

    @pytest.mark.parametrize("server_name", SERVER_NAMES)
    def test_remote_media_of_any_server_name_round_trips(
        self, objstore: ObjectStore, tmp_path: Path, server_name: str
    ) -> None:
        media_path = f"remote_content/{server_name}/ab/cd/efghijkl"
        thumbnail = f"remote_thumbnail/{server_name}/ab/cd/efghijkl/32-32-image-png-crop"
        data = os.urandom(5000)
        for path in (media_path, thumbnail):
            self.call(objstore, objstore.put_file(local_file(tmp_path, data), path), "store")

        info = self.call(objstore, objstore.info(media_path), "inspect")
        assert info is not None and info.size == len(data)
        assert self.call(objstore, read_object(objstore, media_path, READ_SIZE), "fetch") == data
        listed = self.call(objstore, list_objects(objstore, f"remote_content/{server_name}/"), "list")
        assert [o.media_path for o in listed] == [media_path]
        self.call(objstore, objstore.delete(media_path), "delete")
        assert self.call(objstore, objstore.info(media_path), "inspect") is None
        assert self.call(objstore, objstore.info(thumbnail), "inspect") is not None

    # --- verification, as objstore-offload verifies before it deletes a local file --------

    def test_verification_tells_a_copy_from_a_changed_or_missing_object(
        self, objstore: ObjectStore, tmp_path: Path
    ) -> None:
        media_path = "local_content/ve/ri/fiedmedia"
        data = os.urandom(200_000)
        local = local_file(tmp_path, data)
        checker = RemoteChecker(objstore)
        trusting_checker = RemoteChecker(objstore, read_back=False)
        digest = self.call(objstore, checker.digest(local), "digest")
        assert self.call(objstore, checker.check(media_path, digest), "verify").state is State.MISSING

        self.call(objstore, objstore.put_file(local, media_path), "store")
        assert self.call(objstore, checker.check(media_path, digest), "verify").state is State.VERIFIED
        trusted = self.call(objstore, trusting_checker.check(media_path, digest), "verify")
        assert trusted.state is State.VERIFIED
        if objstore.backend.checksum_scheme().whole_md5:
            # what the backend claims: a file stored whole has its MD5 in its info
            assert trusted.detail == "size+etag", (
                f"{objstore.backend.describe()} claims MD5s, yet verification found none: {trusted}")

        changed = bytearray(data)
        changed[100_000] ^= 0xFF
        self.call(objstore, objstore.put_file(local_file(tmp_path, bytes(changed)), media_path), "store")
        check = self.call(objstore, checker.check(media_path, digest), "verify")
        assert check.state is State.DIFFERS, check
        if objstore.backend.checksum_scheme().gives_checksums:
            check = self.call(objstore, trusting_checker.check(media_path, digest), "verify")
            assert check.state is State.DIFFERS, check

        self.call(objstore, objstore.put_file(local_file(tmp_path, data[:-1]), media_path), "store")
        check = self.call(objstore, trusting_checker.check(media_path, digest), "verify")
        assert check.state is State.DIFFERS and "size" in check.detail

    # --- metadata -----------------------------------------------------------------------------

    def test_content_type_and_sha256_round_trip_where_the_backend_keeps_metadata(
        self, objstore: ObjectStore, tmp_path: Path
    ) -> None:
        """What `upload` and the provider store beside the content comes back on `info`, for
        a file stored whole and one stored in parts; a backend that keeps no metadata
        (`keeps_metadata` false) gives none back rather than a made-up one."""
        for media_path, size in (("local_content/me/ta/datasmall", 70_000),
                                 ("local_content/me/ta/datalarge", 11 * MiB)):
            data = os.urandom(size)
            sha256 = hashlib.sha256(data).hexdigest()
            metadata = ObjectMetadata("image/webp", sha256)
            self.call(objstore, objstore.put_file(local_file(tmp_path, data), media_path, metadata=metadata), "store")
            info = self.call(objstore, objstore.info(media_path), "inspect")
            assert info is not None
            if not objstore.backend.keeps_metadata:
                assert info.metadata == ObjectMetadata(), f"{objstore.backend.describe()} claims no metadata: {info}"
                continue
            assert (info.content_type, info.sha256) == ("image/webp", sha256), (objstore.backend.describe(), size)
            # the sha256 verifies the copy where no checksum of the store does
            checker = RemoteChecker(objstore)
            digest = self.call(objstore, checker.digest(local_file(tmp_path, data)), "digest")
            check = self.call(objstore, checker.check(media_path, digest, info), "verify")
            assert check.state is State.VERIFIED and check.detail in ("size+etag", "size+sha256"), check

    def test_the_provider_stores_content_type_and_sha256(
        self, objstore_provider: Any, objstore_in_reactor: Callable[..., Any], objstore_media_store: Path,
        objstore: ObjectStore,
    ) -> None:
        """An original's Content-Type is told from its bytes (Synapse has not written its row
        yet when it stores the file), a thumbnail's comes from Synapse's FileInfo."""
        from synapse.media._base import FileInfo, ThumbnailInfo

        from synapse_objstore.testing.synapse_harness import local_media

        png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(5000)
        path, info = local_media("metadatamedia00")
        thumbnail_path = "local_thumbnails/me/ta/datamedia00/32-32-image-jpeg-crop"
        thumbnail_info = FileInfo(server_name=None, file_id="metadatamedia00",
                                  thumbnail=ThumbnailInfo(32, 32, "crop", "image/jpeg", 900))
        thumbnail = os.urandom(900)
        put_media(objstore_media_store, path, png)
        put_media(objstore_media_store, thumbnail_path, thumbnail)
        objstore_in_reactor(objstore_provider.store_file, path, info, timeout=self.call_deadline)
        objstore_in_reactor(objstore_provider.store_file, thumbnail_path, thumbnail_info, timeout=self.call_deadline)

        stored = self.call(objstore, objstore.info(path), "inspect")
        stored_thumbnail = self.call(objstore, objstore.info(thumbnail_path), "inspect")
        assert stored is not None and stored_thumbnail is not None
        if not objstore.backend.keeps_metadata:
            assert stored.metadata == stored_thumbnail.metadata == ObjectMetadata()
            return
        assert stored.metadata == ObjectMetadata("image/png", hashlib.sha256(png).hexdigest())
        assert stored_thumbnail.metadata == ObjectMetadata("image/jpeg", hashlib.sha256(thumbnail).hexdigest())

    # --- a large object -------------------------------------------------------------------

    def test_a_50_mib_object_goes_up_and_down_in_bounded_memory(
        self, objstore: ObjectStore, tmp_path: Path
    ) -> None:
        media_path = "local_content/la/rg/eobject"
        local, md5 = large_local_file(tmp_path, LARGE_OBJECT_SIZE)

        with peak_memory() as upload:
            self.call(objstore, objstore.put_file(local, media_path), "store", self.large_object_deadline)
        with peak_memory() as download:
            size, read_md5 = self.call(objstore, digest_object(objstore, media_path), "fetch",
                                       self.large_object_deadline)

        assert (size, read_md5) == (LARGE_OBJECT_SIZE, md5)
        print(f"50 MiB object: upload peak {upload.bytes / MiB:.1f} MiB, "
              f"streaming peak {download.bytes / MiB:.1f} MiB")
        assert upload.bytes < self.upload_memory_limit, (
            f"uploading 50 MiB took {upload.bytes / MiB:.1f} MiB of memory")
        assert download.bytes < self.stream_memory_limit, (
            f"streaming 50 MiB took {download.bytes / MiB:.1f} MiB of memory")
        checker = RemoteChecker(objstore, read_back=False)
        digest = self.call(objstore, checker.digest(local), "digest")
        assert self.call(objstore, checker.check(media_path, digest), "verify").state is State.VERIFIED

    # --- configuration ----------------------------------------------------------------------

    def test_an_unknown_config_key_is_refused_by_name(self, store_config: dict[str, Any]) -> None:
        with pytest.raises(ConfigError, match="unknown key 'no_such_option'"):
            parse_store_config({**store_config, "no_such_option": 1})

    def test_secrets_stay_out_of_reprs_and_descriptions(self, store_config: dict[str, Any]) -> None:
        backend = parse_store_config(store_config)
        secrets = list(backend.settings.secret_values())
        if not secrets:
            pytest.skip("store_config holds no secret")
        shown = " ".join([repr(backend), str(backend), repr(backend.settings), str(backend.settings),
                          backend.describe(), repr(ObjectStore(backend))])
        assert [s for s in secrets if s in shown] == []

    # --- a store that is down, or refuses the credentials -----------------------------------

    def test_an_unreachable_store_fails_promptly_with_an_error_naming_it(
        self, unreachable_store_config: dict[str, Any] | None, tmp_path: Path
    ) -> None:
        if unreachable_store_config is None:
            pytest.skip("no unreachable_store_config fixture")
        self.check_failing_store(unreachable_store_config, tmp_path)

    def test_refused_credentials_fail_promptly_with_an_error_naming_the_store(
        self, bad_credentials_store_config: dict[str, Any] | None, tmp_path: Path
    ) -> None:
        if bad_credentials_store_config is None:
            pytest.skip("no bad_credentials_store_config fixture")
        self.check_failing_store(bad_credentials_store_config, tmp_path)

    def check_failing_store(self, config: dict[str, Any], tmp_path: Path) -> None:
        """Each call fails within failure_deadline with an ObjectStoreError that names the
        store and none of its secrets. A missing object (None) would be a lie: Synapse would
        answer 404 for media that exists."""
        local = local_file(tmp_path, b"media")
        with open_store(config) as objstore:
            where = objstore.backend.describe()
            secrets = list(objstore.backend.settings.secret_values())
            calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
                "fetch": lambda: objstore.open_read("local_content/ab/cd/ef"),
                "inspect": lambda: objstore.info("local_content/ab/cd/ef"),
                "store": lambda: objstore.put_file(local, "local_content/ab/cd/ef"),
                "delete": lambda: objstore.delete("local_content/ab/cd/ef"),
                "list": lambda: list_objects(objstore, "local_content/"),
            }
            for action, make_call in calls.items():
                with pytest.raises(ObjectStoreError) as raised:
                    self.call(objstore, make_call(), action, self.failure_deadline)
                message = str(raised.value)
                assert where in message, f"{action}: {message!r} does not name {where}"
                assert [s for s in secrets if s in message] == [], f"{action}: a secret is in {message!r}"
            with pytest.raises(StoreUnusableError) as raised_fatal:
                self.call(objstore, preflight(objstore), "check", self.failure_deadline)
            assert where in str(raised_fatal.value)

    # --- through Synapse's storage provider -------------------------------------------------

    def test_synapse_stores_and_streams_media_through_the_provider(
        self, objstore_provider: Any, objstore_in_reactor: Callable[..., Any], objstore_media_store: Path
    ) -> None:
        from synapse_objstore.testing.consumers import RecordingConsumer
        from synapse_objstore.testing.synapse_harness import local_media, start_streaming, wait_for

        path, info = local_media("conformancemedia")
        data = os.urandom(2 * MiB + 99)
        put_media(objstore_media_store, path, data)
        objstore_in_reactor(objstore_provider.store_file, path, info, timeout=self.call_deadline)
        (objstore_media_store / path).unlink()  # from now on only the store has it

        consumer = RecordingConsumer()
        done = start_streaming(objstore_in_reactor, objstore_provider, path, info, consumer)
        wait_for(objstore_in_reactor, done, self.call_deadline)
        assert consumer.data == data
        missing = local_media("notinthestore")
        assert objstore_in_reactor(objstore_provider.fetch, *missing, timeout=self.call_deadline) is None

    def test_a_paused_client_is_sent_nothing_more_until_it_resumes(
        self, objstore_provider: Any, objstore_in_reactor: Callable[..., Any], objstore_media_store: Path
    ) -> None:
        from synapse_objstore.responder import CHUNK_SIZE
        from synapse_objstore.testing.consumers import RecordingConsumer
        from synapse_objstore.testing.synapse_harness import local_media, start_streaming, wait_for

        path, info = local_media("pausingclient1")
        data = os.urandom(12 * CHUNK_SIZE)
        put_media(objstore_media_store, path, data)
        objstore_in_reactor(objstore_provider.store_file, path, info, timeout=self.call_deadline)

        # The pause comes inside the first write, as a socket's buffer fills, and that write is
        # slow: the provider reads on meanwhile, so more data is on its way when the pause
        # comes. A local disk serves it so fast that, with a quick write, the provider would see
        # the pause before it had anything more to send, and a write after the pause would go
        # unnoticed.
        consumer = RecordingConsumer(pause_on_first_write=True, first_write_takes=0.5)
        done = start_streaming(objstore_in_reactor, objstore_provider, path, info, consumer)
        time.sleep(1.0)
        # nothing reaches a paused client (what was on its way waits for the resume)
        chunks, after_pause = objstore_in_reactor(lambda: (len(consumer.chunks), consumer.bytes_after_pause))
        assert after_pause == 0, f"{after_pause} bytes were written to the paused client"
        assert chunks == 1
        time.sleep(0.5)
        assert objstore_in_reactor(lambda: len(consumer.chunks)) == chunks and not done.called

        objstore_in_reactor(consumer.resume)
        wait_for(objstore_in_reactor, done, self.call_deadline)
        assert consumer.data == data

    def test_a_client_that_goes_away_stops_the_stream(
        self, objstore_provider: Any, objstore_in_reactor: Callable[..., Any], objstore_media_store: Path
    ) -> None:
        from synapse_objstore.responder import CHUNK_SIZE
        from synapse_objstore.synapse_compat import ConsumerRequestedStopError
        from synapse_objstore.testing.consumers import RecordingConsumer
        from synapse_objstore.testing.synapse_harness import local_media, start_streaming, wait_for

        path, info = local_media("leavingclient1")
        put_media(objstore_media_store, path, os.urandom(12 * CHUNK_SIZE))
        objstore_in_reactor(objstore_provider.store_file, path, info, timeout=self.call_deadline)

        leaving = RecordingConsumer(stop_on_first_write=True)
        done = start_streaming(objstore_in_reactor, objstore_provider, path, info, leaving)
        with pytest.raises(ConsumerRequestedStopError):
            wait_for(objstore_in_reactor, done, self.call_deadline)
        assert len(leaving.chunks) == 1 and leaving.producer is None
        # and the next client is served
        staying = RecordingConsumer()
        done = start_streaming(objstore_in_reactor, objstore_provider, path, info, staying)
        wait_for(objstore_in_reactor, done, self.call_deadline)
        assert len(staying.data) == 12 * CHUNK_SIZE

    def test_synapse_streams_a_50_mib_object_in_bounded_memory(
        self, objstore_provider: Any, objstore_in_reactor: Callable[..., Any], objstore_media_store: Path,
        tmp_path: Path,
    ) -> None:
        from synapse_objstore.testing.consumers import DigestingConsumer
        from synapse_objstore.testing.synapse_harness import local_media, start_streaming, wait_for

        path, info = local_media("largemediaobject")
        local, md5 = large_local_file(tmp_path, LARGE_OBJECT_SIZE)
        (objstore_media_store / path).parent.mkdir(parents=True)
        os.replace(local, objstore_media_store / path)
        objstore_in_reactor(objstore_provider.store_file, path, info, timeout=self.large_object_deadline)

        consumer = DigestingConsumer()
        with peak_memory() as streaming:
            done = start_streaming(objstore_in_reactor, objstore_provider, path, info, consumer)
            wait_for(objstore_in_reactor, done, self.large_object_deadline)
        assert (consumer.size, consumer.md5) == (LARGE_OBJECT_SIZE, md5)
        print(f"50 MiB object served by Synapse: streaming peak {streaming.bytes / MiB:.1f} MiB")
        assert streaming.bytes < self.stream_memory_limit, (
            f"serving 50 MiB took {streaming.bytes / MiB:.1f} MiB of memory")

    def test_synapse_gets_an_error_not_a_hang_from_an_unreachable_store(
        self, unreachable_store_config: dict[str, Any] | None, request: pytest.FixtureRequest,
        objstore_media_store: Path,
    ) -> None:
        if unreachable_store_config is None:
            pytest.skip("no unreachable_store_config fixture")
        pytest.importorskip("synapse.media.storage_provider", reason="matrix-synapse is not installed")
        from synapse_objstore.testing.synapse_harness import load_provider, local_media

        in_reactor = request.getfixturevalue("objstore_in_reactor")
        reactor = request.getfixturevalue("objstore_reactor")
        provider = load_provider(reactor, objstore_media_store, unreachable_store_config)
        path, info = local_media("unreachablemedia")
        put_media(objstore_media_store, path, b"media")
        for call in (provider.fetch, provider.store_file):
            started = time.monotonic()
            with pytest.raises(ObjectStoreError):
                in_reactor(call, path, info, timeout=self.failure_deadline)
            assert time.monotonic() - started < self.failure_deadline

    # --- helpers ------------------------------------------------------------------------

    def call(self, store: ObjectStore, coro: Coroutine[Any, Any, T], action: str,
             deadline: float | None = None) -> T:
        """Run one store call on the I/O loop; one that outlives its deadline fails the test
        with a message naming the store."""
        deadline = self.call_deadline if deadline is None else deadline
        future = io_loop.submit(coro)
        try:
            return future.result(deadline)
        except concurrent.futures.TimeoutError:
            if future.done():  # the call itself raised TimeoutError
                raise
            future.cancel()
            pytest.fail(f"{action} on {store.backend.describe()} did not finish within {deadline} s")


@contextlib.contextmanager
def open_store(config: dict[str, Any]) -> Iterator[ObjectStore]:
    """An ObjectStore for a config block, closed (with its client) afterwards."""
    store = ObjectStore(parse_store_config(config))
    try:
        yield store
    finally:
        io_loop.run(store.close(), timeout=30)


def local_file(directory: Path, data: bytes) -> str:
    """A new local file holding `data`."""
    path = directory / f"local-{hashlib.md5(data).hexdigest()}-{time.monotonic_ns()}"
    path.write_bytes(data)
    return str(path)


def large_local_file(directory: Path, size: int) -> tuple[str, str]:
    """A new local file of `size` random bytes, written one MiB at a time; its path and MD5."""
    path = directory / f"large-{time.monotonic_ns()}"
    md5 = hashlib.md5()
    with path.open("wb") as file:
        for offset in range(0, size, MiB):
            block = os.urandom(min(MiB, size - offset))
            md5.update(block)
            file.write(block)
    return str(path), md5.hexdigest()


def put_media(media_store: Path, media_path: str, data: bytes) -> None:
    """A file in Synapse's media store, where the provider uploads it from."""
    target = media_store / media_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


async def read_object(store: ObjectStore, media_path: str, read_size: int = 64 * 1024) -> bytes | None:
    """The whole content of an object, read as a stream; None if it does not exist."""
    stream = await store.open_read(media_path)
    if stream is None:
        return None
    parts = []
    try:
        while chunk := await stream.read(read_size):
            parts.append(chunk)
    finally:
        await stream.close()
    return b"".join(parts)


async def digest_object(store: ObjectStore, media_path: str) -> tuple[int, str]:
    """Size and MD5 of an object, streamed without keeping it."""
    stream = await store.open_read(media_path)
    assert stream is not None, f"{media_path} is missing"
    md5, size = hashlib.md5(), 0
    try:
        while chunk := await stream.read(READ_SIZE):
            md5.update(chunk)
            size += len(chunk)
    finally:
        await stream.close()
    return size, md5.hexdigest()


async def list_objects(store: ObjectStore, media_prefix: str) -> list[ObjectInfo]:
    listing: AsyncIterator[ObjectInfo] = store.list(media_prefix)
    return [info async for info in listing]
