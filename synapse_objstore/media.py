"""Synapse's media layout on disk, which is also the object key layout (after the prefix).

The path functions build exactly what `synapse.media.filepath.MediaFilePaths` builds
(matrix-synapse 1.163), checking each component the same way, without importing Synapse:

    local_content/ab/cd/efgh...                       the original of local media 'abcdefgh...'
    local_thumbnails/ab/cd/efgh.../W-H-TOP-SUB-METHOD  its thumbnails
    remote_content/ORIGIN/ab/cd/efgh...                the original of remote media, by filesystem_id
    remote_thumbnail/ORIGIN/ab/cd/efgh.../W-H-TOP-SUB-METHOD

Paths are relative and '/'-separated (POSIX only, as Synapse itself).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from synapse_objstore.errors import MediaFileError

MediaType = Literal["local", "remote"]

ALLOWED_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-" + ".[]:")
FORBIDDEN_NAMES = frozenset({"", ".", ".."})
# Where Synapse keeps the media files the commands offload (URL previews are never offloaded).
MEDIA_DIRECTORIES = ("local_content", "local_thumbnails", "remote_content", "remote_thumbnail")
# The longest file name Linux file systems take (ext4, XFS, Btrfs: 255 bytes; the allowed
# characters are ASCII, one byte each). Synapse does not check it: the file system refuses.
NAME_MAX = 255
# What `_split_id` accepts, in one match: three components of allowed characters, none of
# them "." or "..", the last at most NAME_MAX long (update-db checks every id it syncs).
_ALLOWED = "[" + re.escape("".join(sorted(ALLOWED_CHARACTERS))) + "]"
_FILE_ID = re.compile(rf"(?!\.\.){_ALLOWED}{{2}}(?!\.\.){_ALLOWED}{{2}}(?!\.\.?\Z){_ALLOWED}{{1,{NAME_MAX}}}\Z")


def printable(text: object) -> str:
    """`text` as it may go in a message: itself when it is printable, else its repr (a
    newline, NUL or terminal escape in a hostile id must not garble the output)."""
    return text if isinstance(text, str) and text.isprintable() else repr(text)


def validate_path_component(name: str) -> str:
    """`name` if Synapse would accept it as one path component, else ValueError."""
    if not isinstance(name, str) or not ALLOWED_CHARACTERS.issuperset(name) or name in FORBIDDEN_NAMES:
        raise ValueError(f"invalid media path component: {name!r}")
    if len(name) > NAME_MAX:
        raise ValueError(f"invalid media path component: {name[:24]!r}... is {len(name)} characters long, "
                         f"longer than a file name can be ({NAME_MAX})")
    return name


def _split_id(file_id: str) -> list[str]:
    if isinstance(file_id, str) and _FILE_ID.match(file_id):
        return [file_id[0:2], file_id[2:4], file_id[4:]]
    if not isinstance(file_id, str):
        raise ValueError(f"invalid media id {file_id!r}: not text")  # fails that media, as any bad id
    # the component at fault, named
    return [validate_path_component(part) for part in (file_id[0:2], file_id[2:4], file_id[4:])]


def thumbnail_file_name(width: int, height: int, content_type: str, method: str | None) -> str:
    """`W-H-TOP-SUB-METHOD`; without a method, the legacy name of old remote thumbnails."""
    top_level_type, sub_type = content_type.split("/")
    # Synapse's own format strings, kept verbatim
    if method is None:
        return "%i-%i-%s-%s" % (width, height, top_level_type, sub_type)  # noqa: UP031
    return "%i-%i-%s-%s-%s" % (width, height, top_level_type, sub_type, method)  # noqa: UP031


def local_media_path(media_id: str) -> str:
    return "/".join(["local_content", *_split_id(media_id)])


def local_thumbnail_dir(media_id: str) -> str:
    return "/".join(["local_thumbnails", *_split_id(media_id)])


def local_thumbnail_path(media_id: str, width: int, height: int, content_type: str, method: str) -> str:
    name = validate_path_component(thumbnail_file_name(width, height, content_type, method))
    return f"{local_thumbnail_dir(media_id)}/{name}"


def remote_media_path(server_name: str, file_id: str) -> str:
    return "/".join(["remote_content", validate_path_component(server_name), *_split_id(file_id)])


def remote_thumbnail_dir(server_name: str, file_id: str) -> str:
    return "/".join(["remote_thumbnail", validate_path_component(server_name), *_split_id(file_id)])


def remote_thumbnail_path(
    server_name: str, file_id: str, width: int, height: int, content_type: str, method: str | None
) -> str:
    """A remote thumbnail; `method=None` gives the legacy name Synapse may still have on disk."""
    name = validate_path_component(thumbnail_file_name(width, height, content_type, method))
    return f"{remote_thumbnail_dir(server_name, file_id)}/{name}"


@dataclass(frozen=True)
class Media:
    """One media as cache.db knows it: local media have origin '' and filesystem_id == media_id."""

    origin: str
    media_id: str
    filesystem_id: str
    type: MediaType

    @property
    def file_path(self) -> str:
        """The original's media path."""
        if self.type == "local":
            return local_media_path(self.filesystem_id)
        if self.type == "remote":
            return remote_media_path(self.origin, self.filesystem_id)
        raise ValueError(f"unexpected media type {self.type!r} for media {self.media_id!r}")

    @property
    def thumbnail_dir(self) -> str:
        """The media directory holding its thumbnails (no trailing '/')."""
        if self.type == "local":
            return local_thumbnail_dir(self.filesystem_id)
        if self.type == "remote":
            return remote_thumbnail_dir(self.origin, self.filesystem_id)
        raise ValueError(f"unexpected media type {self.type!r} for media {self.media_id!r}")

    def local_files(self, base_path: str) -> list[str]:
        """Media paths of the original and thumbnails present under `base_path` right now.

        Blocking (run it in a thread). Below the top-level directory (local_content, ...) no
        symlink is followed: a symlink, directory or anything else that is not a regular file
        where a file of this media should be raises MediaFileError, as does a thumbnail name
        Synapse would not write, so that the media fails instead of being taken as offloaded.
        """
        found = []
        directory, _, name = self.file_path.rpartition("/")
        with open_media_dir(base_path, directory) as fd:
            if fd is not None and _is_regular_file(fd, name, self.file_path):
                found.append(self.file_path)
        with open_media_dir(base_path, self.thumbnail_dir) as fd:
            if fd is not None:
                found.extend(sorted(self._local_thumbnails(fd)))
        return found

    def _local_thumbnails(self, directory_fd: int) -> Iterator[str]:
        with os.scandir(directory_fd) as entries:
            for entry in entries:
                media_path = f"{self.thumbnail_dir}/{printable(entry.name)}"
                try:
                    validate_path_component(entry.name)
                except ValueError:
                    raise MediaFileError(f"{media_path}: not a thumbnail name Synapse writes") from None
                if not entry.is_file(follow_symlinks=False):
                    kind = _kind(entry.stat(follow_symlinks=False).st_mode)
                    raise MediaFileError(f"{media_path}: not a regular file ({kind})")
                yield media_path

    def describe(self) -> str:
        return printable(f"{self.origin}/{self.media_id}" if self.origin else self.media_id)


