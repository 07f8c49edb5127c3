"""Fixtures for the objstore-offload tests: a Synapse database (PostgreSQL or SQLite) with
media rows, a media store in Synapse's layout, homeserver.yaml, and the CLI run in-process.

A pytest plugin, which tests/conftest.py loads (`pytest_plugins`): the CLI tests use these, and
so does the conformance test of the example plugin."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml
from click.testing import CliRunner, Result

from servers.moto import MotoServer
from servers.postgres import temporary_database
from servers.synapse_media import SynapseMedia, Thumb, sqlite_connect
from synapse_objstore.cli.main import cli
from tests.support.offload import Dataset, MiB, Offload, store_block


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The admin's working directory: cache.db (and database.yaml) live here, as for s3_media_upload."""
    path = tmp_path / "work"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def synapse(engine: str, tmp_path: Path, media_store: Path) -> Iterator[SynapseMedia]:
    """Synapse's media tables in a fresh database (dropped after the test) and an empty media store."""
    now_ms = int(time.time() * 1000)
    if engine == "sqlite":
        path = tmp_path / "homeserver.db"
        conn = sqlite_connect(path)
        synapse = SynapseMedia(conn, "sqlite", media_store, now_ms,
                               {"name": "sqlite3", "args": {"database": str(path)}})
        synapse.create_tables()
        yield synapse
        conn.close()
        return
    with temporary_database() as args:
        conn = psycopg2.connect(**args)
        db_config = {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 5}}
        synapse = SynapseMedia(conn, "postgres", media_store, now_ms, db_config)
        synapse.create_tables()
        yield synapse
        conn.close()


@pytest.fixture
def dataset(synapse: SynapseMedia) -> Dataset:
    """Old and recent local and remote media with thumbnails, one original above the multipart threshold."""
    thumbs = [Thumb(32, 32, "image/png", "crop", b"t" * 300), Thumb(640, 480, "image/jpeg", "scale", os.urandom(5000))]
    old: list[str] = []
    old += synapse.add_local("AbCdEfGhIjKlMnOp", os.urandom(40_000), 60, thumbs)
    old += synapse.add_local("ZyXwVuTsRqPoNmLk", os.urandom(11 * MiB + 123), 90, accessed=False)  # 3 parts of 5 MiB
    old += synapse.add_local("emptyMediaFile00", b"", 61)
    old += synapse.add_remote("matrix.org", "remoteMediaId1", "FsIdRemoteOne123", os.urandom(20_000), 45, thumbs)
    old += synapse.add_remote("example.com:8448", "remoteMediaId2", "FsIdRemoteTwo456", os.urandom(7_000), 400)
    recent = synapse.add_local("RecentMediaAbCdE", os.urandom(1000), 1, thumbs[:1])
    recent += synapse.add_remote("matrix.org", "recentRemote", "FsIdRecentRemote", os.urandom(900), 2)
    url_cache = synapse.add_local("UrlPreviewMedia1", os.urandom(500), 100, url_cache="https://example.org/")
    return Dataset(old=old, recent=recent, url_cache=url_cache)


@pytest.fixture
def homeserver_yaml(synapse: SynapseMedia, moto: MotoServer, bucket: str, tmp_path: Path) -> Path:
    """homeserver.yaml with the database, media_store_path and our provider's config block."""
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({
        "server_name": "test",
        "media_store_path": str(synapse.media_store),
        "database": synapse.db_config,
        "media_storage_providers": [
            {"module": "file_system", "store_local": True, "config": {"directory": "/nonexistent"}},
            {"module": "synapse_objstore.ObjectStorageProvider", "store_local": True, "store_remote": True,
             "config": store_block(moto, bucket)},
        ],
    }))
    return path


@pytest.fixture
def offload(workdir: Path) -> Offload:
    """Run objstore-offload in this process; `expect` is the exit code the test requires."""

    def invoke(*args: str, expect: int | None = 0, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(cli, ["--no-progress", *args], env=env, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, f"exit {result.exit_code}\n{result.output}"
        return result

    return invoke
