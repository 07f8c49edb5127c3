"""`--shard I/N`: N runs share one offload, each with a cache.db of its own.

A media belongs to shard `crc32(origin/filesystem_id) mod N`: the key its media paths are
made of (a local media's filesystem id is its media id), so the same media lands in the same
shard on every run and on every host, whatever order Synapse's database returns rows in, and
an object key alone names its shard. `update-db` keeps only its shard's media in cache.db, and
every command that works from cache.db (check-deleted, write, upload, verify, restore) then
handles only those. cache.db records the shard it was written for (see CacheDb.shard).
`reconcile` handles the objects and media of its shard (see reconcile.py).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import click

SPEC = re.compile(r"(\d+)/(\d+)")
# A media's shard is its CRC-32 mod N: more shards than CRC-32 values split nothing further.
MAX_COUNT = 2**32


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_whole(self) -> bool:
        """One shard of one: every media (no --shard)."""
        return self.count == 1

    def holds(self, origin: str, filesystem_id: str) -> bool:
        """Whether the media with these paths (origin '' for local media) is of this shard."""
        if self.count == 1:
            return True
        # CRC-32: the same in every process and version (Python's hash() is not), spread evenly
        # over ids Synapse draws at random, and cheap enough for every row of update-db.
        return zlib.crc32(f"{origin}/{filesystem_id}".encode("utf-8", "surrogatepass")) % self.count == self.index


WHOLE = Shard(0, 1)


class ShardParam(click.ParamType):  # type: ignore[type-arg]  # generic in recent click; subscripted, it would fail on the older releases we accept
    """I/N with 0 <= I < N."""

    name = "I/N"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Shard:
        if isinstance(value, Shard):
            return value
        match = SPEC.fullmatch(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not I/N (this run's shard I of N, counting from 0: 0/4, 1/4, 2/4, 3/4)",
                      param, ctx)
        index, count = int(match[1]), int(match[2])
        if count < 1:
            self.fail(f"{value!r}: N, the number of shards, must be at least 1", param, ctx)
        if count > MAX_COUNT:
            self.fail(f"{value!r}: N, the number of shards, must be at most {MAX_COUNT}", param, ctx)
        if index >= count:
            self.fail(f"{value!r}: I must be less than N (shards count from 0: 0/{count} to {count - 1}/{count})",
                      param, ctx)
        return Shard(index, count)
