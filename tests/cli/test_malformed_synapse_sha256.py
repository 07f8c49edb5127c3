"""A sha256 in Synapse's database that is no hex SHA-256 (garbage, a truncated digest) says
nothing about the local file: the file is offloaded as if Synapse had recorded none, and never
reported as corrupted. An uppercase digest is still a digest and still checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.offload import PREFIX, Dataset, Offload
from tests.support.s3 import s3_client

ORIGINAL = "local_content/Ab/Cd/EfGhIjKlMnOp"  # the dataset's first original


@pytest.mark.parametrize("recorded", ["not-a-sha256", "0123abcd", "", "z" * 64, "ab" * 40])
def test_a_malformed_sha256_in_synapses_database_does_not_block_the_offload(
    recorded: str, offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path,
    moto: MotoServer, bucket: str,
) -> None:
    cursor = synapse.conn.cursor()
    cursor.execute(synapse._sql("UPDATE local_media_repository SET sha256 = %s WHERE media_id = %s"),
                   (recorded, "AbCdEfGhIjKlMnOp"))
    synapse.conn.commit()
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--delete").stdout)
    assert summary["failed"] == [], summary["failed"]
    assert not (synapse.media_store / ORIGINAL).exists()
    head = s3_client(moto.endpoint_url).head_object(Bucket=bucket, Key=PREFIX + ORIGINAL)
    assert head["Metadata"]["sha256"] == hashlib.sha256(synapse.files[ORIGINAL]).hexdigest()


def test_an_uppercase_sha256_in_synapses_database_is_still_checked(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, homeserver_yaml: Path, moto: MotoServer, bucket: str,
) -> None:
    cursor = synapse.conn.cursor()
    wrong = hashlib.sha256(b"other bytes").hexdigest().upper()
    cursor.execute(synapse._sql("UPDATE local_media_repository SET sha256 = %s WHERE media_id = %s"),
                   (wrong, "AbCdEfGhIjKlMnOp"))
    synapse.conn.commit()
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--delete", expect=1).stdout)
    assert [f["path"] for f in summary["failed"]] == [ORIGINAL]
    assert "corrupted" in summary["failed"][0]["error"]
    assert (synapse.media_store / ORIGINAL).exists()
