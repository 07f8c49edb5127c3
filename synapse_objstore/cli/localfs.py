"""Blocking file operations on the local media store (run them in worker threads)."""

from __future__ import annotations

import contextlib
import os


def remove_media_file(base_path: str, media_path: str) -> None:
    """Delete a file of the media store, then every directory it leaves empty, up to (not
    including) the media store itself. A file already gone is not an error."""
    local_path = os.path.join(base_path, media_path)
    with contextlib.suppress(FileNotFoundError):
        os.remove(local_path)
    base = os.path.normpath(base_path)
    directory = os.path.dirname(os.path.normpath(local_path))
    while directory != base and directory.startswith(base + os.sep):
        try:
            os.rmdir(directory)
        except OSError:  # not empty, or not ours to remove: either way, stop here
            return
        directory = os.path.dirname(directory)


def file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
