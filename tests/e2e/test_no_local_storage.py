"""A real Synapse with `enable_local_media_storage: false` (a container with no media disk): every
file lives in the bucket only, uploaded from Synapse's temporary files, which go away (and free
their space) once stored. On a Synapse before 1.146, which lacks the option, startup is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from packaging.version import Version

from servers.ceph_rgw import CephRGW
from servers.matrix_client import MatrixClient, Mxc
from servers.media import image_size, make_image
from servers.moto import MotoServer
from servers.synapse import SynapseServer, local_content_path, local_thumbnails_dir, provider_entry
from tests.support.homeserver import PREFIX, provider_config
from tests.support.required import require_ceph
from tests.support.s3 import rgw_client, s3_client

pytestmark = pytest.mark.e2e

HAS_OPTION = Version(version("matrix-synapse")) >= Version("1.146")
NO_LOCAL_STORAGE = {"enable_local_media_storage": False}
SSE_KEY = "k3y-for-synapse-media-0123456789"


@dataclass
class DisklessHomeserver:
    server: SynapseServer
    client: MatrixClient
    s3: Any
    bucket: str
    temp_dir: Path  # Synapse's TMPDIR

    def key(self, mxc: Mxc) -> str:
        return PREFIX + local_content_path(mxc.media_id)

    def wait_for_object(self, key: str, timeout: float = 60.0) -> bytes:
        """The object's bytes, once there (a background upload may still run after the upload answered)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except self.s3.exceptions.NoSuchKey:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{key} did not reach the bucket within {timeout} s") from None
                time.sleep(0.1)

    def object_keys(self, prefix: str = PREFIX) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def assert_nothing_left_on_disk(self, timeout: float = 60.0) -> None:
        """No file in media_store_path, no temporary file, and none held open by Synapse after
        its deletion (disk space never given back), once background uploads are done."""
        assert [path for path in self.server.media_store_path.rglob("*") if path.is_file()] == []
        deadline = time.monotonic() + timeout
        while (left := list(self.temp_dir.iterdir()) + self.deleted_files_held_open()):
            assert time.monotonic() < deadline, f"left behind: {left}"
            time.sleep(0.1)

    def deleted_files_held_open(self) -> list[str]:
        pid = self.server.pid
        held = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(self.temp_dir)) and target.endswith(" (deleted)"):
                held.append(target)
        return held


def start(directory: Path, providers: list[dict[str, Any]], bucket: str,
          endpoint_url: str) -> Generator[DisklessHomeserver, None, None]:
    temp_dir = directory / "tmp"
    temp_dir.mkdir(parents=True)
    server = SynapseServer(directory, providers, extra_config=NO_LOCAL_STORAGE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temp_dir))  # Synapse's temporary files, ours to watch
        server.start()
    try:
        client = MatrixClient.register(server.base_url, server.registration_shared_secret, "alice", "password")
        yield DisklessHomeserver(server, client, s3_client(endpoint_url), bucket, temp_dir)
    finally:
        server.stop()


@pytest.fixture(scope="module", params=[True, False], ids=["synchronous", "background"])
def homeserver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               moto: MotoServer) -> Iterator[DisklessHomeserver]:
    if not HAS_OPTION:
        pytest.skip("Synapse before 1.146 has no enable_local_media_storage")
    bucket = f"diskless-{uuid.uuid4().hex[:10]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    providers = [provider_entry(provider_config(moto.endpoint_url, bucket), store_synchronous=request.param)]
    yield from start(tmp_path_factory.mktemp("synapse-diskless"), providers, bucket, moto.endpoint_url)


def test_uploads_reach_the_bucket_and_nothing_stays_on_disk(homeserver: DisklessHomeserver) -> None:
    small = os.urandom(70_000)
    large = os.urandom(17 * 1024 * 1024)  # above the multipart threshold (16 MiB)
    uploads = [(homeserver.client.upload(data, "application/octet-stream", "file.bin"), data)
               for data in (small, large)]

    for mxc, data in uploads:
        assert homeserver.wait_for_object(homeserver.key(mxc)) == data
        assert homeserver.client.download(mxc).check().body == data
    homeserver.assert_nothing_left_on_disk()


def test_thumbnails_are_made_from_the_bucket_and_stored_there(homeserver: DisklessHomeserver) -> None:
    data = make_image()
    mxc = homeserver.client.upload(data, "image/jpeg", "picture.jpg")
    homeserver.wait_for_object(homeserver.key(mxc))

    thumbnail = homeserver.client.thumbnail(mxc, 32, 32, "crop").check()

    width, height = image_size(thumbnail.body)
    assert (width, height) == (32, 32)
    stored = homeserver.object_keys(PREFIX + local_thumbnails_dir(mxc.media_id))
    deadline = time.monotonic() + 60
    while not stored:  # a background upload of the thumbnail may still run
        assert time.monotonic() < deadline, "no thumbnail reached the bucket"
        time.sleep(0.1)
        stored = homeserver.object_keys(PREFIX + local_thumbnails_dir(mxc.media_id))
    assert thumbnail.body in {homeserver.wait_for_object(key) for key in stored}
    assert homeserver.client.download(mxc).check().body == data
    homeserver.assert_nothing_left_on_disk()


