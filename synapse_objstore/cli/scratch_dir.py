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
import time

NEW = "new-"  # a run's directory before it holds its lock: abandoned only once it is old
RUN = "run-"
# A run holds its directory's lock microseconds after making it; a "new-" directory whose lock
# is free and which is older than this was left by a run killed in between.
NEW_ABANDONED_AFTER = 60.0


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
    """Remove the directories of runs that ended without cleaning up (their lock is free; for
    a "new-" one, also older than NEW_ABANDONED_AFTER), and the files earlier versions' runs
    left in `parent` itself."""
    now = time.time()
    for entry in os.scandir(parent):
        if entry.name.startswith(NEW) and now - entry.stat(follow_symlinks=False).st_mtime < NEW_ABANDONED_AFTER:
            continue  # maybe a run starting now, between making it and locking it
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
