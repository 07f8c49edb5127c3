"""A synthetic Synapse: its media tables (columns taken from Synapse's own schema files) in
PostgreSQL or SQLite, and a media store in Synapse's real layout with thumbnails and remote media."""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import synapse.storage.schema

from synapse_objstore import media as layout
from synapse_objstore.cli.cache_db import MEDIA_STORE_ID_FILE

SCHEMA_DIR = Path(synapse.storage.schema.__file__).parent / "main"
TABLES = (
    "local_media_repository",
    "local_media_repository_thumbnails",
    "remote_media_cache",
    "remote_media_cache_thumbnails",
)
# Columns added after the last full schema (72), from Synapse's delta files.
DELTAS = ("delta/86/01_authenticate_media.sql", "delta/91/01_media_hash.sql")
DAY_MS = 24 * 3600 * 1000
# The columns of Synapse's `users` that the offload tool reads (its owner fingerprint).
USERS_TABLE = ("CREATE TABLE users (name TEXT, password_hash TEXT, creation_ts BIGINT, "
               "admin SMALLINT DEFAULT 0 NOT NULL, UNIQUE (name))")
SERVER_NAME = "test"


def media_schema(engine: str) -> list[str]:
    """The CREATE TABLE statements (and unique constraints) of the media tables, as Synapse's
    schema files define them, then the ALTER TABLEs of later deltas."""
    if engine == "sqlite":
        text = (SCHEMA_DIR / "full_schemas/72/full.sql.sqlite").read_text()
        statements = [
            m.group(0)
            for table in TABLES
            for m in [re.search(rf'^CREATE TABLE (IF NOT EXISTS )?"?{table}"? \(.*\);$', text, re.MULTILINE)]
            if m
        ]
    else:
        text = (SCHEMA_DIR / "full_schemas/72/full.sql.postgres").read_text()
        statements = [re.search(rf"^CREATE TABLE {table} \(.*?\);", text, re.MULTILINE | re.DOTALL).group(0)  # type: ignore[union-attr]
                      for table in TABLES]
        statements += [
            m.group(0)
            for table in TABLES
            for m in re.finditer(rf"^ALTER TABLE ONLY {table}\n\s+ADD CONSTRAINT .*?;", text, re.MULTILINE)
        ]
        statements += [
            m.group(0)
            for m in re.finditer(r"^CREATE UNIQUE INDEX \S+ ON (\S+) USING .*?;", text, re.MULTILINE)
            if m.group(1) in TABLES
        ]
    assert len(statements) >= len(TABLES), f"media tables not found in Synapse's {engine} schema"
    for delta in DELTAS:
        statements += re.findall(r"^ALTER TABLE \w+ ADD COLUMN .*?;", (SCHEMA_DIR / delta).read_text(), re.MULTILINE)
    return statements


@dataclass
class Thumb:
    width: int
    height: int
    content_type: str
    method: str
    data: bytes


@dataclass
class SynapseMedia:
    """Writes media rows into Synapse's tables and files into the media store."""

    conn: Any
    engine: str
    media_store: Path
    now_ms: int
    db_config: dict[str, Any] = field(default_factory=dict)  # homeserver.yaml's `database:` section
    files: dict[str, bytes] = field(default_factory=dict)

    def create_tables(self, first_user: str | None = f"@admin:{SERVER_NAME}") -> None:
        """The media tables and `users`, with the homeserver's first user (if any)."""
        cursor = self.conn.cursor()
        for statement in [*media_schema(self.engine), USERS_TABLE]:
            cursor.execute(statement)
        self.conn.commit()
        if first_user is not None:
            self.add_user(first_user, age_days=1000)

    def add_user(self, name: str, age_days: float) -> None:
        self.conn.cursor().execute(self._sql("INSERT INTO users (name, creation_ts) VALUES (%s, %s)"),
                                   (name, self.now_ms - int(age_days * DAY_MS)))
        self.conn.commit()

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.engine == "sqlite" else sql

    def _write(self, media_path: str, data: bytes) -> None:
        path = self.media_store / media_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files[media_path] = data

    def add_local(self, media_id: str, data: bytes, age_days: float, thumbs: list[Thumb] = (),  # type: ignore[assignment]
                  url_cache: str | None = None, accessed: bool = True) -> list[str]:
        """Local media last accessed `age_days` ago (or only created then, when `accessed` is false)."""
        ts = self.now_ms - int(age_days * DAY_MS)
        self.conn.cursor().execute(
            self._sql("""INSERT INTO local_media_repository
                (media_id, media_type, media_length, created_ts, upload_name, user_id, url_cache, last_access_ts)
                VALUES (%s, 'image/png', %s, %s, 'up.png', '@u:test', %s, %s)"""),
            (media_id, len(data), ts, url_cache, ts if accessed else None),
        )
        paths = [layout.local_media_path(media_id)]
        self._write(paths[0], data)
        for t in thumbs:
            self.conn.cursor().execute(
                self._sql("""INSERT INTO local_media_repository_thumbnails
                    (media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length)
                    VALUES (%s, %s, %s, %s, %s, %s)"""),
                (media_id, t.width, t.height, t.content_type, t.method, len(t.data)),
            )
            paths.append(layout.local_thumbnail_path(media_id, t.width, t.height, t.content_type, t.method))
            self._write(paths[-1], t.data)
        self.conn.commit()
        return paths

    def add_remote(self, origin: str, media_id: str, filesystem_id: str, data: bytes, age_days: float,
                   thumbs: list[Thumb] = ()) -> list[str]:  # type: ignore[assignment]
        ts = self.now_ms - int(age_days * DAY_MS)
        self.conn.cursor().execute(
            self._sql("""INSERT INTO remote_media_cache
                (media_origin, media_id, media_type, created_ts, upload_name, media_length, filesystem_id,
                 last_access_ts)
                VALUES (%s, %s, 'image/jpeg', %s, 'r.jpg', %s, %s, %s)"""),
            (origin, media_id, ts, len(data), filesystem_id, ts),
        )
        paths = [layout.remote_media_path(origin, filesystem_id)]
        self._write(paths[0], data)
        for t in thumbs:
            self.conn.cursor().execute(
                self._sql("""INSERT INTO remote_media_cache_thumbnails
                    (media_origin, media_id, thumbnail_width, thumbnail_height, thumbnail_method, thumbnail_type,
                     thumbnail_length, filesystem_id)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"""),
                (origin, media_id, t.width, t.height, t.method, t.content_type, len(t.data), filesystem_id),
            )
            paths.append(
                layout.remote_thumbnail_path(origin, filesystem_id, t.width, t.height, t.content_type, t.method))
            self._write(paths[-1], t.data)
        self.conn.commit()
        return paths

    def local_files(self) -> set[str]:
        """The files of media in the media store (not the id objstore-offload gives the store)."""
        return {
            os.path.relpath(os.path.join(root, name), self.media_store)
            for root, _, names in os.walk(self.media_store)
            for name in names
        } - {MEDIA_STORE_ID_FILE}


def sqlite_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)
