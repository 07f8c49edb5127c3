"""Throwaway databases on the PostgreSQL server running on 127.0.0.1:5432 (trust auth, user postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2

HOST = "127.0.0.1"
PORT = 5432
USER = "postgres"


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
