"""Switching from synapse-s3-storage-provider: media it stored is served by our provider after
only the `module:` line of homeserver.yaml changes.

The old provider runs for real, in Synapse from a virtual environment of its own (it pins boto3,
which must not meet s3fs in ours): servers/old_provider.py builds it (`python3 -m
servers.old_provider`, which .ci/run runs); without it the test skips, unless
OBJSTORE_REQUIRE_OLD_PROVIDER is set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from servers import old_provider
from servers.matrix_client import MatrixClient
from servers.moto import MotoServer
from servers.synapse import PROVIDER_MODULE, SynapseServer, provider_entry
from tests.support.homeserver import PREFIX, Homeserver
from tests.support.required import require_old_provider
from tests.support.s3 import s3_client

pytestmark = pytest.mark.e2e


def test_media_stored_by_the_old_provider_is_served_after_the_module_line_changes(
        tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    require_old_provider()
    old_config = {"bucket": bucket, "endpoint_url": moto.endpoint_url, "prefix": PREFIX, "storage_class": "STANDARD_IA"}
    server = SynapseServer(tmp_path, [provider_entry(old_config, module=old_provider.MODULE)],
                           python=str(old_provider.PYTHON))
    with server:
        client = MatrixClient.register(server.base_url, server.registration_shared_secret, "alice", "password")
        homeserver = Homeserver(server, client, s3_client(moto.endpoint_url), bucket)
        mxc, data = homeserver.upload_image()
    assert homeserver.object_bytes(homeserver.key(mxc)) == data  # written by the old provider

    old_lines = server.config_path.read_text().splitlines()
    new_lines = [line.replace(old_provider.MODULE, PROVIDER_MODULE) for line in old_lines]
    assert [(old, new) for old, new in zip(old_lines, new_lines, strict=True) if old != new] == [
        (f"- module: {old_provider.MODULE}", f"- module: {PROVIDER_MODULE}")]
    server.config_path.write_text("\n".join(new_lines) + "\n")
    server.python = sys.executable
    homeserver.delete_local_copies(mxc)

    with server:
        assert client.download(mxc).check().body == data
        thumbnail = client.thumbnail(mxc, 32, 32, "crop").check().body
    assert thumbnail == homeserver.object_bytes(f"{PREFIX}local_thumbnails/{mxc.media_id[:2]}/{mxc.media_id[2:4]}/"
                                                f"{mxc.media_id[4:]}/32-32-image-jpeg-crop")
