"""objstore-offload on a live homeserver's own database and media store, then Synapse serves
every media from the bucket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers.media import image_size
from servers.synapse import local_thumbnails_dir
from synapse_objstore.cli.cache_db import MEDIA_STORE_ID_FILE
from tests.support.homeserver import PREFIX, Homeserver

pytestmark = pytest.mark.e2e


def offload(homeserver: Homeserver, cache_db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("objstore-offload")), "--no-progress",
               "--config", str(homeserver.server.config_path), "--cache-db", str(cache_db), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_offload_with_delete_then_everything_still_downloads(homeserver: Homeserver, tmp_path: Path) -> None:
    image, image_data = homeserver.upload_image()
    files = {homeserver.client.upload(data, "application/octet-stream", "blob.bin"): data
             for data in (os.urandom(1000), os.urandom(3 * 1024 * 1024))}
    media_store = homeserver.server.media_store_path
    assert any(media_store.rglob("*")) and (media_store / local_thumbnails_dir(image.media_id)).is_dir()
    thumbnail_before = homeserver.client.thumbnail(image, 32, 32, "crop").check().body  # from the local disk

    time.sleep(1)  # durations are more than zero: every media is older than "1s" now
    updated = offload(homeserver, tmp_path / "cache.db", "update", "1s")
    assert updated.returncode == 0, updated.stderr
    uploaded = offload(homeserver, tmp_path / "cache.db", "upload", "--delete")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert "Failed 0 files" in uploaded.stdout

    def local_files() -> list[Path]:
        return [p for p in media_store.rglob("*") if p.is_file() and p.name != MEDIA_STORE_ID_FILE]

    assert local_files() == []
    assert homeserver.client.download(image).check().body == image_data
    for mxc, data in files.items():
        assert homeserver.client.download(mxc).check().body == data
    # The thumbnail Synapse served from its disk, now served from the bucket's copy of it.
    thumbnail = homeserver.client.thumbnail(image, 32, 32, "crop").check()
    assert thumbnail.headers["content-type"] == "image/jpeg" and image_size(thumbnail.body) == (32, 32)
    assert thumbnail.body == thumbnail_before
    assert thumbnail.body == homeserver.object_bytes(PREFIX + local_thumbnails_dir(image.media_id)
                                                     + "32-32-image-jpeg-crop")
    assert local_files() == []  # served from the bucket, not copied back to the disk
