"""End-to-end fixtures: a real Synapse (SQLite and PostgreSQL) with our provider, over moto.

One Synapse per test module and database kind: a start costs 2-4 s, a test well under one.
Every test module is marked `e2e` (select with `-m e2e`, skip with `-m "not e2e"`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from servers.moto import MotoServer
from tests.support.homeserver import DATABASE_KINDS, Homeserver, child_pids, homeserver_on
from tests.support.s3 import s3_client


@pytest.fixture(scope="module", autouse=True)
def no_processes_left(moto: MotoServer) -> Iterator[None]:
    """Each module stops every process it started (the session's moto is started before)."""
    before = child_pids()
    yield
    left = child_pids() - before
    assert not left, f"processes still running after the module: {sorted(left)}"


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def homeserver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               moto: MotoServer) -> Iterator[Homeserver]:
    """Synapse with our provider on the session's moto, on each database kind, each with a bucket
    of its own: two homeservers must never share one (objstore-offload refuses the second)."""
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    directory = tmp_path_factory.mktemp(f"synapse-{request.param}")
    yield from homeserver_on(request.param, directory, moto.endpoint_url, bucket)
