"""A set of media paths in 8 bytes each, for listings of tens of millions of objects.

A Python set of the paths themselves costs 100-200 bytes per path (20 million objects: a few
GB). This keeps a 64-bit BLAKE2b digest of each path instead, in sorted arrays of unsigned
64-bit integers: 20 million paths take 160 MB, plus up to RUN_SIZE digests being collected
(about 3 MB as Python ints) before they are sorted and put away.

The digests are kept in BUCKETS buckets by their top bits, each a sorted array. A set is filled
first and looked up afterwards (reconcile lists the whole store, then looks its media up): the
digests sealed meanwhile wait in each bucket as sorted runs, and the first lookup after adding
merges each bucket's runs into one array. So a lookup is one binary search in one array however
many paths were added (with a list of runs it would be one search per run: a cost per lookup
growing with the set, quadratic in all), and the merge needs room for one bucket at a time, not
a second copy of the set.

Two different paths share a digest with a probability of about n²/2^65 (for n = 20 million,
one in a hundred thousand); the set then answers "present" for a path that is not. Callers
use it only where such a false "present" is harmless.
"""

from __future__ import annotations

import hashlib
import itertools
from array import array
from bisect import bisect_left

RUN_SIZE = 1 << 16
BUCKET_BITS = 8
BUCKETS = 1 << BUCKET_BITS
_SHIFT = 64 - BUCKET_BITS


def _digest(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "little")


class PathSet:
    def __init__(self) -> None:
        self._buckets: list[list[array[int]]] = [[] for _ in range(BUCKETS)]  # sorted runs; one once merged
        self._unmerged = False
        self._pending: list[int] = []
        self._count = 0

    def add(self, path: str) -> None:
        self._pending.append(_digest(path))
        self._count += 1
        if len(self._pending) >= RUN_SIZE:
            self._seal()

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        if self._pending:
            self._seal()
        if self._unmerged:
            self._merge()
        digest = _digest(path)
        runs = self._buckets[digest >> _SHIFT]
        if not runs:
            return False
        run = runs[0]
        index = bisect_left(run, digest)
        return index < len(run) and run[index] == digest

    def __len__(self) -> int:
        """Paths added (a path added twice counts twice)."""
        return self._count

    def _seal(self) -> None:
        """The pending digests, sorted, as one more run in each bucket."""
        pending = sorted(self._pending)
        self._pending = []
        start = 0
        for bucket, runs in enumerate(self._buckets):
            end = bisect_left(pending, (bucket + 1) << _SHIFT, start)
            if end > start:
                runs.append(array("Q", pending[start:end]))
                self._unmerged = self._unmerged or len(runs) > 1
            start = end

    def _merge(self) -> None:
        """Each bucket's runs as one sorted array (timsort merges sorted runs in one pass each)."""
        for bucket, runs in enumerate(self._buckets):
            if len(runs) > 1:
                self._buckets[bucket] = [array("Q", sorted(itertools.chain.from_iterable(runs)))]
        self._unmerged = False
