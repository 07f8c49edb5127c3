"""Switching from synapse-s3-storage-provider: media it stored is served by our provider after
only the `module:` line of homeserver.yaml changes.

The old provider runs for real, in Synapse from the benchmark's virtual environment (it pins
boto3, which must not meet s3fs in ours); built by `bench/run --setup-only`, and the test skips
without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from demo.matrix_client import MatrixClient
from tests.conftest import s3_client
from tests.e2e.conftest import PREFIX, Homeserver
from tests.servers.moto import MotoServer
from tests.servers.synapse import PROVIDER_MODULE, SynapseServer, provider_entry

pytestmark = pytest.mark.e2e

OLD_MODULE = "s3_storage_provider.S3StorageProviderBackend"
OLD_PYTHON = Path(__file__).resolve().parents[2] / "bench" / ".work" / "venv-old" / "bin" / "python"


@pytest.mark.skipif(not OLD_PYTHON.exists(), reason=f"no synapse-s3-storage-provider environment at {OLD_PYTHON} "
                                                    "(bench/run --setup-only builds it)")
def test_media_stored_by_the_old_provider_is_served_after_the_module_line_changes(
        tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    old_config = {"bucket": bucket, "endpoint_url": moto.endpoint_url, "prefix": PREFIX, "storage_class": "STANDARD_IA"}
    server = SynapseServer(tmp_path, [provider_entry(old_config, module=OLD_MODULE)], python=str(OLD_PYTHON))
    with server:
        client = MatrixClient.register(server.base_url, server.registration_shared_secret, "alice", "password")
        homeserver = Homeserver(server, client, s3_client(moto.endpoint_url), bucket)
        mxc, data = homeserver.upload_image()
    assert homeserver.object_bytes(homeserver.key(mxc)) == data  # written by the old provider

    old_lines = server.config_path.read_text().splitlines()
    new_lines = [line.replace(OLD_MODULE, PROVIDER_MODULE) for line in old_lines]
    assert [(old, new) for old, new in zip(old_lines, new_lines) if old != new] == [
        (f"- module: {OLD_MODULE}", f"- module: {PROVIDER_MODULE}")]
    server.config_path.write_text("\n".join(new_lines) + "\n")
    server.python = sys.executable
    homeserver.delete_local_copies(mxc)

    with server:
        assert client.download(mxc).check().body == data
        thumbnail = client.thumbnail(mxc, 32, 32, "crop").check().body
    assert thumbnail == homeserver.object_bytes(f"{PREFIX}local_thumbnails/{mxc.media_id[:2]}/{mxc.media_id[2:4]}/"
                                                f"{mxc.media_id[4:]}/32-32-image-jpeg-crop")
