"""One command in a fresh process, measured from outside: wall time, CPU time and peak RSS.

The peak RSS is the command's own `ru_maxrss` (no sampling, nothing missed between samples),
as GNU time reads it with wait4. Not `os.wait4` on a child of this driver: Linux carries a
process's RSS high-water mark across execve, so a child forked from the driver would report
at least the driver's own RSS. GNU time is small, and the command is its fresh child.

The CPU time (user and system) is `os.wait4`'s rusage of GNU time, which on Linux includes the
children it reaped: the command and every process the command waited for. GNU time's own share
is about a millisecond; its `%U`/`%S` would give only 10 ms resolution.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Measured:
    argv: list[str]
    returncode: int
    seconds: float
    peak_rss_mib: float
    stdout_tail: str
    cpu_user_s: float
    cpu_sys_s: float

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a measured command: ours, minus anything that would send S3 traffic
    elsewhere than the given endpoint, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return {**env, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONDONTWRITEBYTECODE": "1", **extra}


def run_measured(argv: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path, timeout: float,
                 stdout: Path | None = None) -> Measured:
    """Run argv in cwd; stdout (or only stderr, when `stdout` names a file for the rest) goes to
    `log`, and its last lines are kept in the result."""
    with log.open("ab") as out, tempfile.NamedTemporaryFile("r", suffix=".maxrss") as maxrss, \
            (stdout.open("wb") if stdout else contextlib.nullcontext(out)) as own_stdout:
        out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)} (in {cwd})\n".encode())
        out.flush()
        start_offset = out.tell()
        started = time.monotonic()
        # its own session: on a timeout, the group (GNU time and the command) is killed by its id
        process = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", maxrss.name, *argv], cwd=cwd, env=dict(env),
                                   stdout=own_stdout, stderr=out, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):  # it ended as the timer fired
                os.killpg(process.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # the driver is stopping (SIGTERM, ^C): so does the command, in its own session
            os.killpg(process.pid, signal.SIGKILL)
            os.waitpid(process.pid, 0)
            raise
        finally:
            timer.cancel()
        seconds = time.monotonic() - started
        process.returncode = returncode = -9 if timed_out.is_set() else os.waitstatus_to_exitcode(status)
        lines = maxrss.read().split()
    with log.open("rb") as done:
        done.seek(start_offset)
        tail = done.read()[-2000:].decode(errors="replace")
    peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return Measured(argv=list(argv), returncode=returncode, seconds=round(seconds, 3),
                    peak_rss_mib=round(peak_kib / 1024, 1), stdout_tail=tail,
                    cpu_user_s=round(usage.ru_utime, 4), cpu_sys_s=round(usage.ru_stime, 4))
