"""What objstore-offload's tests share: the media they offload, the CLI run in this process or
another, what cache.db holds, and the check that nothing was lost."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import Result

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from tests.support.s3 import s3_client

MiB = 1024 * 1024
# The repository, put on PYTHONPATH of a CLI run in another process, so that it runs this checkout.
REPO = Path(__file__).resolve().parents[2]
# This checkout's objstore-offload, whatever the installed one is: `python -c MAIN ...`.
MAIN = "import sys; from synapse_objstore.cli.main import cli; sys.exit(cli(prog_name='objstore-offload'))"
# The prefix of store_block's store.
PREFIX = "media/"
# The tests' buckets are small: a few deleted media are a large share of them.
ANY_SHARE = ("--max-delete-share", "100")

# Verbatim from synapse-s3-storage-provider 1.7.0's scripts/s3_media_upload.
OLD_SCHEMA = """
    CREATE TABLE IF NOT EXISTS media (
        origin TEXT NOT NULL,  -- empty string if local media
        media_id TEXT NOT NULL,
        filesystem_id TEXT NOT NULL,
        -- Type is "local" or "remote"
        type TEXT NOT NULL,
        -- indicates whether the media and all its thumbnails have been deleted from the
        -- local cache
        known_deleted BOOLEAN NOT NULL
    );

    CREATE UNIQUE INDEX IF NOT EXISTS media_id_idx ON media(origin, media_id);
    CREATE INDEX IF NOT EXISTS deleted_idx ON media(known_deleted);
"""

# Run objstore-offload in this process (the `offload` fixture); `expect` is the exit code required.
Offload = Callable[..., Result]


@dataclass
class Dataset:
    old: list[str]      # media paths of media not accessed for 60 days: to offload
    recent: list[str]   # accessed yesterday: stays
    url_cache: list[str]  # URL previews: never offloaded


def store_block(moto: MotoServer, bucket: str, **extra: Any) -> dict[str, Any]:
    """Our provider's config block for `bucket` on moto, multipart from 5 MiB."""
    return {
        "bucket": bucket,
        "endpoint_url": moto.endpoint_url,
        "prefix": PREFIX,
        "multipart_threshold": 5 * MiB,
        "multipart_chunksize": 5 * MiB,
        **extra,
    }


def cache_rows(workdir: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(workdir / "cache.db") as conn:
        return {(o, m): d for o, m, d in conn.execute("SELECT origin, media_id, known_deleted FROM media")}


def schema_of(path: Path) -> list[tuple[str, str]]:
    """The schema of cache.db's `media` table."""
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'media'"))


def delete_from_synapse(synapse: SynapseMedia, local: list[str], remote: list[tuple[str, str]]) -> None:
    """What Synapse's admin API and purge jobs do to the database (the files are offloaded already)."""
    cursor = synapse.conn.cursor()
    for table in ("local_media_repository", "local_media_repository_thumbnails"):
        for media_id in local:
            cursor.execute(synapse._sql(f"DELETE FROM {table} WHERE media_id = %s"), (media_id,))
    for table in ("remote_media_cache", "remote_media_cache_thumbnails"):
        for origin, media_id in remote:
            cursor.execute(synapse._sql(f"DELETE FROM {table} WHERE media_origin = %s AND media_id = %s"),
                           (origin, media_id))
    synapse.conn.commit()


def listed_actions(output: str, action: str) -> set[str]:
    """Media paths of the `would delete PATH (SIZE)` (or `deleted ...`) lines."""
    return set(re.findall(rf"^{action} (\S+) \(", output, re.MULTILINE))


def recorded_paths(cache: Path) -> set[str]:
    """Files whose verification is committed in cache.db (retrying while the run holds the lock).
    Not read-only: a run killed in the middle of a commit leaves a hot journal, which only a
    connection that may write rolls back (as the next run does); a read-only one fails."""
    error = None
    for _ in range(100):
        try:
            with sqlite3.connect(cache, timeout=0.1) as conn:
                return {path for (path,) in conn.execute("SELECT path FROM objstore_files")}
        except sqlite3.OperationalError as failure:
            error = failure
            time.sleep(0.02)
    raise AssertionError(f"cache.db stayed locked: {error}")


def assert_nothing_lost(synapse: SynapseMedia, moto: MotoServer, bucket: str, cache: Path) -> int:
    """Every file is on disk intact, or deleted only after its verified copy was recorded and
    that copy is in the bucket intact. Returns how many files were deleted so far."""
    client = s3_client(moto.endpoint_url)
    recorded = recorded_paths(cache)
    deleted = 0
    for path, data in synapse.files.items():
        local = synapse.media_store / path
        if local.exists():
            assert local.read_bytes() == data, f"{path} was changed on disk"
            continue
        deleted += 1
        assert path in recorded, f"{path} was deleted without a recorded verification"
        assert client.get_object(Bucket=bucket, Key=f"media/{path}")["Body"].read() == data, f"{path} lost"
    return deleted
