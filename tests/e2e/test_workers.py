"""Media workers on two "hosts": Synapse's main process (no media) and two `media_repository`
workers, each with a media store of its own, replicating over Redis, on one PostgreSQL database
and one bucket. Media uploaded through one worker is served and thumbnailed by the other from
the bucket; `objstore-offload` runs on each host with that host's config and cache.db, `reconcile`
once for the shared database, and afterwards every worker still serves every media.

Worker media1 (host A) stores synchronously and runs the media background jobs; worker media2
(host B) stores in the background (`store_synchronous: false`).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from PIL import Image

from servers.matrix_client import MatrixClient, Mxc
from servers.media import make_image
from servers.moto import MotoServer
from servers.postgres import PostgresUnavailable, ensure_postgres_running, postgres_database, temporary_database
from servers.redis import RedisServer, redis_available
from servers.synapse import SynapseServer, local_content_path, local_thumbnails_dir, provider_entry
from servers.synapse_workers import MediaWorker, MediaWorkerDeployment
from synapse_objstore.cli.cache_db import MEDIA_STORE_ID_FILE
from tests.support.homeserver import PREFIX, provider_config
from tests.support.s3 import s3_client

pytestmark = pytest.mark.e2e

# Long enough for a background upload on a loaded 2-core machine; a wait, not a timing assertion.
BACKGROUND_UPLOAD_TIMEOUT = 60.0


def _require_redis() -> None:
    """Skip (or, with OBJSTORE_REQUIRE_REDIS set, fail) without redis-server or Synapse's Redis client."""
    missing = []
    if not redis_available():
        missing.append("redis-server is not installed (.ci/install-redis installs it)")
    if importlib.util.find_spec("txredisapi") is None:
        missing.append("Synapse's Redis client txredisapi is not installed (pip install 'matrix-synapse[redis]')")
    if not missing:
        return
    if os.environ.get("OBJSTORE_REQUIRE_REDIS"):
        pytest.fail(f"Redis is required here (OBJSTORE_REQUIRE_REDIS) but {'; '.join(missing)}")
    pytest.skip("; ".join(missing))


def original_key(mxc: Mxc) -> str:
    return PREFIX + local_content_path(mxc.media_id)


@dataclass
class Host:
    """One media worker, as on a host of its own: its process, a client talking to it, and the
    cache.db objstore-offload keeps on that host."""

    worker: MediaWorker
    client: MatrixClient
    cache_db: Path

    def offload(self, *args: str) -> subprocess.CompletedProcess[str]:
        """objstore-offload as this host runs it: with the shared homeserver.yaml and its worker.yaml."""
        configs = [argument for path in self.worker.config_paths for argument in ("--config", str(path))]
        command = [str(Path(sys.executable).with_name("objstore-offload")), "--no-progress", *configs,
                   "--cache-db", str(self.cache_db), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)

    def local_files(self) -> list[Path]:
        """Files of media on this host's disk (not the id objstore-offload gives the media store)."""
        return [path for path in self.worker.media_store_path.rglob("*")
                if path.is_file() and path.name != MEDIA_STORE_ID_FILE]

    def has_local_copy(self, mxc: Mxc) -> bool:
        return self.worker.local_media_path(mxc.media_id).exists()


