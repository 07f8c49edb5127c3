"""A restore run's scratch directory in the media store, for downloads not yet checked.

restore downloads each file into a temporary file in the media store (the same file system,
so that the checked file is renamed into place) under .objstore-offload-tmp. Several runs may
use it at once (the shards of one media store, each with its cache.db and its lock), and a run
that is killed (SIGKILL, the OOM killer, a reboot) leaves its partial downloads there. So each
run has a directory of its own under it, and holds a lock (flock) on that directory while it
runs; the kernel drops the lock when the run ends however it ends. A run removes, when it
starts, every directory whose lock nobody holds: what killed runs left. Before, all runs shared
the one directory: a killed run's leftovers made every later run end in a traceback (its
closing rmdir failed), and a shard finishing first removed the directory under the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

NEW = "new-"  # a run's directory before it holds its lock: never taken for an abandoned one
RUN = "run-"


class ScratchDir:
    def __init__(self, parent: str) -> None:
        self.parent = parent
        os.makedirs(parent, exist_ok=True)
        remove_abandoned(parent)
        fresh = tempfile.mkdtemp(prefix=NEW, dir=parent)
        self._fd = os.open(fresh, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.path = os.path.join(parent, RUN + os.path.basename(fresh)[len(NEW):])
        os.rename(fresh, self.path)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        with contextlib.suppress(OSError):  # another run's directory may be in it
            os.rmdir(self.parent)


def remove_abandoned(parent: str) -> None:
    """Remove the directories of runs that ended without cleaning up (their lock is free), and
    the files earlier versions' runs left in `parent` itself."""
    for entry in os.scandir(parent):
        if entry.name.startswith(NEW):
            continue
        if not entry.is_dir(follow_symlinks=False):
            os.remove(entry.path)
            continue
        fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a run is using it
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
