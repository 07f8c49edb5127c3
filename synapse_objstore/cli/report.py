"""Counters of a run, the closing summary (human or JSON), and progress bars."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import click
import humanize
import tqdm

MAX_LISTED_FAILURES = 50
# Failures a run keeps, each with its path and error, for --json; the rest are only counted, so
# that a run on millions of objects that all fail (a forgotten SSE-C key, say) holds bounded memory.
MAX_KEPT_FAILURES = 10_000


def human_size(n: int) -> str:
    return humanize.naturalsize(n, gnu=True)


@dataclass
class Failure:
    path: str
    error: str


@dataclass
class Summary:
    """What a command did. `media` counts media considered; bytes are file sizes."""

    command: str
    dry_run: bool = False
    media: int = 0
    media_uploaded: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    files_verified: int = 0
    bytes_verified: int = 0
    media_deleted: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    files_restored: int = 0
    bytes_restored: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    files_missing: int = 0
    media_retried: int = 0  # media tried once more at the end of the run, after a failure of the store
    failed: list[Failure] = field(default_factory=list)  # the first MAX_KEPT_FAILURES of them
    failures: int = 0  # all of them
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def fail(self, path: str, error: str | BaseException) -> None:
        with self._lock:
            self.failures += 1
            if len(self.failed) < MAX_KEPT_FAILURES:
                self.failed.append(Failure(path, str(error)))

    def merge(self, other: Summary) -> None:
        """Add another summary's counts and failures to this one's."""
        counts = {f.name: getattr(other, f.name) for f in fields(other) if f.name in self.__dataclass_fields__}
        with self._lock:
            for name, value in counts.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    setattr(self, name, getattr(self, name) + value)
            self.failed.extend(other.failed[:max(0, MAX_KEPT_FAILURES - len(self.failed))])

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_") and f.name != "failed"
        }
        data["failed"] = [asdict(failure) for failure in self.failed]
        data["files_failed"] = self.failures
        return data

    def failure_lines(self, noun: str) -> list[str]:
        """"Failed N <noun>", then the first failures, one a line."""
        lines = [f"Failed {self.failures} {noun}".rstrip()]
        lines += [f"  {failure.path}: {failure.error}" for failure in self.failed[:MAX_LISTED_FAILURES]]
        if self.failures > MAX_LISTED_FAILURES:
            more = "see --json" if self.failures <= MAX_KEPT_FAILURES else f"--json lists the first {MAX_KEPT_FAILURES}"
            lines.append(f"  ... and {self.failures - MAX_LISTED_FAILURES} more ({more})")
        return lines

    def lines(self) -> list[str]:
        would = "Would have " if self.dry_run else ""
        lines = [f"Considered {self.media} media"]
        if self.command == "upload":
            lines += [
                f"{would}Uploaded {self.media_uploaded} media out of {self.media}",
                f"{would}Uploaded {self.files_uploaded} files",
                f"{would}Uploaded {human_size(self.bytes_uploaded)}",
                f"Verified {self.files_verified} files ({human_size(self.bytes_verified)})",
                f"{would}Deleted {self.media_deleted} media",
                f"{would}Deleted {self.files_deleted} files",
                f"{would}Deleted {human_size(self.bytes_deleted)}",
            ]
            if self.media_retried:
                lines.append(f"Retried {self.media_retried} media once more after the store failed")
        elif self.command == "restore":
            lines.append(f"{would}Restored {self.files_restored} files ({human_size(self.bytes_restored)})")
        elif self.command == "migrate":
            lines.append(f"{would}Copied {self.files_copied} files ({human_size(self.bytes_copied)})")
            lines.append(f"Verified {self.files_verified} files ({human_size(self.bytes_verified)})")
        elif self.command == "verify":
            lines.append(f"Verified {self.files_verified} files ({human_size(self.bytes_verified)})")
            lines.append(f"Missing {self.files_missing} files")
        return lines + self.failure_lines("files")

    def emit(self, as_json: bool) -> None:
        if as_json:
            click.echo(json.dumps(self.as_dict(), indent=2, sort_keys=True))
        else:
            for line in self.lines():
                click.echo(line)


def progress_bar(enabled: bool, total: int | None, unit: str = "media") -> tqdm.tqdm[Any]:
    """A tqdm bar on stderr, or a silent counter when progress is off."""
    return tqdm.tqdm(total=total, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
