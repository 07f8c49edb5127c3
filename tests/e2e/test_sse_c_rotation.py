"""SSE-C key rotation through a real Synapse on Ceph RGW, which enforces SSE-C: a homeserver whose
bucket holds media written without SSE-C, then under key A, then under key B, serves all of them
(and what it uploads under C) with sse_customer_key C, previous_sse_customer_keys [B, A] and
previously_unencrypted, and counts the reads that needed an old key.

Synapse runs with `enable_local_media_storage: false`, so every download comes from the bucket.
Each generation is uploaded by Synapse itself, restarted with that generation's key.

HOOK for `objstore-offload rekey` (the rekey helper): the module-scoped `rotated` fixture
yields a `RotatedHomeserver` with Synapse running on the C/[B, A] config; a test can run
`rekey --apply` against `rotated.store_config()`, then `rotated.restart({"sse_customer_key": KEY_C})`
(no previous keys) and check `rotated.media` are all still served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml
from packaging.version import Version

from servers.ceph_rgw import CephRGW
from servers.matrix_client import MatrixClient, Mxc
from servers.media import make_image
from servers.synapse import SynapseServer, local_content_path, local_thumbnails_dir, provider_entry
from tests.support.homeserver import PREFIX, MonitoredHomeserver, enable_metrics_listener
from tests.support.offload import MAIN, REPO
from tests.support.required import require_ceph
from tests.support.s3 import rgw_client
from tests.support.sse_c import KEY_A, KEY_B, KEY_C

pytestmark = [pytest.mark.e2e, pytest.mark.ceph,
              pytest.mark.skipif(Version(version("matrix-synapse")) < Version("1.146"),
                                 reason="Synapse before 1.146 has no enable_local_media_storage")]

# Each generation's provider keys, in the order the homeserver went through them.
GENERATIONS: dict[str, dict[str, Any]] = {
    "unencrypted": {},
    "A": {"sse_customer_key": KEY_A, "previously_unencrypted": True},
    "B": {"sse_customer_key": KEY_B, "previous_sse_customer_keys": [KEY_A], "previously_unencrypted": True},
    "C": {"sse_customer_key": KEY_C, "previous_sse_customer_keys": [KEY_B, KEY_A], "previously_unencrypted": True},
}
# The label a read of each generation's media counts under, with the C config.
LABELS = {"unencrypted": "unencrypted", "A": "previous-2", "B": "previous-1", "C": "current"}


@dataclass
class RotatedHomeserver:
    """Synapse on a Ceph RGW bucket holding media of every generation; `media`: generation ->
    (mxc, bytes). `restart(keys)` starts Synapse again with other provider keys."""

    rgw: CephRGW
    bucket: str
    directory: Path
    token: str = ""
    media: dict[str, tuple[Mxc, bytes]] = field(default_factory=dict)
    server: SynapseServer | None = None
    metrics_port: int = 0

    def store_config(self, keys: dict[str, Any] | None = None) -> dict[str, Any]:
        """The provider's config block with these SSE-C keys (default: the C generation's)."""
        return {"bucket": self.bucket, "endpoint_url": self.rgw.endpoint_url, "access_key_id": self.rgw.access_key,
                "secret_access_key": self.rgw.secret_key, "addressing_style": "path", "prefix": PREFIX,
                "multipart_threshold": "5MiB", "multipart_chunksize": "5MiB",
                **(GENERATIONS["C"] if keys is None else keys)}

    def restart(self, keys: dict[str, Any]) -> MatrixClient:
        """Synapse again, with these SSE-C keys in the provider's config (`GENERATIONS`' form)."""
        self.stop()
        self.server = SynapseServer(self.directory, [provider_entry(self.store_config(keys))],
                                    extra_config={"enable_local_media_storage": False})
        self.metrics_port = enable_metrics_listener(self.server)
        self.server.start()
        if not self.token:
            self.token = MatrixClient.register(self.server.base_url, self.server.registration_shared_secret,
                                               "alice", "password").access_token
        return self.client()

    def client(self) -> MatrixClient:
        assert self.server is not None
        return MatrixClient(self.server.base_url, self.token)

    def monitored(self) -> MonitoredHomeserver:
        assert self.server is not None
        return MonitoredHomeserver(self.server, self.client(), rgw_client(self.rgw), self.bucket, self.metrics_port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def module_rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRGW]:
    require_ceph()
    with CephRGW(tmp_path_factory.mktemp("ceph")) as server:
        yield server


@pytest.fixture(scope="module")
def rotated(module_rgw: CephRGW, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RotatedHomeserver]:
    """Synapse run once per generation, each uploading one media (the last a multipart one),
    then left running on the C config."""
    bucket = f"rotated-{uuid.uuid4().hex[:10]}"
    rgw_client(module_rgw).create_bucket(Bucket=bucket)
    homeserver = RotatedHomeserver(module_rgw, bucket, tmp_path_factory.mktemp("synapse-rotated"))
    try:
        for generation, keys in GENERATIONS.items():
            client = homeserver.restart(keys)
            data = os.urandom(12 * 1024 * 1024 if generation == "B" else 200_000)
            homeserver.media[generation] = (client.upload(data, "image/png", f"{generation}.png"), data)
        yield homeserver
    finally:
        homeserver.stop()


def test_the_bucket_holds_each_generation_under_its_own_key(rotated: RotatedHomeserver) -> None:
    s3 = rgw_client(rotated.rgw)
    for generation, (mxc, _) in rotated.media.items():
        key = GENERATIONS[generation].get("sse_customer_key")
        sse = {"SSECustomerKey": key, "SSECustomerAlgorithm": "AES256"} if key else {}
        try:
            head = s3.head_object(Bucket=rotated.bucket, Key=PREFIX + local_content_path(mxc.media_id), **sse)
        except botocore.exceptions.ClientError as error:
            fits = []
            for other in (KEY_A, KEY_B, KEY_C):
                try:
                    s3.head_object(Bucket=rotated.bucket, Key=PREFIX + local_content_path(mxc.media_id),
                                   SSECustomerKey=other, SSECustomerAlgorithm="AES256")
                    fits.append(other[:12])
                except botocore.exceptions.ClientError:
                    pass
            raise AssertionError(f"{generation}: {error}; fits {fits}") from error
        assert ("SSECustomerKeyMD5" in head) == (key is not None), generation


def test_media_under_every_key_is_served_and_old_keys_are_counted(rotated: RotatedHomeserver) -> None:
    monitored = rotated.monitored()
    for generation, (mxc, data) in rotated.media.items():
        assert monitored.client.download(mxc).check().body == data, generation
    samples = monitored.scrape()
    for label in LABELS.values():
        if label != "current":
            assert monitored.ours(samples, "synapse_objstore_previous_key_reads_total", key=label) >= 1, label


def rekey(rotated: RotatedHomeserver, directory: Path, *args: str) -> dict[str, Any]:
    """`objstore-offload --json rekey ARGS` on the C config, in a process of its own; its summary."""
    config = directory / "store.yaml"
    config.write_text(yaml.safe_dump(rotated.store_config()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", MAIN, "--no-progress", "--json", "rekey", *args,
                           "--store-config", str(config)], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(key not in done.stdout + done.stderr for key in (KEY_A, KEY_B, KEY_C))
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def test_after_rekey_the_old_keys_leave_the_config_and_every_media_is_served(
    rotated: RotatedHomeserver, tmp_path: Path,
) -> None:
    # an image with thumbnails under key A (Synapse writes them as it stores the upload)
    client = rotated.restart(GENERATIONS["A"])
    image = make_image()
    picture = client.upload(image, "image/jpeg", "picture.jpg")
    thumbnail = client.thumbnail(picture, 32, 32, "crop").check().body
    s3 = rgw_client(rotated.rgw)
    deadline = time.monotonic() + 60
    while not s3.list_objects_v2(Bucket=rotated.bucket,
                                 Prefix=PREFIX + local_thumbnails_dir(picture.media_id)).get("KeyCount"):
        assert time.monotonic() < deadline, "Synapse stored no thumbnail"
        time.sleep(0.1)

    client = rotated.restart(GENERATIONS["C"])
    dry = rekey(rotated, tmp_path)
    assert {"unencrypted", "previous-1", "previous-2"} <= set(dry["by_key"]), dry["by_key"]
    applied = rekey(rotated, tmp_path, "--apply")
    assert applied["objects_rekeyed"] == dry["objects_rekeyed"] > 0 and applied["files_failed"] == 0

    # every object reads with C alone, and not without a key
    for item in s3.list_objects_v2(Bucket=rotated.bucket, Prefix=PREFIX)["Contents"]:
        head = s3.head_object(Bucket=rotated.bucket, Key=item["Key"], SSECustomerKey=KEY_C,
                              SSECustomerAlgorithm="AES256")
        assert head.get("SSECustomerKeyMD5"), item["Key"]

    # the old keys leave the config: Synapse still serves every media and thumbnail, byte-identical
    client = rotated.restart({"sse_customer_key": KEY_C})
    for generation, (mxc, data) in rotated.media.items():
        assert client.download(mxc).check().body == data, generation
    assert client.download(picture).check().body == image
    assert client.thumbnail(picture, 32, 32, "crop").check().body == thumbnail
    old_key_reads = [value for (name, _), value in rotated.monitored().scrape().items()
                     if name == "synapse_objstore_previous_key_reads_total"]
    assert sum(old_key_reads) == 0
