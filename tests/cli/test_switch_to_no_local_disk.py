"""A homeserver that turns `enable_local_media_storage: false` on keeps the media its disk
already holds there: Synapse no longer reads them, and `upload` must move them to the store,
not say that nothing is local.

This is how a homeserver with years of media on a disk moves into containers: it sets the
key, and offloads what the disk holds before the disk goes.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import Dataset, Offload
from tests.support.s3 import bucket_objects


def test_media_left_on_disk_after_turning_local_storage_off_are_offloaded(
        offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer,
        bucket: str) -> None:
    config = yaml.safe_load(homeserver_yaml.read_text())
    homeserver_yaml.write_text(yaml.safe_dump({**config, "enable_local_media_storage": False}))
    on_disk = synapse.local_files()
    assert set(dataset.old) <= on_disk

    offload("--config", str(homeserver_yaml), "update", "30d")
    uploaded = offload("--json", "--config", str(homeserver_yaml), "upload", "--delete")
    summary = json.loads(uploaded.stdout)
    assert summary["files_uploaded"] == len(dataset.old) and summary["files_failed"] == 0, uploaded.output
    assert "Nothing local to offload" not in uploaded.output
    stored = bucket_objects(moto, bucket)
    assert {path: stored[f"media/{path}"] for path in dataset.old} == {path: synapse.files[path]
                                                                       for path in dataset.old}
    assert not synapse.local_files() & set(dataset.old)

