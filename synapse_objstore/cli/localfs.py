"""Blocking file operations on the local media store (run them in worker threads)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from synapse_objstore.checksums import FileIdentity
from synapse_objstore.errors import LocalFileChangedError
from synapse_objstore.media import open_media_dirs


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
    Each directory is walked down to once for all its files, and the directories they leave
    empty are removed with the descriptors of that walk (rmdir in the parent, bottom up),
    rather than walked down to again for each file and each level."""
    errors: list[OSError | None] = [None] * len(files)
    by_directory: dict[str, list[int]] = {}
    for index, (media_path, _) in enumerate(files):
        by_directory.setdefault(media_path.rpartition("/")[0], []).append(index)
    for directory, indexes in by_directory.items():
        with open_media_dirs(base_path, directory) as fds:
            if fds is None:  # already gone, with its files
                continue
            deleted = False
            try:
                for index in indexes:
                    media_path, verified = files[index]
                    try:
                        _unlink(fds[-1], media_path.rpartition("/")[2], verified)
                    except OSError as error:  # LocalFileChangedError too
                        errors[index] = error
                    else:
                        deleted = True
            finally:
                if deleted:
                    _remove_empty_directories(base_path, directory.split("/"), fds)
    return errors


def _unlink(directory_fd: int, name: str, verified: FileIdentity | None) -> None:
    try:
        if verified is not None:
            now = FileIdentity.of(os.stat(name, dir_fd=directory_fd, follow_symlinks=False))
            if now != verified:
                raise LocalFileChangedError(
                    f"the local file changed since its upload was verified ({verified.size} bytes then, "
                    f"{now.size} now): kept. The store holds the file as it was verified; which copy is "
                    f"right (was it still being written?) is for an admin to decide")
        os.unlink(name, dir_fd=directory_fd)
    except FileNotFoundError:
        pass


def _remove_empty_directories(base_path: str, names: list[str], fds: list[int]) -> None:
    """rmdir the directory `names` (its components, as `open_media_dirs` opened them into
    `fds`) and its parents while they are empty (rmdir never follows a symlink)."""
    for level in range(len(names) - 1, 0, -1):
        try:
            os.rmdir(names[level], dir_fd=fds[level - 1])
        except OSError:  # not empty, or not ours to remove: either way, stop here
            return
    with _base_dir(base_path) as fd, contextlib.suppress(OSError):
        os.rmdir(names[0], dir_fd=fd)


@contextlib.contextmanager
def _base_dir(base_path: str) -> Iterator[int]:
    fd = os.open(base_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def place_media_file(base_path: str, media_path: str, source: str) -> None:
    """Rename `source` (a file on the media store's filesystem) to `media_path` in the media
    store, making its directories as needed: through real directories only, as upload reads
    and deletes (`open_media_dirs`), so that a restore never writes through a symlink to
    somewhere else. Blocking."""
    directory, _, name = media_path.rpartition("/")
    with open_media_dirs(base_path, directory, make=True) as fds:
        if fds is None:  # removed again as it was made
            raise FileNotFoundError(f"{directory} vanished from the media store as it was made")
        os.replace(source, name, dst_dir_fd=fds[-1])


def new_file_mode() -> int:
    """The permissions a file created now gets (0666 less the umask), as Synapse's media files
    get them. Reading the umask sets it: call this before other threads create files."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
