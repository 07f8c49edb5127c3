"""Synapse's database: which media have not been accessed since a given time, which exist at all.

Connection settings come from where s3_media_upload takes them: `database.yaml` in the
working directory if it exists (psycopg2 keyword arguments, or a `sqlite:`/`postgres:`
section), else the `database:` section of homeserver.yaml. PostgreSQL rows are streamed
through a server-side cursor, so the first rows arrive before the last are read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from synapse_objstore.cli.homeserver import Homeserver, load_yaml
from synapse_objstore.errors import ConfigFileError, SynapseDbError
from synapse_objstore.media import MediaType

DATABASE_YAML = "database.yaml"
BATCH_SIZE = 20_000  # rows fetched at a time

# The media last accessed (or, never accessed, created) in [%s, %s): local as (media_id,
# media_type, sha256), remote as (media_origin, media_id, filesystem_id, media_type, sha256);
# cache.db fills in the rest of its row. `{sha256}` is the column, or NULL in a database of
# Synapse before 1.128 (schema delta 91/01_media_hash.sql added it).
# Synapse only ever moves last_access_ts forward and never changes created_ts, so a media
# that was in an earlier window and is out of this one was accessed since, and one that
# comes of age later falls in a later window. The rows come sorted as cache.db's unique
# index (origin, media_id) sorts them, bytewise (PostgreSQL's "C" collation): SQLite then
# appends to its B-trees instead of writing pages all over them.
LOCAL_SQL = """
    SELECT media_id, media_type, {sha256}
    FROM local_media_repository
    WHERE
        COALESCE(last_access_ts, created_ts) >= %s
        AND COALESCE(last_access_ts, created_ts) < %s
        AND url_cache IS NULL
    ORDER BY media_id COLLATE "C"
"""

REMOTE_SQL = """
    SELECT media_origin, media_id, filesystem_id, media_type, {sha256}
    FROM remote_media_cache
    WHERE
        COALESCE(last_access_ts, created_ts) >= %s
        AND COALESCE(last_access_ts, created_ts) < %s
    ORDER BY media_origin COLLATE "C", media_id COLLATE "C"
"""

# Media with content (pending uploads, MSC2246, have a row and no length), created before %s.
MEDIA_CREATED_SQL = """
    SELECT '', media_id, media_id, 'local', media_type, {local_sha256}
    FROM local_media_repository
    WHERE created_ts < %s AND url_cache IS NULL AND media_length IS NOT NULL
    UNION ALL
    SELECT media_origin, media_id, filesystem_id, 'remote', media_type, {remote_sha256}
    FROM remote_media_cache
    WHERE created_ts < %s
"""
HAS_MEDIA_SQL = """
    SELECT EXISTS (SELECT 1 FROM local_media_repository) OR EXISTS (SELECT 1 FROM remote_media_cache)
"""
# `%s` stands for a list of ids: an array on PostgreSQL, a JSON list on SQLite (see `_any`).
EXISTING_LOCAL_SQL = "SELECT media_id FROM local_media_repository WHERE media_id {any}"
# The newest local media that stay (uploads with content; not URL previews, which Synapse expires):
# the owner marker's witnesses of a database's history (see cli/ownership.py).
NEWEST_LOCAL_SQL = """
    SELECT media_id FROM local_media_repository
    WHERE url_cache IS NULL AND media_length IS NOT NULL
    ORDER BY created_ts DESC, media_id COLLATE "C" DESC LIMIT %s
"""
# remote_media_cache has no index on filesystem_id, so a lookup by it is a scan of the table:
# read the pairs once instead.
REMOTE_FILES_SQL = "SELECT media_origin, filesystem_id FROM remote_media_cache"
# The homeserver's first user (of a server name, if given), whom Synapse never deletes (see cli/ownership.py).
FIRST_USER_SQL = """
    SELECT name, creation_ts FROM users WHERE {domain}
    ORDER BY COALESCE(creation_ts, 0), name COLLATE "C" LIMIT 1
