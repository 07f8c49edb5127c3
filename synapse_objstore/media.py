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

import os
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

MediaType = Literal["local", "remote"]

ALLOWED_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-" + ".[]:")
FORBIDDEN_NAMES = frozenset({"", ".", ".."})


def validate_path_component(name: str) -> str:
    """`name` if Synapse would accept it as one path component, else ValueError."""
    if not ALLOWED_CHARACTERS.issuperset(name) or name in FORBIDDEN_NAMES:
        raise ValueError(f"invalid media path component: {name!r}")
    return name


def _split_id(file_id: str) -> list[str]:
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
        """Media paths of the original and thumbnails present under `base_path` right now."""
        found = []
        if os.path.isfile(os.path.join(base_path, self.file_path)):
            found.append(self.file_path)
        found.extend(sorted(self._local_thumbnails(base_path)))
        return found

    def _local_thumbnails(self, base_path: str) -> Iterator[str]:
        try:
            with os.scandir(os.path.join(base_path, self.thumbnail_dir)) as entries:
                for entry in entries:
                    if entry.is_file():
                        yield f"{self.thumbnail_dir}/{entry.name}"
        except (FileNotFoundError, NotADirectoryError):
            return

    def describe(self) -> str:
        return f"{self.origin}/{self.media_id}" if self.origin else self.media_id


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
