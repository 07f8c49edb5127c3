"""Blocking file operations on the local media store (run them in worker threads)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from synapse_objstore.checksums import FileIdentity
from synapse_objstore.errors import LocalFileChangedError
from synapse_objstore.media import open_media_dir


def remove_media_file(base_path: str, media_path: str, verified: FileIdentity | None = None) -> None:
    """Delete a file of the media store, then every directory it leaves empty, up to (not
    including) the media store itself. A file already gone is not an error. With `verified`
    (the file as it was read for its verified upload), a file that is no longer that file
    (written to, truncated or replaced since: its new bytes are in no copy) raises
    LocalFileChangedError and stays.

    Nothing is followed below the top-level directory (see `open_media_dir`): a symlinked
    directory on the way raises MediaFileError, and a symlink in the file's place is itself
    removed (unlink never follows one), so a delete never reaches outside the media store.
    """
    [error] = remove_media_files(base_path, [(media_path, verified)])
    if error is not None:
        raise error


def remove_media_files(base_path: str, files: list[tuple[str, FileIdentity | None]]) -> list[OSError | None]:
    """`remove_media_file` for each (media path, verified identity), in one go (one worker
    thread's turn for a media's files): the error of each file, None where it was deleted.
    Each directory is pruned once, after the last of its files, rather than tried after
    each one while the others still fill it."""
    errors: list[OSError | None] = []
    emptied: dict[str, None] = {}  # the directories files were deleted from, in order
    try:
        for media_path, verified in files:
            directory, _, name = media_path.rpartition("/")
            try:
                _unlink(base_path, directory, name, verified)
            except OSError as error:  # LocalFileChangedError too; a MediaFileError goes on
                errors.append(error)
                continue
            errors.append(None)
            emptied[directory] = None
    finally:
        for directory in emptied:
            _remove_empty_directories(base_path, directory)
    return errors


def _unlink(base_path: str, directory: str, name: str, verified: FileIdentity | None) -> None:
    with open_media_dir(base_path, directory) as fd:
        if fd is None:
            return
        try:
            if verified is not None:
                now = FileIdentity.of(os.stat(name, dir_fd=fd, follow_symlinks=False))
                if now != verified:
                    raise LocalFileChangedError(
                        f"the local file changed since its upload was verified ({verified.size} bytes then, "
                        f"{now.size} now): kept. The store holds the file as it was verified; which copy is "
                        f"right (was it still being written?) is for an admin to decide")
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass


def _remove_empty_directories(base_path: str, directory: str) -> None:
    """rmdir `directory` and its parents while they are empty (rmdir never follows a symlink)."""
    parts = directory.split("/")
    while parts:
        *parent, name = parts
        with open_media_dir(base_path, "/".join(parent)) if parent else _base_dir(base_path) as fd:
            if fd is None:
                return
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:  # not empty, or not ours to remove: either way, stop here
                return
        parts = parent


@contextlib.contextmanager
def _base_dir(base_path: str) -> Iterator[int]:
    fd = os.open(base_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