"""
# Whether a table has a column (PostgreSQL: in the schemas of the search path).
HAS_COLUMN_SQL = {
    "postgres": """
        SELECT count(*) FROM information_schema.columns
        WHERE table_schema = ANY(current_schemas(false)) AND table_name = %s AND column_name = %s
    """,
    "sqlite": "SELECT count(*) FROM pragma_table_info(%s) WHERE name = %s",
}
MEDIA_COUNTS_SQL = """
    SELECT (SELECT count(*) FROM local_media_repository), (SELECT count(*) FROM remote_media_cache),
           (SELECT max(created_ts) FROM local_media_repository), (SELECT max(created_ts) FROM remote_media_cache)
"""


T = TypeVar("T")


def _postgres_errors() -> tuple[type[Exception], ...]:
    """psycopg2's base error class, once psycopg2 is loaded. It is imported only to connect to
    PostgreSQL (it costs 4-5 MiB of RSS, which a run on SQLite or without Synapse's database
    does without); before that, no error of it can arise."""
    psycopg2 = sys.modules.get("psycopg2")
    return (psycopg2.Error,) if psycopg2 is not None else ()


def _read_errors() -> tuple[type[Exception], ...]:
    """What a failed read of Synapse's database raises (ValueError: psycopg2 refuses a NUL)."""
    return (sqlite3.Error, ValueError, *_postgres_errors())


