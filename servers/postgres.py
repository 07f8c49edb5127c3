"""Throwaway databases on the PostgreSQL server running on 127.0.0.1:5432 (trust auth, user
postgres), which is started if it is down (Debian's pg_ctlcluster)."""

from __future__ import annotations

import glob
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2

HOST = "127.0.0.1"
PORT = 5432
USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not running on 127.0.0.1:5432 and could not be started."""


def admin_connection() -> Any:
    conn = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


@contextmanager
def temporary_database(prefix: str = "objstore_test") -> Iterator[dict[str, Any]]:
    """Create a database as Synapse needs it (C locale, UTF8), yield its connection args, drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = admin_connection()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        yield {"host": HOST, "port": PORT, "user": USER, "database": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def postgres_database(connection_args: dict[str, Any]) -> dict[str, Any]:
    """The `database:` section of homeserver.yaml for a database from `temporary_database()`."""
    return {"name": "psycopg2", "args": {**connection_args, "cp_min": 1, "cp_max": 5}}


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
