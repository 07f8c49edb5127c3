"""Synapse's database: which media have not been accessed since a given time.

Connection settings come from where s3_media_upload takes them: `database.yaml` in the
working directory if it exists (psycopg2 keyword arguments, or a `sqlite:`/`postgres:`
section), else the `database:` section of homeserver.yaml. PostgreSQL rows are streamed
through a server-side cursor, so the first rows arrive before the last are read.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg2

from synapse_objstore.cli.homeserver import ConfigFileError, Homeserver, load_yaml

DATABASE_YAML = "database.yaml"
FETCH_SIZE = 10_000

LOCAL_SQL = """
    SELECT '', media_id, media_id
    FROM local_media_repository
    WHERE
        COALESCE(last_access_ts, created_ts) < %s
        AND url_cache IS NULL
"""

REMOTE_SQL = """
    SELECT media_origin, media_id, filesystem_id
    FROM remote_media_cache
    WHERE
        COALESCE(last_access_ts, created_ts) < %s
"""


class SynapseDbError(RuntimeError):
    """Synapse's database cannot be reached or read; the message says which and why."""


class SynapseDb:
    def __init__(self, conn: Any, description: str) -> None:
        self._conn = conn
        self.description = description
        self.is_sqlite = isinstance(conn, sqlite3.Connection)

    @classmethod
    def connect(cls, homeserver: Homeserver | None, homeserver_config_path: str) -> SynapseDb:
        """`homeserver` (from --config) if given, else database.yaml, else homeserver_config_path."""
        if homeserver is None and os.path.isfile(DATABASE_YAML):
            return cls._from_database_yaml(DATABASE_YAML)
        if homeserver is None:
            homeserver = Homeserver.load([homeserver_config_path])
        return cls._from_homeserver(homeserver)

    @classmethod
    def _from_database_yaml(cls, path: str) -> SynapseDb:
        settings = load_yaml(path)
        if not isinstance(settings, Mapping):
            raise ConfigFileError(f"{path} must be a mapping of database settings")
        if "sqlite" in settings:
            return cls._sqlite(dict(settings["sqlite"]), path)
        return cls._postgres(dict(settings.get("postgres", settings)), path)

    @classmethod
    def _from_homeserver(cls, homeserver: Homeserver) -> SynapseDb:
        database = homeserver.database
        args = database.get("args") or {}
        if not isinstance(args, Mapping):
            raise ConfigFileError(f"'database.args' in {homeserver.source} must be a mapping")
        if database.get("name") == "sqlite3":
            if "database" not in args:
                raise ConfigFileError(f"'database.args.database' (the sqlite file) is missing in {homeserver.source}")
            return cls._sqlite({"database": args["database"]}, homeserver.source)
        return cls._postgres(dict(args), homeserver.source)

    @classmethod
    def _sqlite(cls, args: dict[str, Any], source: str) -> SynapseDb:
        path = str(args.get("database", ""))
        # sqlite would quietly create an empty database: a missing file is a configuration mistake
        if path != ":memory:" and not os.path.isfile(path):
            raise SynapseDbError(f"Could not connect to sqlite3 database: {path!r} (from {source}) does not exist")
        try:
            return cls(sqlite3.connect(**{"check_same_thread": False, **args}), f"sqlite3 {path}")
        except sqlite3.Error as error:
            raise SynapseDbError(f"Could not connect to sqlite3 database {path!r} (from {source}): {error}") from None

    @classmethod
    def _postgres(cls, args: dict[str, Any], source: str) -> SynapseDb:
        # Synapse's connection pool settings are no psycopg2 arguments (copied from homeserver.yaml's args)
        args = {k: v for k, v in args.items() if not str(k).startswith("cp_")}
        where = f"{args.get('dbname') or args.get('database') or '?'} on {args.get('host') or 'localhost'}"
        try:
            return cls(psycopg2.connect(**args), f"postgres {where}")
        except (psycopg2.Error, TypeError) as error:
            raise SynapseDbError(f"Could not connect to postgres database {where} (from {source}): {error}".strip()) from None

    def close(self) -> None:
        self._conn.close()

    def media_not_accessed_since(
        self, before_ts: int, announce: Callable[[str], None] = lambda _: None
    ) -> Iterator[tuple[str, str, str, str]]:
        """(origin, media_id, filesystem_id, type) of every media last accessed before `before_ts` (ms)."""
        for sql, media_type in ((LOCAL_SQL, "local"), (REMOTE_SQL, "remote")):
            announce(media_type)
            for origin, media_id, filesystem_id in self._stream(sql, (before_ts,), f"{media_type}_items"):
                yield origin, media_id, filesystem_id, media_type

    def media_length(self, origin: str, media_id: str) -> int | None:
        """The size Synapse recorded for the original of a media, if it has the row."""
        sql = "SELECT media_length FROM local_media_repository WHERE media_id = %s"
        args: tuple[str, ...] = (media_id,)
        if origin:
            sql = "SELECT media_length FROM remote_media_cache WHERE media_origin = %s AND media_id = %s"
            args = (origin, media_id)
        rows = list(self._stream(sql, args, None))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def _stream(self, sql: str, args: tuple[Any, ...], cursor_name: str | None) -> Iterator[tuple[Any, ...]]:
        try:
            if self.is_sqlite:
                yield from self._conn.execute(sql.replace("%s", "?"), args)
                return
            # A named cursor is a server-side one: PostgreSQL sends FETCH_SIZE rows at a time.
            with self._conn.cursor(cursor_name) as cursor:
                if cursor_name:
                    cursor.itersize = FETCH_SIZE
                cursor.execute(sql, args)
                yield from cursor
            self._conn.rollback()  # end the read transaction
        except (sqlite3.Error, psycopg2.Error) as error:
            raise SynapseDbError(f"Could not read media from {self.description}: {str(error).strip()}") from None