def _like_escaped(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, each one taken by a worker thread while the caller handles the one before
    (psycopg2 and sqlite3 let go of the GIL while they wait on the database)."""
    with ThreadPoolExecutor(1) as worker:
        pending = worker.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = worker.submit(next, items, None)
            yield item


class SynapseDb:
    def __init__(self, conn: Any, description: str, source: str = "", server_name: str | None = None) -> None:
        self._conn = conn
        self.description = description
        self.source = source  # the file the settings came from
        # homeserver.yaml's server_name, when the settings came from there (not from database.yaml)
        self.server_name = server_name
        self.is_sqlite = isinstance(conn, sqlite3.Connection)
        self._columns: dict[tuple[str, str], bool] = {}

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
            db = cls._sqlite({"database": args["database"]}, homeserver.source)
        else:
            db = cls._postgres(dict(args), homeserver.source)
        db.server_name = homeserver.server_name
        return db

    @classmethod
    def _sqlite(cls, args: dict[str, Any], source: str) -> SynapseDb:
        path = str(args.get("database", ""))
        # sqlite would quietly create an empty database: a missing file is a configuration mistake
        if path != ":memory:" and not os.path.isfile(path):
            raise SynapseDbError(f"Could not connect to sqlite3 database: {path!r} (from {source}) does not exist")
        try:
            return cls(sqlite3.connect(**{"check_same_thread": False, **args}), f"sqlite3 {path}", source)
        except sqlite3.Error as error:
            raise SynapseDbError(f"Could not connect to sqlite3 database {path!r} (from {source}): {error}") from None

    @classmethod
    def _postgres(cls, args: dict[str, Any], source: str) -> SynapseDb:
        # Synapse's connection pool settings are no psycopg2 arguments (copied from homeserver.yaml's args)
        args = {k: v for k, v in args.items() if not str(k).startswith("cp_")}
        port = f":{args['port']}" if args.get("port") else ""
        where = f"{args.get('dbname') or args.get('database') or '?'} on {args.get('host') or 'localhost'}{port}"
        import psycopg2  # see _postgres_errors

        try:
            conn = psycopg2.connect(**args)
            with conn.cursor() as cursor:
                # Every cursor here is read to its end: plan for the last row, not the first
                # (an ORDER BY would otherwise walk an index, page by page, instead of sorting).
                cursor.execute("SET cursor_tuple_fraction = 1")
            conn.commit()
            if "dsn" in args:  # name the database the DSN led to (get_dsn_parameters leaves the password out)
                given = conn.get_dsn_parameters()
                where = f"{given.get('dbname', '?')} on {given.get('host', 'localhost')}:{given.get('port', 5432)}"
            return cls(conn, f"postgres {where}", source)
        except (psycopg2.Error, TypeError) as error:
            raise SynapseDbError(
                f"Could not connect to postgres database {where} (from {source}): {error}".strip()) from None

    def close(self) -> None:
        self._conn.close()

    def media_accessed_between(
        self, since_ts: int, before_ts: int, announce: Callable[[str], None] = lambda _: None
    ) -> Iterator[tuple[MediaType, list[tuple[str, ...]]]]:
        """Batches of the media last accessed in [since_ts, before_ts) (ms), local then remote,
        each sorted by (origin, media_id): ("local", [(media_id, media_type, sha256), ...]) and
        ("remote", [(origin, media_id, filesystem_id, media_type, sha256), ...]); sha256 is None
        where Synapse recorded none (before 1.128, or a database without the column). A thread
        reads each batch while the caller handles the one before."""

        def batches() -> Iterator[tuple[MediaType, list[tuple[str, ...]]]]:
            queries: tuple[tuple[str, MediaType], ...] = (
                (LOCAL_SQL.format(sha256=self._column_or_null("local_media_repository", "sha256")), "local"),
                (REMOTE_SQL.format(sha256=self._column_or_null("remote_media_cache", "sha256")), "remote"),
            )
            for sql, media_type in queries:
                announce(media_type)
                for batch in self._batches(sql, (since_ts, before_ts), f"{media_type}_items"):
                    yield media_type, batch

        return _read_ahead(batches())

    def has_column(self, table: str, column: str) -> bool:
        """Whether Synapse's `table` has `column` (asked once per run)."""
        if (table, column) not in self._columns:
            sql = HAS_COLUMN_SQL["sqlite" if self.is_sqlite else "postgres"]
            [(count,)] = list(self._stream(sql, (table, column), None))
            self._columns[table, column] = bool(count)
        return self._columns[table, column]

    def _column_or_null(self, table: str, column: str) -> str:
        return column if self.has_column(table, column) else "NULL"

    def media_info(self, origin: str, media_id: str) -> tuple[str | None, str | None] | None:
        """(media_type, sha256) Synapse recorded for a media's original; None if it has no row."""
        args: tuple[str, ...] = (media_id,)
        table, where = "local_media_repository", "media_id = %s"
        if origin:
            table, where, args = "remote_media_cache", "media_origin = %s AND media_id = %s", (origin, media_id)
        sql = f"SELECT media_type, {self._column_or_null(table, 'sha256')} FROM {table} WHERE {where}"
        rows = list(self._stream(sql, args, None))
        return (rows[0][0], rows[0][1]) if rows else None

    def media_length(self, origin: str, media_id: str) -> int | None:
        """The size Synapse recorded for the original of a media, if it has the row."""
        sql = "SELECT media_length FROM local_media_repository WHERE media_id = %s"
        args: tuple[str, ...] = (media_id,)
        if origin:
            sql = "SELECT media_length FROM remote_media_cache WHERE media_origin = %s AND media_id = %s"
            args = (origin, media_id)
        rows = list(self._stream(sql, args, None))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def first_user(self, server_name: str | None = None) -> tuple[str, int | None] | None:
        """(name, creation_ts) of the homeserver's first user (of `server_name`, if given); None
        when there is none."""
        domain = "1 = 1" if server_name is None else "name LIKE %s ESCAPE '\\'"
        args = () if server_name is None else (f"%:{_like_escaped(server_name)}",)
        try:
            rows = list(self._stream(FIRST_USER_SQL.format(domain=domain), args, None))
        except SynapseDbError as error:
            raise SynapseDbError(f"{error}. The offload tool reads the first row of Synapse's `users` table to tell "
                                 "which homeserver a database is: is it a Synapse database, and may this role "
                                 "SELECT from users?") from None
        return (str(rows[0][0]), rows[0][1]) if rows else None

    def media_counts(self) -> tuple[int, int, int]:
        """How many local and remote media the database has, and when the newest was created (ms)."""
        [(local, remote, newest_local, newest_remote)] = list(self._stream(MEDIA_COUNTS_SQL, (), None))
        return int(local), int(remote), max(int(newest_local or 0), int(newest_remote or 0))

    def has_media(self) -> bool:
        """Whether there is any local or remote media at all."""
        [(found,)] = list(self._stream(HAS_MEDIA_SQL, (), None))
        return bool(found)

    def media_created_before(self, before_ts: int) -> Iterator[tuple[str, str, str, str, str | None, str | None]]:
        """(origin, media_id, filesystem_id, type, media_type, sha256) of every local (except URL
        previews) and remote media with content created before `before_ts` (ms), streamed;
        sha256 None where Synapse has none."""
        sql = MEDIA_CREATED_SQL.format(local_sha256=self._column_or_null("local_media_repository", "sha256"),
                                       remote_sha256=self._column_or_null("remote_media_cache", "sha256"))
        return self._stream(sql, (before_ts, before_ts), "media_created")

    def existing_local_media(self, media_ids: list[str]) -> set[str]:
        """Those of `media_ids` that local_media_repository has (URL previews included)."""
        rows = self._stream(EXISTING_LOCAL_SQL.format(any=self._any()), (self._ids(media_ids),), None)
        return {media_id for (media_id,) in rows}

    def newest_local_media(self, count: int) -> list[str]:
        """The ids of the `count` newest local media with content, URL previews left out."""
        return [str(media_id) for (media_id,) in self._stream(NEWEST_LOCAL_SQL, (count,), None)]

    def remote_files(self) -> Iterator[tuple[str, str]]:
        """(origin, filesystem_id) of every remote media, streamed in one scan of the table."""
        return self._stream(REMOTE_FILES_SQL, (), "remote_files")

    def _any(self) -> str:
        """`IN` a list given as one parameter: SQLite's json_each takes any length, where
        `IN (?, ?, ...)` stops at SQLITE_MAX_VARIABLE_NUMBER."""
        return "IN (SELECT value FROM json_each(%s))" if self.is_sqlite else "= ANY(%s)"

    def _ids(self, ids: list[str]) -> str | list[str]:
        return json.dumps(ids) if self.is_sqlite else ids

    def _stream(self, sql: str, args: tuple[Any, ...], cursor_name: str | None) -> Iterator[tuple[Any, ...]]:
        for batch in self._batches(sql, args, cursor_name):
            yield from batch

    def _batches(
        self, sql: str, args: tuple[Any, ...], cursor_name: str | None
    ) -> Iterator[list[tuple[Any, ...]]]:
        try:
            if self.is_sqlite:
                # SQLite's default collation (BINARY) is PostgreSQL's "C"
                cursor = self._conn.execute(sql.replace("%s", "?").replace(' COLLATE "C"', ""), args)
                while batch := cursor.fetchmany(BATCH_SIZE):
                    yield batch
                return
            # A named cursor is a server-side one: PostgreSQL sends BATCH_SIZE rows at a time.
            with self._conn.cursor(cursor_name) as cursor:
                cursor.execute(sql, args)
                while batch := cursor.fetchmany(BATCH_SIZE):
                    yield batch
            self._conn.rollback()  # end the read transaction
        except _read_errors() as error:
            if not self.is_sqlite:  # else every later query on the connection fails: "transaction is aborted"
                with contextlib.suppress(*_postgres_errors()):
                    self._conn.rollback()
            raise SynapseDbError(f"Could not read media from {self.description}: {str(error).strip()}") from None
