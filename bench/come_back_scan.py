"""What it costs to look for offloaded media back on local disk (README: "Media that come back").

Builds, in a temporary directory, a media store holding LOCAL media (an original and two
thumbnails each, as Synapse lays them out) and a cache.db with OFFLOADED media marked deleted,
then times, each after one warm-up pass:

- check-deleted's full look: every offloaded media, one lookup of its original and one of its
  thumbnail directory (`find_returned` without Synapse's database);
- the alternative that was not taken: a walk of the media store's four top-level directories,
  mapping each file found back to its media;
- the nightly look's cache.db side: which of a day's ACCESSED media are offloaded (the disk
  lookups then cost as in the first line, for those only).

    python bench/come_back_scan.py [--offloaded 100000] [--local 100000] [--accessed 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synapse_objstore.cli.cache_db import CacheDb
from synapse_objstore.cli.returned import find_returned
from synapse_objstore.media import Media, parse_media_path

TOPS = ("local_content", "local_thumbnails", "remote_content", "remote_thumbnail")


def media_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters) for _ in range(24))


def build(root: Path, offloaded: int, local: int) -> tuple[str, CacheDb, list[str]]:
    rng = random.Random(1)
    base = root / "media_store"
    for _ in range(local):
        media = Media("", (mid := media_id(rng)), mid, "local")
        (base / media.file_path).parent.mkdir(parents=True, exist_ok=True)
        (base / media.file_path).write_bytes(b"x")
        (base / media.thumbnail_dir).mkdir(parents=True)
        for name in ("32-32-image-png-crop", "640-480-image-jpeg-scale"):
            (base / media.thumbnail_dir / name).write_bytes(b"t")
    ids = [media_id(rng) for _ in range(offloaded)]
    cache = CacheDb(str(root / "cache.db"))
    cache.add_media(("", i, i, "local") for i in ids)
    cache.set_deleted(Media("", i, i, "local") for i in ids)
    return str(base), cache, ids


def full_look(base: str, cache: CacheDb) -> float:
    start = time.perf_counter()
    found = find_returned(cache, base, None, True, True, lambda *_: None, lambda _: None, lambda: None)
    assert found.media == 0
    return time.perf_counter() - start


def walk(base: str) -> tuple[float, int]:
    start = time.perf_counter()
    files = 0
    for top in TOPS:
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(os.path.join(base, directory)))
            except FileNotFoundError:
                continue
            for entry in entries:
                path = f"{directory}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    files += 1
                    parse_media_path(path)
    return time.perf_counter() - start, files


def accessed_lookup(cache: CacheDb, ids: list[str], accessed: int) -> float:
    rng = random.Random(2)
    day = rng.sample(ids, accessed // 2) + [media_id(rng) for _ in range(accessed - accessed // 2)]
    start = time.perf_counter()
    for chunk in range(0, len(day), 20_000):
        cache.offloaded_among("local", [(i,) for i in day[chunk:chunk + 20_000]])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offloaded", type=int, default=100_000)
    parser.add_argument("--local", type=int, default=100_000)
    parser.add_argument("--accessed", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / ".work" if (Path(__file__).parent / ".work").is_dir()
                                     else None) as tmp:
        print(f"building {args.local} local media and {args.offloaded} offloaded ones...", file=sys.stderr)
        base, cache, ids = build(Path(tmp), args.offloaded, args.local)
        full_look(base, cache)
        elapsed = full_look(base, cache)
        print(f"check-deleted --full: {args.offloaded} offloaded media in {elapsed:.2f} s: "
              f"{args.offloaded / elapsed:,.0f} media/s")
        walk(base)
        elapsed, files = walk(base)
        print(f"walk of the media store: {args.local} local media ({files} files) in {elapsed:.2f} s: "
              f"{args.local / elapsed:,.0f} media/s")
        elapsed = accessed_lookup(cache, ids, args.accessed)
        print(f"nightly look, cache.db side: {args.accessed} accessed media in {elapsed:.3f} s: "
              f"{args.accessed / elapsed:,.0f} media/s")


if __name__ == "__main__":
    main()
