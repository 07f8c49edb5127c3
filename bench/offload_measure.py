"""One command in a fresh process, measured from outside: wall time and the child's peak RSS.

The peak RSS is the command's own `ru_maxrss` (no sampling, nothing missed between samples),
as GNU time reads it with wait4. Not `os.wait4` on a child of this driver: Linux carries a
process's RSS high-water mark across execve, so a child forked from the driver would report
at least the driver's own RSS. GNU time is small, and the command is its fresh child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
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
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = -9
        seconds = time.monotonic() - started
        lines = maxrss.read().split()
    with log.open("rb") as done:
        done.seek(start_offset)
        tail = done.read()[-2000:].decode(errors="replace")
    peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return Measured(argv=list(argv), returncode=returncode, seconds=round(seconds, 3),
                    peak_rss_mib=round(peak_kib / 1024, 1), stdout_tail=tail)
