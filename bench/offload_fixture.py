"""The data of the offload benchmark: Synapse's media tables filled in bulk, and a media store.

- `load_media_rows`: N local + M remote media rows, all last accessed long ago, loaded into
  Synapse's own media tables (schema from Synapse's schema files, by servers/synapse_media.py as for the CLI tests)
  with COPY, 100,000 rows at a time.
- `build_media_store`: media in Synapse's on-disk layout, originals with thumbnails, with a
  size mix like a real media store (see `draw_media`), and the cache.db rows that name them.

Everything is drawn from one seed, so two runs with the same flags build the same store.
"""

from __future__ import annotations

import io
import os
import random
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.synapse_media import USERS_TABLE, media_schema
from synapse_objstore import media as layout
from synapse_objstore.cli.cache_db import MEDIA_STORE_ID_FILE

KB = 1000
MB = 1000 * KB
DAY_MS = 24 * 3600 * 1000
COPY_BATCH = 100_000
ID_LENGTH = 24  # Synapse's media ids are 24 random letters
REMOTE_ORIGINS = ("matrix.org", "example.com:8448", "chat.example.net", "kde.org", "mozilla.org")

# Synapse's default thumbnail sizes (homeserver.yaml `thumbnail_sizes`), with a plausible
# size range each: (width, height, method, content type, smallest bytes, largest bytes).
IMAGE_THUMBNAILS = (
    (32, 32, "crop", "image/png", 1 * KB, 4 * KB),
    (96, 96, "crop", "image/png", 4 * KB, 15 * KB),
    (320, 240, "scale", "image/jpeg", 15 * KB, 45 * KB),
)
# A video or file gets the one small thumbnail of its first frame or icon.
OTHER_THUMBNAILS = IMAGE_THUMBNAILS[:1]


def random_ids(count: int, rng: random.Random) -> list[str]:
    """`count` distinct ids of 24 ASCII letters."""
    letters = string.ascii_letters.encode()
    table = bytes(letters[i % len(letters)] for i in range(256))
    ids: set[str] = set()
    while len(ids) < count:
        raw = rng.randbytes((count - len(ids)) * ID_LENGTH).translate(table).decode()
        ids.update(raw[i:i + ID_LENGTH] for i in range(0, len(raw), ID_LENGTH))
    # Sorted first (a set's order differs per process), then shuffled: Synapse's tables hold
    # random ids in creation order, and loading them sorted would flatter every index insert.
    ordered = sorted(ids)
    rng.shuffle(ordered)
    return ordered


# ---------------------------------------------------------------- Synapse's database


def create_media_tables(conn: Any) -> None:
    """The media tables, and `users` with the homeserver's first user (the offload tool reads it
    to tell which homeserver a database is)."""
    with conn.cursor() as cursor:
        for statement in [*media_schema("postgres"), USERS_TABLE]:
            cursor.execute(statement)
        cursor.execute("INSERT INTO users (name, creation_ts) VALUES ('@admin:bench.example', 0)")
    conn.commit()


