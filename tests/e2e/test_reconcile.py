"""`reconcile` on a live homeserver: media deleted through Synapse's admin API lose their objects
(and only they do), and an upload that never reached the bucket is repaired."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.matrix_client import MatrixClient, Mxc
from servers.moto import MotoServer
from servers.synapse import local_content_path, local_thumbnails_dir
from synapse_objstore.cli.ownership import OWNER_MARKER
from tests.support.homeserver import DATABASE_KINDS, PREFIX, Homeserver, homeserver_on
from tests.support.s3 import s3_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def homeserver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               moto: MotoServer) -> Iterator[Homeserver]:
    """Synapse on each database kind, each with a bucket of its own: reconcile deletes whatever
    its database does not know, so two homeservers must never share one."""
    bucket = f"reconcile-{uuid.uuid4().hex[:10]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    directory = tmp_path_factory.mktemp(f"synapse-reconcile-{request.param}")
    yield from homeserver_on(request.param, directory, moto.endpoint_url, bucket, "synapse_reconcile")


def objstore_offload(homeserver: Homeserver, cache_db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("objstore-offload")), "--no-progress",
               "--config", str(homeserver.server.config_path), "--cache-db", str(cache_db), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def bucket_keys(homeserver: Homeserver) -> set[str]:
    pages = homeserver.s3.get_paginator("list_objects_v2").paginate(Bucket=homeserver.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def keys_of(homeserver: Homeserver, mxc: Mxc) -> set[str]:
    """The original's key and its thumbnails' keys, as they are in the bucket now."""
    original = PREFIX + local_content_path(mxc.media_id)
    thumbnails = PREFIX + local_thumbnails_dir(mxc.media_id)
    return {key for key in bucket_keys(homeserver) if key == original or key.startswith(thumbnails)}


def named(output: str, action: str) -> set[str]:
    return {PREFIX + path for path in re.findall(rf"^{action} (\S+) \(", output, re.MULTILINE)}


def test_media_deleted_through_the_admin_api_lose_exactly_their_objects(homeserver: Homeserver,
                                                                         tmp_path: Path) -> None:
    admin = MatrixClient.register(homeserver.server.base_url, homeserver.server.registration_shared_secret,
                                  f"admin-{uuid.uuid4().hex[:6]}", "password", admin=True)
    images = [homeserver.upload_image() for _ in range(4)]
    cache_db = tmp_path / "cache.db"
    time.sleep(1)  # durations are more than zero: every media is older than "1s" now
    for step in (["update", "1s"], ["upload", "--delete"]):
        done = objstore_offload(homeserver, cache_db, *step)
        assert done.returncode == 0, done.stdout + done.stderr

    deleted, kept = images[:2], images[2:]
    doomed = set().union(*(keys_of(homeserver, mxc) for mxc, _ in deleted))
    assert all(any("local_thumbnails" in key for key in keys_of(homeserver, mxc)) for mxc, _ in images)
    for mxc, _ in deleted:
        admin.request("DELETE", f"/_synapse/admin/v1/media/{mxc.server_name}/{mxc.media_id}").check()
    before = bucket_keys(homeserver)

    # Half the bucket's media go: above the default --max-delete-share, so it is raised
    dry = objstore_offload(homeserver, cache_db, "reconcile", "--grace", "0s", "--max-delete-share", "60")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert named(dry.stdout, "would delete") == doomed
    assert bucket_keys(homeserver) == before

    applied = objstore_offload(homeserver, cache_db, "reconcile", "--grace", "0s", "--apply",
                               "--max-delete-share", "60")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert named(applied.stdout, "deleted") == doomed
    # `upload` recorded the homeserver, read from a real Synapse's users, as the store's owner
    owner = json.loads(homeserver.object_bytes(PREFIX + OWNER_MARKER))["owner"]
    assert owner["server_name"] == homeserver.server.server_name and owner["fingerprint"]
    assert bucket_keys(homeserver) == (before | {PREFIX + OWNER_MARKER}) - doomed
    for mxc, data in kept:
        assert homeserver.client.download(mxc).check().body == data
        assert homeserver.client.thumbnail(mxc, 32, 32, "crop").check().body
    for mxc, _ in deleted:
        assert homeserver.client.download(mxc).status == 404


def test_upload_that_never_reached_the_bucket_is_repaired(homeserver: Homeserver, tmp_path: Path) -> None:
    mxc, data = homeserver.upload_image()
    lost_keys = keys_of(homeserver, mxc)
    assert len(lost_keys) > 1  # the original and its thumbnails
    for key in lost_keys:  # as if the background upload had failed
        homeserver.s3.delete_object(Bucket=homeserver.bucket, Key=key)

    repaired = objstore_offload(homeserver, tmp_path / "cache.db", "reconcile", "--grace", "0s", "--apply")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert named(repaired.stdout, "uploaded") == lost_keys
    media_store = homeserver.server.media_store_path
    for key in lost_keys:
        assert homeserver.object_bytes(key) == (media_store / key.removeprefix(PREFIX)).read_bytes()
    assert homeserver.object_bytes(homeserver.key(mxc)) == data

    homeserver.delete_local_copies(mxc)  # Synapse now serves it from the bucket alone
    assert homeserver.client.download(mxc).check().body == data
