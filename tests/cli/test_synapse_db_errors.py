"""A query of Synapse's database that fails fails alone, with a clear error: the queries after
it on the same PostgreSQL connection still answer (a failed statement aborts the transaction
until it is rolled back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servers.synapse_media import SynapseMedia
from synapse_objstore.cli.homeserver import Homeserver
from synapse_objstore.cli.synapse_db import SynapseDb
from synapse_objstore.errors import SynapseDbError
from tests.support.offload import Dataset


@pytest.mark.parametrize("engine", ["postgres"])
def test_a_failed_query_does_not_poison_the_next(homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset,
                                                 engine: str) -> None:
    synapse.conn.cursor().execute("DROP TABLE users")  # as for a role that may not read it
    synapse.conn.commit()
    db = SynapseDb.connect(Homeserver.load([str(homeserver_yaml)]), str(homeserver_yaml))
    try:
        with pytest.raises(SynapseDbError, match="users"):
            db.first_user()
        with pytest.raises(SynapseDbError, match="NUL"):
            db.media_length("", "bad\x00id")
        assert db.media_length("", "AbCdEfGhIjKlMnOp") == 40_000
    finally:
        db.close()