def objstore_offload(homeserver: DisklessHomeserver, cache_db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("objstore-offload")), "--no-progress", "--json",
               "--config", str(homeserver.server.config_path), "--cache-db", str(cache_db), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def test_offload_has_nothing_to_do_and_reconcile_deletes_the_objects_of_deleted_media(
        homeserver: DisklessHomeserver, tmp_path: Path) -> None:
    admin = MatrixClient.register(homeserver.server.base_url, homeserver.server.registration_shared_secret,
                                  f"admin-{uuid.uuid4().hex[:6]}", "password", admin=True)
    kept, deleted, lost = (homeserver.client.upload(make_image(), "image/jpeg", "picture.jpg") for _ in range(3))
    for mxc in (kept, deleted, lost):
        homeserver.wait_for_object(homeserver.key(mxc))
        homeserver.client.thumbnail(mxc, 32, 32, "crop").check()
    homeserver.s3.delete_object(Bucket=homeserver.bucket, Key=homeserver.key(lost))  # gone from the only copy
    cache_db = tmp_path / "cache.db"

    for missing_or_empty in (False, True):  # media_store_path missing, then present and empty
        if missing_or_empty:
            homeserver.server.media_store_path.mkdir(exist_ok=True)
        elif homeserver.server.media_store_path.exists():
            homeserver.server.media_store_path.rmdir()
        done = objstore_offload(homeserver, cache_db, "upload", "--delete")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Nothing local to offload: enable_local_media_storage is false" in done.stderr
        assert json.loads(done.stdout)["files_uploaded"] == 0 and "Traceback" not in done.stderr

    # The first --apply records this homeserver as the store's owner (`upload` had nothing to
    # claim it with); orphans go once that claim is older than --grace.
    claimed = objstore_offload(homeserver, cache_db, "reconcile", "--grace", "0s", "--apply")
    assert "Recorded" in claimed.stderr and json.loads(claimed.stdout)["files_deleted"] == 0, claimed.stderr

    admin.request("DELETE", f"/_synapse/admin/v1/media/{deleted.server_name}/{deleted.media_id}").check()
    doomed = {key for key in homeserver.object_keys() if deleted.media_id[4:] in key}
    assert homeserver.key(deleted) in doomed and len(doomed) > 1  # the original and its thumbnails

    time.sleep(1)  # durations are more than zero: the claim is older than "0s" now
    applied = objstore_offload(homeserver, cache_db, "reconcile", "--grace", "0s", "--apply",
                               "--max-delete-share", "100")
    assert applied.returncode == 1, applied.stdout + applied.stderr  # the lost media fails the run
    assert "Traceback" not in applied.stderr
    summary = json.loads(applied.stdout)
    assert summary["files_deleted"] == len(doomed), applied.stdout
    assert summary["media_lost"] == 1, applied.stdout
    assert [failure["path"] for failure in summary["failed"]] == [local_content_path(lost.media_id)]
    assert not doomed & homeserver.object_keys()
    assert homeserver.client.download(kept).check().body == homeserver.wait_for_object(homeserver.key(kept))
    assert homeserver.client.download(deleted).status == 404


@pytest.fixture
def rgw(tmp_path: Path) -> Iterator[CephRGW]:
    """A Ceph RGW of this test's own: the module must leave no process running, and the
    session's RGW may not have started yet."""
    require_ceph()
    with CephRGW(tmp_path) as server:
        yield server


@pytest.mark.ceph
@pytest.mark.skipif(not HAS_OPTION, reason="Synapse before 1.146 has no enable_local_media_storage")
def test_sse_c_on_ceph_rgw_with_no_local_disk(tmp_path: Path, rgw: CephRGW) -> None:
    """Ceph's RADOS Gateway enforces SSE-C (moto does not): uploads from Synapse's temporary files
    are encrypted with the key, and downloads through Synapse decrypt them."""
    rgw_bucket = f"media-{uuid.uuid4().hex[:10]}"
    rgw_client(rgw).create_bucket(Bucket=rgw_bucket)
    providers = [provider_entry({
        "bucket": rgw_bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
        "secret_access_key": rgw.secret_key, "addressing_style": "path", "sse_customer_key": SSE_KEY,
        "multipart_threshold": "5MiB", "multipart_chunksize": "5MiB", "prefix": PREFIX})]
    running = start(tmp_path / "synapse", providers, rgw_bucket, rgw.endpoint_url)
    homeserver = next(running)
    homeserver.s3 = rgw_client(rgw)
    try:
        uploads = [(homeserver.client.upload(data, "application/octet-stream", "file.bin"), data)
                   for data in (os.urandom(100_000), os.urandom(12 * 1024 * 1024))]  # one in three parts
        for mxc, data in uploads:
            assert homeserver.client.download(mxc).check().body == data
            key = homeserver.key(mxc)
            with pytest.raises(botocore.exceptions.ClientError):  # encrypted: unreadable without the key
                homeserver.s3.get_object(Bucket=rgw_bucket, Key=key)
            sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": SSE_KEY}
            assert homeserver.s3.get_object(Bucket=rgw_bucket, Key=key, **sse)["Body"].read() == data
        homeserver.assert_nothing_left_on_disk()
    finally:
        running.close()  # stops Synapse


@pytest.mark.skipif(HAS_OPTION,
                    reason="this Synapse supports enable_local_media_storage; the refusal is for older ones")
def test_a_synapse_without_the_option_refuses_to_start(tmp_path: Path, moto: MotoServer) -> None:
    server = SynapseServer(tmp_path, [provider_entry(provider_config(moto.endpoint_url, "some-bucket"))],
                           extra_config=NO_LOCAL_STORAGE)

    code, output = server.run_expecting_failure()

    assert code != 0
    assert f"Synapse {version('matrix-synapse')} does not support it (it was added in Synapse 1.146)" in output
    assert "objstore-offload upload --delete" in output