@contextlib.contextmanager
def open_media_dir(base_path: str, directory: str) -> Iterator[int | None]:
    """A file descriptor of `directory` (a media path) in the media store, or None when it is
    not there. The top-level directory (local_content, ...) may be a symlink, as an admin may
    put it on another disk; below it, every component must be a real directory (O_NOFOLLOW):
    anything else raises MediaFileError, so no caller ever reads or deletes through a link."""
    with open_media_dirs(base_path, directory) as fds:
        yield fds[-1] if fds is not None else None


@contextlib.contextmanager
def open_media_dirs(base_path: str, directory: str, make: bool = False) -> Iterator[list[int] | None]:
    """`open_media_dir`, with the descriptors of every directory on the way: one per component
    of `directory`, the top-level one first. A caller removing the directories it empties
    (rmdir of each in its parent, bottom up) needs no second walk down from the media store.
    `make`: a directory not there is made (each in its parent's descriptor), never None."""
    top, *below = directory.split("/")
    where = top
    try:
        fds = [_open_top(os.path.join(base_path, top), make)]
    except FileNotFoundError:
        yield None
        return
    except OSError as error:
        raise _dir_error(base_path, where, error) from None
    try:
        for name in below:
            where = f"{where}/{name}"
            try:
                fds.append(_open_below(fds[-1], name, make))
            except FileNotFoundError:
                yield None
                return
            except OSError as error:
                raise _dir_error(base_path, where, error) from None
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _open_top(path: str, make: bool) -> int:
    """The top-level directory (it may be a symlink); made if absent and `make`."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        if not make:
            raise
    os.makedirs(path, exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def _open_below(parent_fd: int, name: str, make: bool) -> int:
    """The directory `name` in `parent_fd`, never through a symlink; made if absent and `make`
    (tried first as there: most are, and a failed mkdir costs a raised exception)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except FileNotFoundError:
        if not make:
            raise
    with contextlib.suppress(FileExistsError):  # made meanwhile by another job
        os.mkdir(name, dir_fd=parent_fd)
    return os.open(name, flags, dir_fd=parent_fd)