@dataclass
class Deployment:
    """The running deployment, its bucket, and a connection to its database."""

    main: SynapseServer
    a: Host  # media1: synchronous uploads, the media background jobs
    b: Host  # media2: background uploads
    s3: Any
    bucket: str
    database: Any  # psycopg2 connection to Synapse's database

    @property
    def hosts(self) -> list[Host]:
        return [self.a, self.b]

    def keys(self) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def object_bytes(self, mxc: Mxc) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=original_key(mxc))["Body"].read())

    def thumbnail_keys(self, mxc: Mxc) -> set[str]:
        directory = PREFIX + local_thumbnails_dir(mxc.media_id)
        return {key for key in self.keys() if key.startswith(directory)}

    def media_keys(self, mxc: Mxc) -> set[str]:
        return {original_key(mxc)} & self.keys() | self.thumbnail_keys(mxc)

    def thumbnails_in_database(self, mxc: Mxc) -> set[str]:
        """The keys of the media's thumbnails Synapse has recorded (made by any worker)."""
        with self.database.cursor() as cursor:
            cursor.execute("SELECT thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method "
                           "FROM local_media_repository_thumbnails WHERE media_id = %s", (mxc.media_id,))
            rows = cursor.fetchall()
        directory = PREFIX + local_thumbnails_dir(mxc.media_id)
        return {f"{directory}{width}-{height}-{kind.replace('/', '-')}-{method}"
                for width, height, kind, method in rows}

    def wait_until_stored(self, mxc: Mxc) -> bytes:
        """The bucket's copy of the media, once it and every thumbnail Synapse recorded are there
        (a worker with store_synchronous: false stores them in the background)."""
        deadline = time.monotonic() + BACKGROUND_UPLOAD_TIMEOUT
        while not {original_key(mxc), *self.thumbnails_in_database(mxc)} <= self.media_keys(mxc):
            assert time.monotonic() < deadline, f"{mxc} or its thumbnails never reached the bucket"
            time.sleep(0.2)
        return self.object_bytes(mxc)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Deployment]:
    """The main process and two media workers on one PostgreSQL database, one Redis, one bucket;
    started once for the module."""
    _require_redis()
    try:
        ensure_postgres_running()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    directory = tmp_path_factory.mktemp("workers")
    bucket = f"workers-{uuid.uuid4().hex[:10]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    config = provider_config(moto.endpoint_url, bucket)
    workers = {"media1": [provider_entry(config, store_synchronous=True)],
               "media2": [provider_entry(config, store_synchronous=False)]}
    with RedisServer(directory) as redis, temporary_database("synapse_workers") as connection_args, \
            MediaWorkerDeployment(directory, postgres_database(connection_args), redis.port, workers,
                                  extra_config={"dynamic_thumbnails": True}) as running:
        main = running.main
        user = MatrixClient.register(main.base_url, main.registration_shared_secret, "alice", "password")
        hosts = [Host(worker, MatrixClient(worker.base_url, user.access_token), worker.directory / "cache.db")
                 for worker in running.workers]
        database = psycopg2.connect(**connection_args)
        database.autocommit = True
        try:
            yield Deployment(main, hosts[0], hosts[1], s3_client(moto.endpoint_url), bucket, database)
        finally:
            database.close()


def upload_image(host: Host) -> tuple[Mxc, bytes]:
    data = make_image()
    return host.client.upload(data, "image/jpeg", "picture.jpg"), data


