"""What an offload costs in requests: S3 bills each one, and each is a round trip to a store
that is not on loopback. A new media costs one request per file: its original goes up with
If-None-Match (no lookup first), its thumbnails then without a lookup each, and each copy is
verified by the ETag of the upload's reply, not by asking again or reading it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.moto_log import requests_to
from tests.support.offload import Dataset, Offload

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


def test_a_new_media_costs_one_request_per_file(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--delete").stdout)
    assert summary["files_deleted"] == len(dataset.old) and summary["files_failed"] == 0

    counts = requests_to(moto, bucket)
    # all but the 11 MiB original, which goes up in three parts after one lookup
    assert counts["PUT object"] == len(dataset.old) - 1, counts
    assert counts["HEAD object"] == 1, counts
    # once per run the owner marker is looked for; the first run writes it and reads it back
    assert (counts["HEAD marker"], counts["PUT marker"], counts["GET marker"]) == (2, 1, 1), counts
    assert counts["PUT multipart"] == 3 and counts["POST multipart"] == 2, counts
    assert counts["GET object"] == 0, counts  # nothing read back
    assert counts["GET bucket"] == 1, counts  # no listing after a 404: one only, as the store is claimed
