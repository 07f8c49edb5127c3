"""ObjectStore on the S3 backend against a moto server over HTTP."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from servers.process import free_port
from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import MediaPathError, ObjectStoreError
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.suite import read_object
from tests.support.files import write
from tests.support.s3 import s3_client

MiB = 1024 * 1024


def make_store(endpoint_url: str, bucket: str, **extra: Any) -> ObjectStore:
    return ObjectStore(parse_store_config({"bucket": bucket, "endpoint_url": endpoint_url, **extra}))


def test_keys_are_prefix_plus_media_path_like_synapse_s3_storage_provider(moto: MotoServer, bucket: str,
                                                                         tmp_path: Path) -> None:
    store = make_store(moto.endpoint_url, bucket, prefix="synapse/")
    run(store.put_file(write(tmp_path / "f", b"hello"), "local_content/ab/cd/efgh"))
    # A prefix without a trailing '/' is concatenated as-is, exactly as the old provider does.
    bare = make_store(moto.endpoint_url, bucket, prefix="raw")
    run(bare.put_file(write(tmp_path / "g", b"x"), "local_content/ab/cd/efgh"))

    keys = sorted(o["Key"] for o in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["rawlocal_content/ab/cd/efgh", "synapse/local_content/ab/cd/efgh"]


def test_put_read_info_delete_roundtrip(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    store = make_store(moto.endpoint_url, bucket)
    data = os.urandom(300_000)
    run(store.put_file(write(tmp_path / "a", data), "remote_content/example.org/ab/cd/ef"))

    assert run(read_object(store, "remote_content/example.org/ab/cd/ef")) == data
    info = run(store.info("remote_content/example.org/ab/cd/ef"))
    assert info is not None and info.size == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert run(store.exists("remote_content/example.org/ab/cd/ef"))

    run(store.delete("remote_content/example.org/ab/cd/ef"))
    assert not run(store.exists("remote_content/example.org/ab/cd/ef"))
    run(store.delete("remote_content/example.org/ab/cd/ef"))  # deleting again succeeds


def test_missing_object_reads_as_none(moto: MotoServer, bucket: str) -> None:
    store = make_store(moto.endpoint_url, bucket)
    assert run(store.open_read("local_content/no/su/chmedia")) is None
    assert run(store.info("local_content/no/su/chmedia")) is None


def test_list_under_a_media_directory(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    store = make_store(moto.endpoint_url, bucket, prefix="p/")
    for path in ("local_content/aa/bb/one", "local_content/aa/cc/two", "local_thumbnails/aa/bb/one/32-32-image-png"):
        run(store.put_file(write(tmp_path / "x", path.encode()), path))

    async def collect(prefix: str) -> list[tuple[str, int]]:
        return [(o.media_path, o.size) async for o in store.list(prefix)]

    assert run(collect("local_content/")) == [("local_content/aa/bb/one", 23), ("local_content/aa/cc/two", 23)]
    assert len(run(collect(""))) == 3


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "local_content/../../etc", "local_content//x", "a/./b"])
def test_unsafe_media_paths_are_refused(moto: MotoServer, bucket: str, tmp_path: Path, bad: str) -> None:
    store = make_store(moto.endpoint_url, bucket)
    with pytest.raises(MediaPathError):
        run(store.put_file(write(tmp_path / "f", b"x"), bad))
    assert "Contents" not in s3_client(moto.endpoint_url).list_objects_v2(Bucket=bucket)


def test_storage_class_is_set_on_single_and_multipart_uploads(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    store = make_store(moto.endpoint_url, bucket, storage_class="STANDARD_IA", multipart_threshold="5MiB",
                       multipart_chunksize="5MiB")
    run(store.put_file(write(tmp_path / "small", b"s" * 1000), "local_content/sm/al/l"))
    big = os.urandom(12 * MiB)
    run(store.put_file(write(tmp_path / "big", big), "local_content/bi/gg/big"))

    client = s3_client(moto.endpoint_url)
    for key in ("local_content/sm/al/l", "local_content/bi/gg/big"):
        assert client.head_object(Bucket=bucket, Key=key)["StorageClass"] == "STANDARD_IA"
    # 12 MiB in 5 MiB parts: a three-part multipart upload, read back intact.
    assert client.head_object(Bucket=bucket, Key="local_content/bi/gg/big")["ETag"].strip('"').endswith("-3")
    assert run(read_object(store, "local_content/bi/gg/big")) == big


def test_failed_multipart_upload_is_aborted_not_left_behind(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    store = make_store(moto.endpoint_url, bucket, multipart_threshold="5MiB", multipart_chunksize="5MiB")
    local = write(tmp_path / "big", os.urandom(11 * MiB))
    real_upload = store.backend.upload

    async def failing_read(*args: Any) -> Any:
        raise OSError("disk read error")

    async def upload_with_bad_disk(fs: Any, local_path: str, remote_path: str, if_absent: bool = False) -> None:
        fs.in_thread = failing_read  # the local disk fails while parts are read
        await real_upload(fs, local_path, remote_path, if_absent)

    store.backend.upload = upload_with_bad_disk  # type: ignore[method-assign]
    with pytest.raises(ObjectStoreError, match="disk read error"):
        run(store.put_file(local, "local_content/bi/gg/big"))
    client = s3_client(moto.endpoint_url)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


def test_store_down_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    store = make_store(f"http://127.0.0.1:{free_port()}", "media", retries=1, connect_timeout=2)
    with pytest.raises(ObjectStoreError, match=r"could not fetch 'local_content/aa/bb/cc' on s3://media/ at http://127.0.0.1:\d+"):
        run(store.open_read("local_content/aa/bb/cc"), timeout=30)


def test_missing_bucket_is_an_error_not_a_missing_object(moto: MotoServer) -> None:
    store = make_store(moto.endpoint_url, "no-such-bucket")
    with pytest.raises(ObjectStoreError, match="could not store 'local_content/aa/bb/cc' on s3://no-such-bucket/"):
        run(store.put_file(__file__, "local_content/aa/bb/cc"))


def test_list_streams_page_by_page(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    """A listing larger than a page takes one request per page, each made only once the
    previous page is used up: an object written meanwhile, after those listed, is seen."""
    store = make_store(moto.endpoint_url, bucket, prefix="p/")
    client = s3_client(moto.endpoint_url)
    paths = [f"local_content/aa/bb/media{n:02}" for n in range(25)]
    for path in paths:
        client.put_object(Bucket=bucket, Key="p/" + path, Body=b"x" * 3)
    client.put_object(Bucket=bucket, Key="q/local_content/aa/bb/elsewhere", Body=b"y")
    requests: list[int | None] = []

    async def listing() -> list[str]:
        await store.connect()
        events = store.filesystem().fs.s3.meta.events
        events.register("before-parameter-build.s3.ListObjectsV2",
                        lambda params, **_: requests.append(params.get("MaxKeys")))
        found = []
        async for info in store.list(page_size=10):
            if not found:
                client.put_object(Bucket=bucket, Key="p/local_content/zz/zz/writtenmeanwhile", Body=b"late")
            found.append(info.media_path)
        return found

    assert run(listing()) == [*paths, "local_content/zz/zz/writtenmeanwhile"]
    assert requests == [10, 10, 10]


def test_incomplete_uploads_under_the_prefix_are_listed_and_aborted(moto: MotoServer, bucket: str) -> None:
    store = make_store(moto.endpoint_url, bucket, prefix="p/")
    client = s3_client(moto.endpoint_url)
    ours = client.create_multipart_upload(Bucket=bucket, Key="p/local_content/aa/bb/cut")["UploadId"]
    client.create_multipart_upload(Bucket=bucket, Key="q/other")

    async def uploads() -> list[tuple[str, str]]:
        return [(u.path, u.upload_id) async for u in store.incomplete_uploads()]

    listed = run(uploads())
    assert listed == [(f"{bucket}/p/local_content/aa/bb/cut", ours)]

    async def abort_all() -> None:
        async for upload in store.incomplete_uploads():
            await store.abort_incomplete_upload(upload)

    run(abort_all())
    assert run(uploads()) == []
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == ["q/other"]


@pytest.mark.parametrize(("limit_mib", "most_mib"), [(12, 30), (64, 200)])
def test_many_uploads_at_once_hold_no_more_than_the_upload_memory_limit(
    moto: MotoServer, bucket: str, tmp_path: Path, limit_mib: int, most_mib: int
) -> None:
    """Eight 6 MiB files stored at once (as `objstore-offload --jobs 8` or a burst of Synapse
    uploads do): with a 12 MiB limit two bodies are in memory at a time, plus the HTTP
    client's copy; with 64 MiB, all eight go at once. The second case proves the first measures."""
    import asyncio

    from synapse_objstore.testing.memory import peak_memory

    store = make_store(moto.endpoint_url, bucket, upload_memory_limit=f"{limit_mib}MiB")
    files = {f"local_content/me/mo/ry{n}": write(tmp_path / f"f{n}", os.urandom(6 * MiB)) for n in range(8)}

    async def store_all() -> None:
        await asyncio.gather(*(store.put_file(local, media) for media, local in files.items()))

    run(store.connect())
    with peak_memory() as peak:
        run(store_all())
    assert run(store.info("local_content/me/mo/ry7")).size == 6 * MiB
    if limit_mib == 12:
        assert peak.bytes < most_mib * MiB, f"{peak.bytes / MiB:.0f} MiB"
    else:
        assert peak.bytes > 48 * MiB, f"{peak.bytes / MiB:.0f} MiB: the measurement misses the bodies"


def test_building_the_client_is_no_answer_of_the_store(moto: MotoServer, bucket: str) -> None:
    """The silent-store watch (cli/store_watch.py) takes `last_answer` for the last time the
    store answered: building a client sends nothing, so it must not count, or a check that only
    connected would vouch for a store that answers nothing."""
    store = make_store(moto.endpoint_url, bucket)
    before = store.last_answer
    run(store.connect())
    assert store.last_answer == before
    run(store.exists("local_content/ab/cd/ef"))
    assert store.last_answer > before
