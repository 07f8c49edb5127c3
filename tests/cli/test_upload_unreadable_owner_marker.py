"""upload refuses a store whose owner marker is there but will not be read (403; a 400 for an
SSE-C key other than the one it was written with, as another homeserver's): it went on with a
warning that said "refusing to go on", offloaded and deleted the local copies, and the owner's
next reconcile --apply deleted those objects as its orphans: the media lost on both sides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.testing.fault_proxy import FaultProxy, Faults
from tests.cli.test_reconcile_guards import other_synapse, reconciled, write_homeserver_yaml  # noqa: F401
from tests.support.offload import Offload
from tests.support.s3 import bucket_objects


@pytest.mark.parametrize("engine", ["sqlite"])
def test_upload_refuses_a_store_whose_owner_marker_it_cannot_read(
    offload: Offload, reconciled: list[str], other_synapse: SynapseMedia,  # noqa: F811
    moto: MotoServer, bucket: str,
    tmp_path: Path,
) -> None:
    # homeserver `test` owns the store (reconciled); other.example is pointed at it by mistake
    before = other_synapse.local_files()
    stored = set(bucket_objects(moto, bucket))
    with FaultProxy(moto.endpoint_url, Faults(deny="AccessDenied", match="synapse-objstore-owner")) as proxy:
        other = write_homeserver_yaml(tmp_path / "other.yaml", "other.example", other_synapse, moto, bucket)
        settings = yaml.safe_load(other.read_text())
        settings["media_storage_providers"][0]["config"]["endpoint_url"] = proxy.endpoint_url
        other.write_text(yaml.safe_dump(settings))
        offload("--config", str(other), "--cache-db", "other.db", "update", "30d")
        refused = offload("--config", str(other), "--cache-db", "other.db", "upload", "--delete", expect=2)
    assert "cannot read the owner marker" in refused.output
    assert other_synapse.local_files() == before
    assert set(bucket_objects(moto, bucket)) == stored