def thumbnail_size(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as image:
        return image.size


def assert_serves(host: Host, mxc: Mxc, data: bytes) -> None:
    """The worker serves the media and two thumbnails (made on request by whichever worker was asked first)."""
    assert host.client.download(mxc).check().body == data
    assert thumbnail_size(host.client.thumbnail(mxc, 32, 32, "crop").check().body) == (32, 32)
    assert max(thumbnail_size(host.client.thumbnail(mxc, 50, 50, "scale").check().body)) == 50


def test_upload_through_a_is_served_and_thumbnailed_by_b_from_the_bucket(deployment: Deployment) -> None:
    mxc, data = upload_image(deployment.a)
    assert deployment.object_bytes(mxc) == data  # store_synchronous: in the bucket when the upload returns
    stored_thumbnails = deployment.thumbnail_keys(mxc)
    assert stored_thumbnails and stored_thumbnails == deployment.thumbnails_in_database(mxc)  # made by A at upload
    b_thumbnails = deployment.b.worker.media_store_path / local_thumbnails_dir(mxc.media_id)

    # B serves A's media from the bucket: nothing on B's disk.
    assert deployment.b.client.download(mxc).check().body == data
    assert not deployment.b.has_local_copy(mxc)

    # A thumbnail nobody made yet (clients ask for PNG; A made JPEGs): B makes it from the
    # original it fetches from the bucket, and stores it through its own provider (in the
    # background, as B is configured); A serves it from there.
    made = deployment.b.client.thumbnail(mxc, 50, 50, "scale").check().body
    assert max(thumbnail_size(made)) == 50
    assert [path.name for path in b_thumbnails.iterdir()] == ["50-50-image-png-scale"]
    deployment.wait_until_stored(mxc)
    assert deployment.thumbnail_keys(mxc) - stored_thumbnails == {
        PREFIX + local_thumbnails_dir(mxc.media_id) + "50-50-image-png-scale"}
    assert deployment.a.client.thumbnail(mxc, 50, 50, "scale").check().body == made
    thumbnails_dir = deployment.a.worker.media_store_path / local_thumbnails_dir(mxc.media_id)
    assert not (thumbnails_dir / "50-50-image-png-scale").exists()


def test_background_upload_through_b_is_served_by_a_from_the_bucket(deployment: Deployment) -> None:
    mxc, data = upload_image(deployment.b)
    assert deployment.wait_until_stored(mxc) == data
    assert not deployment.a.has_local_copy(mxc)
    assert_serves(deployment.a, mxc, data)


def test_offload_on_each_host_and_one_reconcile_then_every_worker_serves_everything(deployment: Deployment) -> None:
    admin = MatrixClient.register(deployment.main.base_url, deployment.main.registration_shared_secret,
                                  f"admin-{uuid.uuid4().hex[:6]}", "password", admin=True)
    media = {host.worker.name: [upload_image(host) for _ in range(2)] for host in deployment.hosts}
    for uploader, other in [(deployment.a, deployment.b), (deployment.b, deployment.a)]:
        for mxc, data in media[uploader.worker.name]:
            assert deployment.wait_until_stored(mxc) == data
            # The other host makes a thumbnail of a new size: the original and the thumbnail
            # are on both hosts' disks now
            assert other.client.thumbnail(mxc, 60, 60, "scale").check().body
            assert other.has_local_copy(mxc) and uploader.has_local_copy(mxc)
    for mxc, _ in [item for items in media.values() for item in items]:  # B stores in the background
        deployment.wait_until_stored(mxc)
    deleted, _ = media["media2"].pop()  # deleted through the admin API, which the media workers serve
    kept = [item for items in media.values() for item in items]
    doomed = deployment.media_keys(deleted)
    admin_on_a = MatrixClient(deployment.a.worker.base_url, admin.access_token)
    admin_on_a.request("DELETE", f"/_synapse/admin/v1/media/{deleted.server_name}/{deleted.media_id}").check()

    # Synapse deletes the files of a deleted media from the disk of the worker that deleted it
    # only: B keeps its copies, which no longer belong to any media in the database.
    deleted_on_b = {deployment.b.worker.local_media_path(deleted.media_id),
                    *(deployment.b.worker.media_store_path / local_thumbnails_dir(deleted.media_id)).iterdir()}
    assert not deployment.a.has_local_copy(deleted)

    # Each host offloads its own disk with its own cache.db: media whose files are on the other
    # host are no failure there, and nothing of a media in the database is left on either disk.
    time.sleep(1)  # durations are more than zero: every media is older than "1s" now
    for host, left in [(deployment.a, set()), (deployment.b, deleted_on_b)]:
        updated = host.offload("update", "1s")
        assert updated.returncode == 0, updated.stdout + updated.stderr
        uploaded = host.offload("upload", "--delete")
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        assert "Failed 0 files" in uploaded.stdout, uploaded.stdout
        assert set(host.local_files()) == left

    # Reconcile once, on the host running the background jobs: it deletes the deleted media's
    # objects and nothing else, and finds nothing lost.
    before = deployment.keys()
    reconciled = deployment.a.offload("reconcile", "--apply", "--grace", "0s", "--max-delete-share", "100",
                                      "--media-on-other-hosts")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    deleted_keys = {PREFIX + path for path in re.findall(r"^deleted (\S+) \(", reconciled.stdout, re.MULTILINE)}
    assert deleted_keys == doomed and doomed
    assert "Lost 0 media" in reconciled.stdout
    assert deployment.keys() == before - doomed

    for host in deployment.hosts:
        for mxc, data in kept:
            assert_serves(host, mxc, data)
        assert host.client.download(deleted).status == 404


def test_media_on_the_other_hosts_disk_only_is_neither_lost_nor_deleted(deployment: Deployment) -> None:
    """A background upload that failed leaves a media on its host's disk only. Reconcile on the
    other host cannot see it: with --media-on-other-hosts it is no failure there, and never
    deleted; reconcile on its own host uploads it."""
    mxc, data = upload_image(deployment.a)
    for key in deployment.media_keys(mxc):  # as if the upload to the bucket had failed
        deployment.s3.delete_object(Bucket=deployment.bucket, Key=key)
    assert deployment.a.has_local_copy(mxc) and not deployment.b.has_local_copy(mxc)
    original = original_key(mxc)

    unaware = deployment.b.offload("reconcile", "--grace", "0s")
    assert unaware.returncode == 1 and f"lost: local media {mxc.media_id}" in unaware.stdout, unaware.stdout

    on_b = deployment.b.offload("reconcile", "--apply", "--grace", "0s", "--media-on-other-hosts")
    assert on_b.returncode == 0, on_b.stdout + on_b.stderr
    assert "Lost 0 media" in on_b.stdout and "Left 1 media to other hosts" in on_b.stdout, on_b.stdout
    assert deployment.a.worker.local_media_path(mxc.media_id).read_bytes() == data
    assert original not in deployment.keys()  # noqa: SIM118 - the deployment's listing of the bucket, not a dict

    on_a = deployment.a.offload("reconcile", "--apply", "--grace", "0s", "--media-on-other-hosts")
    assert on_a.returncode == 0, on_a.stdout + on_a.stderr
    assert f"uploaded {local_content_path(mxc.media_id)} (" in on_a.stdout, on_a.stdout
    assert deployment.object_bytes(mxc) == data
    assert deployment.b.client.download(mxc).check().body == data
