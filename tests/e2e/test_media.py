"""Media through a real Synapse (SQLite and PostgreSQL) into the bucket and back out of it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from servers.matrix_client import Mxc
from servers.media import image_size
from servers.synapse import local_thumbnails_dir
from tests.support.homeserver import PREFIX, STORAGE_CLASS, Homeserver

pytestmark = pytest.mark.e2e

# Synapse's default thumbnail sizes, all made for an image at least 800x600.
THUMBNAILS = {"32-32-image-jpeg-crop", "96-96-image-jpeg-crop", "320-240-image-jpeg-scale",
              "640-480-image-jpeg-scale", "800-600-image-jpeg-scale"}


def thumbnail_keys(homeserver: Homeserver, mxc: Mxc) -> dict[str, str]:
    """The thumbnails' object keys by file name."""
    prefix = PREFIX + local_thumbnails_dir(mxc.media_id)
    listing = homeserver.s3.list_objects_v2(Bucket=homeserver.bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"].removeprefix(prefix): item["Key"] for item in listing}


def test_upload_is_stored_in_the_bucket_with_its_thumbnails(homeserver: Homeserver) -> None:
    mxc, data = homeserver.upload_image()

    head = homeserver.s3.head_object(Bucket=homeserver.bucket, Key=homeserver.key(mxc))
    assert head["ContentLength"] == len(data)
    assert head["StorageClass"] == STORAGE_CLASS
    # metadata a CDN can use, and the sha256 Synapse records for the media
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert homeserver.object_bytes(homeserver.key(mxc)) == data
    thumbnails = thumbnail_keys(homeserver, mxc)
    assert set(thumbnails) == THUMBNAILS
    local_thumbnails = homeserver.server.media_store_path / local_thumbnails_dir(mxc.media_id)
    for name, key in thumbnails.items():
        assert homeserver.object_bytes(key) == (local_thumbnails / name).read_bytes(), name
        thumbnail_head = homeserver.s3.head_object(Bucket=homeserver.bucket, Key=key)
        assert thumbnail_head["ContentType"] == "image/jpeg", name
        thumbnail_sha256 = hashlib.sha256((local_thumbnails / name).read_bytes()).hexdigest()
        assert thumbnail_head["Metadata"]["sha256"] == thumbnail_sha256, name


def test_download_and_thumbnail_come_from_the_bucket_once_local_copies_are_gone(homeserver: Homeserver) -> None:
    mxc, data = homeserver.upload_image()
    large = os.urandom(17 * 1024 * 1024)  # above the multipart threshold (16 MiB)
    large_mxc = homeserver.client.upload(large, "application/octet-stream", "large.bin")
    thumbnails = {key: homeserver.object_bytes(key) for key in thumbnail_keys(homeserver, mxc).values()}
    homeserver.delete_local_copies(mxc)
    homeserver.delete_local_copies(large_mxc)

    download = homeserver.client.download(mxc).check()
    assert download.body == data
    assert download.headers["content-type"] == "image/jpeg"
    assert homeserver.client.download(large_mxc).check().body == large

    thumbnail = homeserver.client.thumbnail(mxc, 32, 32, "scale").check()
    assert thumbnail.body in thumbnails.values()
    width, height = image_size(thumbnail.body)
    assert width >= 32 and height >= 32 and width < image_size(data)[0]
    # Served from the bucket, not copied back to the disk.
    assert not homeserver.server.local_media_path(mxc.media_id).exists()
    assert not (homeserver.server.media_store_path / local_thumbnails_dir(mxc.media_id)).exists()


def test_media_missing_everywhere_is_a_404(homeserver: Homeserver) -> None:
    unknown = Mxc(homeserver.server.server_name, "NoSuchMediaIdAtAll")
    assert homeserver.client.download(unknown).status == 404

    # Known to Synapse's database, but gone from the disk and from the bucket: the provider
    # answers "not found", which Synapse turns into a 404 rather than an error.
    mxc, _ = homeserver.upload_image()
    homeserver.delete_local_copies(mxc)
    homeserver.s3.delete_object(Bucket=homeserver.bucket, Key=homeserver.key(mxc))
    assert homeserver.client.download(mxc).status == 404


def test_objects_written_the_way_synapse_s3_storage_provider_writes_them_are_served(
        homeserver: Homeserver, tmp_path: Path) -> None:
    """What synapse-s3-storage-provider's store_file does, replayed with boto3: upload_file from
    the media store to `prefix + path` with its ExtraArgs. No metadata of ours is on the object.

    (tests/e2e/test_migration.py runs the real old provider where its environment exists.)"""
    mxc, data = homeserver.upload_image()
    local = tmp_path / "original"
    local.write_bytes(data)
    homeserver.s3.delete_object(Bucket=homeserver.bucket, Key=homeserver.key(mxc))
    homeserver.s3.upload_file(Filename=str(local), Bucket=homeserver.bucket, Key=homeserver.key(mxc),
                              ExtraArgs={"StorageClass": "STANDARD"})
    homeserver.delete_local_copies(mxc)

    assert homeserver.client.download(mxc).check().body == data
