"""One run at a time per cache.db: an exclusive flock on a lock file beside it.

Two runs on one cache.db would each take the other's work for their own (bogus failures,
files counted twice), so every command that writes cache.db, or reads it to report on the
store (verify), holds `CACHE_DB.lock` for as long as it runs. The lock file holds the
holder's pid, host, command and start time, so that a second run can name it. A flock
belongs to the open file: the kernel drops it when the process ends, however it ends
(SIGKILL included), so a lock is never left behind. The file itself stays: removing it could
let two runs each lock a file of their own. (On NFS, Linux takes flock as a POSIX lock on the
server, so runs on two hosts sharing cache.db exclude each other too.)
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass

from synapse_objstore.errors import CacheDbLockError

POLL_INTERVAL = 0.2  # seconds between attempts while waiting for the lock
# A holder writes its details right after taking the lock: how long to keep reading for them.
DETAILS_GRACE = 1.0


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    started: str

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid} on {self.host}, started {self.started})"


class CacheDbLock:
    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, cache_db_path: str, command: str, wait: float = 0) -> CacheDbLock:
        """Take the lock of `cache_db_path`, waiting up to `wait` seconds for a run that holds it."""
        path = f"{os.path.realpath(cache_db_path)}.lock"  # one lock however the file is reached
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise CacheDbLockError(f"cannot lock {cache_db_path}: cannot open {path}: {error.strerror}") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise CacheDbLockError(f"cannot lock {path}: {error.strerror}") from None
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                who = holder.describe() if holder else "a run that did not say which"
                waited = f" (waited {wait:g} s)" if wait else ""
                raise CacheDbLockError(
                    f"{cache_db_path} is in use by another objstore-offload run{waited}: {who}. Only one run at a "
                    f"time may use it: run this again once that one has ended, or give --wait SECONDS to wait for it"
                )
            time.sleep(POLL_INTERVAL)
        lock = cls(fd, path)
        lock._write_holder(command)
        return lock

    def _write_holder(self, command: str) -> None:
        assert self._fd is not None
        started = datetime.datetime.now().astimezone().isoformat(" ", "seconds")
        details = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": started}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(details).encode() + b"\n", 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


def _read_holder(fd: int) -> Holder | None:
    """The details the holder wrote, once they are complete."""
    deadline = time.monotonic() + DETAILS_GRACE
    while True:
        try:
            details = json.loads(os.pread(fd, 4096, 0))
            return Holder(int(details["pid"]), str(details["host"]), str(details["command"]), str(details["started"]))
        except (ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
