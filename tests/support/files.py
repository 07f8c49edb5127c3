"""Files a test puts on disk for the store to upload (a file in Synapse's media store:
`synapse_objstore.testing.suite.put_media`)."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, data: bytes) -> str:
    """`data` at `path` (its directories made); the path as a string, as the store takes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)
