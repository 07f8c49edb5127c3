"""objstore-offload on Google Cloud Storage and Azure Blob Storage, configured by homeserver.yaml."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.azurite import Azurite
from servers.gcs_emulator import GcsEmulator
from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.ownership import OWNER_MARKER
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing.suite import list_objects, read_object
from tests.support.offload import Dataset, Offload

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


@pytest.fixture(params=["gcs", "azure"])
def store_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A provider config block for a fresh bucket or container; chunks small enough that the
    11 MiB original goes up in several."""
    name = f"media-{uuid.uuid4().hex[:12]}"
    if request.param == "gcs":
        emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
        return {"backend": "gcs", "bucket": emulator.create_bucket(name), "endpoint_url": emulator.endpoint_url,
                "token": "anon", "prefix": "media/", "chunk_size": "4 MiB"}
    azurite: Azurite = request.getfixturevalue("azurite")
    return {"backend": "azure", "container": azurite.create_container(name), "account_name": azurite.account_name,
            "account_key": azurite.account_key, "account_url": azurite.account_url, "prefix": "media/",
            "block_size": "4 MiB"}


@pytest.fixture
def store(store_config: dict[str, Any]) -> Iterator[ObjectStore]:
    store = ObjectStore(parse_store_config(store_config))
    yield store
    run(store.close(), timeout=30)


@pytest.fixture
def homeserver_yaml(synapse: SynapseMedia, store_config: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({
        "server_name": "test",
        "media_store_path": str(synapse.media_store),
        "database": synapse.db_config,
        "media_storage_providers": [{"module": "synapse_objstore.ObjectStorageProvider", "config": store_config}],
    }))
    return path


def stored(store: ObjectStore) -> dict[str, bytes]:
    """The store's media objects (not the owner marker `upload` writes)."""
    return {info.media_path: run(read_object(store, info.media_path, 1024 * 1024)) or b""
            for info in run(list_objects(store, "")) if info.media_path != OWNER_MARKER}


def test_offload_and_restore_through_the_store(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, store: ObjectStore, engine: str,
    tmp_path: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    # a stale object of the right size is already there: under --size-only only the store's
    # MD5 tells it apart from the local file, which must not be deleted on its word
    stale = "remote_content/matrix.org/Fs/Id/RemoteOne123"
    (tmp_path / "stale").write_bytes(b"x" * len(synapse.files[stale]))
    run(store.put_file(str(tmp_path / "stale"), stale))

    summary = json.loads(offload("--json", *config, "upload", "--delete", "--size-only").stdout)
    assert summary["files_deleted"] == len(dataset.old) and summary["files_failed"] == 0
    assert summary["files_uploaded"] == len(dataset.old)  # the stale object included
    assert stored(store) == {p: synapse.files[p] for p in dataset.old}
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)

    verified = json.loads(offload("--json", *config, "verify").stdout)
    assert verified["files_verified"] == len(dataset.old) and verified["files_failed"] == 0

    restored = json.loads(offload("--json", *config, "restore").stdout)
    assert restored["files_restored"] == len(dataset.old)
    assert ({p: (synapse.media_store / p).read_bytes() for p in dataset.old}
            == {p: synapse.files[p] for p in dataset.old})
