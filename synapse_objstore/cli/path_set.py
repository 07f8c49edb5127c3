"""A set of media paths in 8 bytes each, for listings of tens of millions of objects.

A Python set of the paths themselves costs 100-200 bytes per path (20 million objects: a few
GB). This keeps a 64-bit BLAKE2b digest of each path instead, in sorted arrays of unsigned
64-bit integers: 20 million paths take 160 MB, plus up to RUN_SIZE digests being collected
(about 40 MB) before they are sorted into an array of their own.

Two different paths share a digest with a probability of about n²/2^65 (for n = 20 million,
one in a hundred thousand); the set then answers "present" for a path that is not. Callers
use it only where such a false "present" is harmless.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left

RUN_SIZE = 1 << 20


def _digest(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "little")


class PathSet:
    def __init__(self) -> None:
        self._runs: list[array[int]] = []  # each sorted
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
        self._seal()
        digest = _digest(path)
        for run in self._runs:
            index = bisect_left(run, digest)
            if index < len(run) and run[index] == digest:
                return True
        return False

    def __len__(self) -> int:
        """Paths added (a path added twice counts twice)."""
        return self._count

    def _seal(self) -> None:
        if self._pending:
            self._runs.append(array("Q", sorted(self._pending)))
            self._pending = []
