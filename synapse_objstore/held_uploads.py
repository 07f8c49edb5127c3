"""The bytes of uploads that Synapse keeps only in a temporary file (`enable_local_media_storage: false`).

Synapse (1.146 and later) then writes each new file (upload, thumbnail, remote media) to a
temporary file, runs the media spam checks on it, calls every storage provider's `store_file`
with the media's relative path only, and deletes the file. The provider's spam-check callback
(the one place Synapse names that file) opens it and keeps the open descriptor here, under the
file's FileInfo (the same object Synapse then passes to `store_file`), until `store_file` takes
it. Synapse's unlink then removes the name only: the bytes stay readable through the descriptor
however long a background upload (`store_synchronous: false`) runs, and the kernel frees them
when it is closed, or when the process ends, so a crash leaves nothing behind on disk.

A descriptor that no `store_file` takes (a spam check that runs after ours rejected the upload,
or a provider before ours failed to store it) is closed by the first hold or take after
Synapse deleted the file's name (HeldUploads.close_orphans), or, where two uploads of the same
file crossed, after it is older than `expiry`: so an upload that a client retries against a
failing provider holds no disk space beyond the next upload, and an idle homeserver holds at
most the files of its last uploads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections import deque
from collections.abc import Callable, Hashable

from synapse_objstore.io_loop import submit

logger = logging.getLogger(__name__)

# Where Linux shows a process's open descriptors: opening /proc/self/fd/N opens the file that
# descriptor N holds, unlinked or not, with an offset of its own.
PROC_FD = "/proc/self/fd"


class HeldFile:
    """An open temporary file of Synapse's, and a path to read it by while it is open.

    Backends (plugins too) upload a local file by path, opening it once per part in threads;
    /proc/self/fd/N lets each of them open the unlinked file with an offset of its own, so
    every backend uploads it unchanged, with the same checks. The descriptor is closed only
    once the upload coroutine has ended, so no part that is sent can have been read through
    its number after it was reused (a cancelled upload sends nothing more)."""

    def __init__(self, fd: int, held_at: float) -> None:
        self.fd = fd
        self.held_at = held_at
        # A `take` for the same FileInfo took an older file while this one was held: two uploads
        # of the same file crossed, and this one's `store_file` may still come after Synapse
        # deleted its name (see HeldUploads.close_orphans).
        self.passed_over = False
        # Closed exactly once: by close(), or when the last reference goes (an upload that
        # Synapse cancelled before it began), so that no path forgets the descriptor.
        self._closer = weakref.finalize(self, os.close, fd)

    @property
    def path(self) -> str:
        return f"{PROC_FD}/{self.fd}"

    @property
    def closed(self) -> bool:
        return not self._closer.alive

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def unlinked(self) -> bool:
        """Whether Synapse deleted the file's name (its last link)."""
        return os.fstat(self.fd).st_nlink == 0

    def close(self) -> None:
        """Close the descriptor (freeing an unlinked file's blocks). Call off the reactor thread."""
        self._closer()


def open_held_file(path: str, held_at: float) -> HeldFile:
    """Open Synapse's temporary file. Blocking: call in a thread."""
    return HeldFile(os.open(path, os.O_RDONLY), held_at)


def proc_fd_available() -> bool:
    return os.path.isdir(PROC_FD)


class HeldUploads:
    """Open temporary files by FileInfo, from the spam check until `store_file` takes them.

    Used on the reactor thread only. Two uploads with equal FileInfo (two requests making the
    same thumbnail at once) are held in order and taken in order; either holds the right bytes."""

    def __init__(self, now: Callable[[], float], expiry: float) -> None:
        self._now = now
        self._expiry = expiry
        self._held: dict[Hashable, deque[HeldFile]] = {}

    def __len__(self) -> int:
        return sum(len(files) for files in self._held.values())

    def put(self, file_info: Hashable, held: HeldFile) -> None:
        self.close_expired()
        self._held.setdefault(file_info, deque()).append(held)

    def take(self, file_info: Hashable) -> HeldFile | None:
        """The oldest file held for `file_info`, now the caller's to close; None if none is held."""
        self.close_expired()
        files = self._held.get(file_info)
        if not files:
            return None
        held = files.popleft()
        for waiting in files:
            waiting.passed_over = True
        if not files:
            del self._held[file_info]
        return held

    def close_orphans(self) -> None:
        """Close the files no `store_file` will take: Synapse deletes a temporary file's name
        only after every provider's `store_file` was called, or once the upload failed (a spam
        check after ours rejected it, a provider before ours raised), and `store_file` takes its
        file when it is called. So a held file whose name is gone is an orphan, unless a take of
        its FileInfo passed it over (two uploads of the same file crossed: its own `store_file`
        took the other's file, and the other's `store_file` may still come); that one waits for
        `expiry`."""
        for file_info, files in list(self._held.items()):
            for orphan in [held for held in files if not held.passed_over and held.unlinked()]:
                files.remove(orphan)
                logger.warning("closing the temporary file of %r: Synapse deleted it and no upload took it (another "
                               "spam check rejected it, or a storage provider before this one failed)", file_info)
                close_in_thread(orphan)
            if not files:
                del self._held[file_info]

    def close_expired(self) -> None:
        self.close_orphans()
        oldest_kept = self._now() - self._expiry
        for file_info, files in list(self._held.items()):
            while files and files[0].held_at < oldest_kept:
                expired = files.popleft()
                logger.warning("closing the temporary file of %r: no upload took it within %g s (another spam "
                               "check rejected it, or a storage provider before this one failed)",
                               file_info, self._expiry)
                close_in_thread(expired)
            if not files:
                del self._held[file_info]


def close_in_thread(held: HeldFile) -> None:
    """Close `held` in a thread of the I/O loop: freeing a large unlinked file takes disk I/O."""
    submit(asyncio.to_thread(held.close))