def _dir_error(base_path: str, where: str, error: OSError) -> MediaFileError:
    try:
        kind = _kind(os.lstat(os.path.join(base_path, where)).st_mode)
    except OSError:
        kind = ""
    if kind and kind != "a directory":
        return MediaFileError(f"{where} is {kind}, not a directory")
    return MediaFileError(f"cannot open {where}: {error.strerror or error}")


def _is_regular_file(directory_fd: int, name: str, media_path: str) -> bool:
    """Whether `name` in that directory is a regular file (False if absent); else MediaFileError."""
    try:
        mode = os.stat(name, dir_fd=directory_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise MediaFileError(f"cannot look at {media_path}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise MediaFileError(f"{media_path}: not a regular file ({_kind(mode)})")
    return True


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a device")


# The date directory of URL previews in Synapse's newer layout
URL_CACHE_DATE = re.compile(r"^\d\d\d\d-\d\d-\d\d$")


@dataclass(frozen=True)
class MediaOwner:
    """The media an object belongs to, as Synapse's database names it.

    `key` is `local_media_repository.media_id` for local media and URL previews, and
    `remote_media_cache.filesystem_id` (with `origin`) for remote media.
    """

    kind: Literal["local", "remote", "url_cache"]
    origin: str
    key: str
    thumbnail: bool


def parse_media_path(media_path: str) -> MediaOwner | None:
    """The media a media path belongs to, or None when the path is not one Synapse writes.

    A path is accepted only if Synapse's own path functions rebuild it exactly from what was
    parsed, so an object of any other shape is never taken for media.
    """
    top, _, rest = media_path.partition("/")
    parts = rest.split("/")
    try:
        owner, rebuilt = _parse(top, parts)
        if owner is not None and owner.thumbnail:
            rebuilt = f"{rebuilt}/{validate_path_component(parts[-1])}"
    except ValueError:
        return None
    return owner if owner is not None and rebuilt == media_path else None


def _parse(top: str, parts: list[str]) -> tuple[MediaOwner | None, str]:
    """The owner and the rebuilt path of the original (or of the thumbnail directory)."""
    if top in ("local_content", "local_thumbnails") and len(parts) == (3 if top == "local_content" else 4):
        media_id = "".join(parts[:3])
        if top == "local_content":
            return MediaOwner("local", "", media_id, False), local_media_path(media_id)
        return MediaOwner("local", "", media_id, True), local_thumbnail_dir(media_id)
    if top in ("remote_content", "remote_thumbnail") and len(parts) == (4 if top == "remote_content" else 5):
        origin, file_id = parts[0], "".join(parts[1:4])
        if top == "remote_content":
            return MediaOwner("remote", origin, file_id, False), remote_media_path(origin, file_id)
        return MediaOwner("remote", origin, file_id, True), remote_thumbnail_dir(origin, file_id)
    if top in ("url_cache", "url_cache_thumbnails"):
        thumbnail = top == "url_cache_thumbnails"
        directory = parts[:-1] if thumbnail else parts
        if len(directory) == 2 and URL_CACHE_DATE.match(directory[0]):
            # Synapse names previews `<date>_<random>` and files them under <date>/<random>
            media_id = f"{directory[0]}_{directory[1]}"
        elif len(directory) == 3:
            media_id = "".join(directory)
        else:
            return None, ""
        return MediaOwner("url_cache", "", media_id, thumbnail), url_cache_dir(top, media_id)
    return None, ""


def url_cache_dir(top: str, media_id: str) -> str:
    """`url_cache/...` (a preview) or `url_cache_thumbnails/...` (its thumbnail directory), as Synapse builds them."""
    if URL_CACHE_DATE.match(media_id[:10]):
        return "/".join([top, validate_path_component(media_id[:10]), validate_path_component(media_id[11:])])
    return "/".join([top, *_split_id(media_id)])