def _copy(conn: Any, table: str, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> None:
    """COPY rows (no tabs, newlines or backslashes in them) into table, COPY_BATCH at a time."""
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as cursor:
        while True:
            buffer = io.StringIO()
            written = 0
            for row in rows:
                buffer.write("\t".join(str(value) for value in row))
                buffer.write("\n")
                written += 1
                if written == COPY_BATCH:
                    break
            if not written:
                break
            buffer.seek(0)
            cursor.copy_expert(sql, buffer)
    conn.commit()


def load_media_rows(conn: Any, local: int, remote: int, seed: int) -> dict[str, int]:
    """`local` + `remote` media rows, every one last accessed 40 to 400 days ago."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)

    def last_access() -> int:
        return now_ms - rng.randint(40 * DAY_MS, 400 * DAY_MS)

    create_media_tables(conn)
    _copy(conn, "local_media_repository",
          ("media_id", "media_type", "media_length", "created_ts", "upload_name", "user_id", "last_access_ts"),
          ((media_id, "image/jpeg", rng.randint(10 * KB, 2 * MB), ts - DAY_MS, "upload.jpg", "@user:bench", ts)
           for media_id in random_ids(local, rng) for ts in (last_access(),)))
    _copy(conn, "remote_media_cache",
          ("media_origin", "media_id", "media_type", "created_ts", "upload_name", "media_length", "filesystem_id",
           "last_access_ts"),
          ((REMOTE_ORIGINS[i % len(REMOTE_ORIGINS)], media_id, "image/jpeg", ts - DAY_MS, "remote.jpg",
            rng.randint(10 * KB, 2 * MB), filesystem_id, ts)
           for i, (media_id, filesystem_id)
           in enumerate(zip(random_ids(remote, rng), random_ids(remote, rng), strict=True))
           for ts in (last_access(),)))
    with conn.cursor() as cursor:
        cursor.execute("ANALYZE local_media_repository; ANALYZE remote_media_cache")
        cursor.execute(
            "SELECT (SELECT count(*) FROM local_media_repository), (SELECT count(*) FROM remote_media_cache)")
        counted_local, counted_remote = cursor.fetchone()
    conn.commit()
    return {"local": counted_local, "remote": counted_remote}


# ---------------------------------------------------------------- the media store


@dataclass
class MediaStore:
    """What `build_media_store` wrote: cache.db rows and every file with its size."""

    root: Path
    media: list[tuple[str, str, str, str]] = field(default_factory=list)  # (origin, media_id, filesystem_id, type)
    files: dict[str, int] = field(default_factory=dict)  # media path -> size
    paths_by_media: list[list[str]] = field(default_factory=list)  # aligned with `media`

    def files_of_first(self, count: int) -> dict[str, int]:
        """The files (media path -> size) of the first `count` media."""
        return {path: self.files[path] for paths in self.paths_by_media[:count] for path in paths}

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def describe(self) -> dict[str, Any]:
        sizes = sorted(self.files.values())
        originals = [size for path, size in self.files.items() if "_content/" in path]
        return {
            "media": len(self.media), "local": sum(m[3] == "local" for m in self.media),
            "remote": sum(m[3] == "remote" for m in self.media), "files": len(self.files),
            "thumbnails": len(self.files) - len(originals), "bytes": self.total_bytes,
            "median_file_bytes": sizes[len(sizes) // 2] if sizes else 0,
            "median_original_bytes": sorted(originals)[len(originals) // 2] if originals else 0,
            "largest_bytes": sizes[-1] if sizes else 0,
            "over_8_mib": sum(size > 8 * 1024 * 1024 for size in sizes),
        }


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(low * (high / low) ** rng.random())


def draw_media(rng: random.Random) -> tuple[int, tuple[tuple[int, int, str, str, int, int], ...]]:
    """The size of one original and its thumbnails' specs:
    70% images of 30 KB-2 MB with 3 thumbnails, 29% videos/files of 10 KB-2 MB with 1,
    1% large uploads of 4-24 MB (above boto3's and our multipart thresholds) with 1."""
    kind = rng.random()
    if kind < 0.70:
        return log_uniform(rng, 30 * KB, 2 * MB), IMAGE_THUMBNAILS
    if kind < 0.99:
        return log_uniform(rng, 10 * KB, 2 * MB), OTHER_THUMBNAILS
    return log_uniform(rng, 4 * MB, 24 * MB), OTHER_THUMBNAILS


class Filler:
    """File contents: slices of one random block, each starting with a unique counter, so no
    two files are alike and writing a gigabyte costs no gigabyte of urandom."""

    def __init__(self, rng: random.Random, block: int = 32 * 1024 * 1024) -> None:
        self._block = rng.randbytes(block)
        self._rng = rng
        self._count = 0

    def write(self, path: Path, size: int) -> None:
        self._count += 1
        header = f"{self._count:016d}".encode()[:size]
        rest = size - len(header)
        data = self._block
        while len(data) < rest:
            data += self._block
        start = self._rng.randrange(0, len(data) - rest + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            out.write(header)
            out.write(memoryview(data)[start:start + rest])


def build_media_store(root: Path, count: int, seed: int, remote_share: float = 0.25) -> MediaStore:
    """`count` media (a quarter remote) with their thumbnails under root, in Synapse's layout."""
    rng = random.Random(seed)
    filler = Filler(rng)
    store = MediaStore(root)
    remote = int(count * remote_share)
    ids = random_ids(count + remote, rng)
    for index in range(count):
        size, thumbnails = draw_media(rng)
        if index < count - remote:
            media_id = ids[index]
            store.media.append(("", media_id, media_id, "local"))
            paths = [layout.local_media_path(media_id)] + [
                layout.local_thumbnail_path(media_id, w, h, ctype, method) for w, h, method, ctype, _, _ in thumbnails]
        else:
            # remote media have a filesystem_id of their own: the ids after the first `count`
            origin = REMOTE_ORIGINS[index % len(REMOTE_ORIGINS)]
            media_id, filesystem_id = ids[index], ids[index + remote]
            store.media.append((origin, media_id, filesystem_id, "remote"))
            paths = [layout.remote_media_path(origin, filesystem_id)] + [
                layout.remote_thumbnail_path(origin, filesystem_id, w, h, ctype, method)
                for w, h, method, ctype, _, _ in thumbnails]
        sizes = [size] + [rng.randint(low, high) for *_, low, high in thumbnails]
        store.paths_by_media.append(paths)
        for media_path, file_size in zip(paths, sizes, strict=True):
            filler.write(root / media_path, file_size)
            store.files[media_path] = file_size
    return store


def count_files(root: Path) -> int:
    """Media files left under root (a --delete run leaves none of the media); the id file
    objstore-offload writes into the media store (cli/cache_db.py) is not media."""
    return sum(len([name for name in names if name != MEDIA_STORE_ID_FILE]) for _, _, names in os.walk(root))
