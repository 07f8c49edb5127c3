"""A real Synapse for the end-to-end tests, on SQLite or on a throwaway PostgreSQL database.

The server itself (`SynapseServer`) lives in demo/synapse_server.py, because the demo runs it
too and must not import from tests/; this module adds what only tests need: PostgreSQL, started
if it is down, with a database from tests/servers/postgres.py.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from typing import Any

import psycopg2

from demo.synapse_server import (
    PROVIDER_MODULE,
    SynapseServer,
    local_content_path,
    local_thumbnails_dir,
    provider_entry,
    sqlite_database,
)
from tests.servers.postgres import admin_connection

__all__ = ["PROVIDER_MODULE", "PostgresUnavailable", "SynapseServer", "ensure_postgres_running",
           "local_content_path", "local_thumbnails_dir", "postgres_database", "provider_entry", "sqlite_database"]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not running on 127.0.0.1:5432 and could not be started."""


def _accepts_connections() -> bool:
    try:
        admin_connection().close()
        return True
    except psycopg2.OperationalError:
        return False


def ensure_postgres_running(timeout: float = 30.0) -> None:
    """Start the local cluster (Debian's pg_ctlcluster) if it does not accept connections."""
    if _accepts_connections():
        return
    versions = [os.path.basename(path) for path in glob.glob("/etc/postgresql/*")]
    if len(versions) != 1:
        raise PostgresUnavailable(f"PostgreSQL is down and there is no single cluster to start: {versions}")
    started = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"],
                             check=False, capture_output=True, text=True)
    if started.returncode != 0:
        raise PostgresUnavailable(f"pg_ctlcluster failed: {started.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while not _accepts_connections():
        if time.monotonic() > deadline:
            raise PostgresUnavailable(f"PostgreSQL did not accept connections within {timeout} s of starting")
        time.sleep(0.2)


def postgres_database(connection_args: dict[str, Any]) -> dict[str, Any]:
    """The `database:` section of homeserver.yaml for a database from `temporary_database()`."""
    return {"name": "psycopg2", "args": {**connection_args, "cp_min": 1, "cp_max": 5}}
