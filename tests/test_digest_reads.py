"""`read_and_digest`, the one read of a local file that upload and verify make: what it computes,
and what it allocates on the way (most media are small files; each one read costs its size,
not a whole block)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from synapse_objstore.checksums import READ_BLOCK, read_and_digest

MiB = 1024 * 1024


def multipart_etag(data: bytes, part_size: int) -> str:
    parts = [hashlib.md5(data[i:i + part_size]).digest() for i in range(0, len(data), part_size)]
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


@pytest.mark.parametrize("size", [0, 1, 100_000, READ_BLOCK - 1, READ_BLOCK, READ_BLOCK + 1, 11 * MiB + 3])
def test_digest_and_kept_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "file"
    path.write_bytes(data)
    digest, kept = read_and_digest(str(path), (5 * MiB, 8 * MiB), keep=True)
    assert (digest.size, digest.md5, digest.sha256) == (
        size, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    if size >= 5 * MiB:
        assert digest.multipart == {5 * MiB: multipart_etag(data, 5 * MiB), 8 * MiB: multipart_etag(data, 8 * MiB)}
    assert kept == (data if size <= READ_BLOCK else None)


def test_a_small_file_is_read_without_a_whole_block(tmp_path: Path) -> None:
    path = tmp_path / "thumbnail"
    path.write_bytes(os.urandom(20_000))
    tracemalloc.start()
    try:
        read_and_digest(str(path), (8 * MiB,), keep=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"{peak} bytes allocated to read 20 KB"


def test_a_large_file_is_read_through_one_block(tmp_path: Path) -> None:
    path = tmp_path / "video"
    path.write_bytes(os.urandom(10 * MiB))
    tracemalloc.start()
    try:
        read_and_digest(str(path), (8 * MiB,))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * READ_BLOCK, f"{peak} bytes allocated at once to read 10 MiB"
