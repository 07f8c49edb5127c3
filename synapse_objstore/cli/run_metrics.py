"""`--metrics-file`: a command's run summary as a Prometheus textfile.

node_exporter's textfile collector reads every `*.prom` file of its directory at each scrape.
The file is written whole to a temporary file beside it and renamed over it
(prometheus_client's `write_to_textfile`), so a scrape sees the last run or the one before,
never half of one. Every series is labelled `command` and `shard` (`0/1` without --shard), so
that one directory holds the files of every command and shard. docs/metrics.md lists them.

Only counts and times are written: no path, store, database or media name, so no secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from synapse_objstore.cli.report import Summary

PREFIX = "objstore_offload_last_run"
LABELS = ("command", "shard")
# The counters of a Summary, by the unit their names start with (`files_uploaded` is a
# `files` series with action="uploaded"; `media` alone counts the media considered).
UNITS = ("media", "files", "bytes", "objects")


@dataclass
class RunRecord:
    """What one run of a command did, as its textfile says it."""

    command: str
    shard: str
    started: float  # seconds since the epoch
    ended: float
    exit_code: int
    dry_run: bool = False
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (unit, action) -> count
    failures: int = 0
    left: int | None = None  # what the run was to do and left undone, where a command has that


def summary_counts(summary: Summary) -> dict[tuple[str, str], int]:
    """The (unit, action) counts of a Summary (ReconcileSummary's included)."""
    counts: dict[tuple[str, str], int] = {}
    for spec in fields(summary):
        value = getattr(summary, spec.name)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if spec.name == "media":
            counts["media", "considered"] = value
            continue
        unit, _, action = spec.name.partition("_")
        if unit in UNITS and action:
            counts[unit, action] = value
    return counts


def named_counts(counts: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """The counts of a command without a Summary (update-db: synced=...), all of media."""
    return {("media", action): value for action, value in counts.items()}


def registry_of(record: RunRecord) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = {"command": record.command, "shard": record.shard}

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(f"{PREFIX}_{name}", documentation, LABELS, registry=registry).labels(**labels).set(value)

    gauge("start_timestamp_seconds", "When the last run of the command started (Unix time).", record.started)
    gauge("end_timestamp_seconds", "When the last run of the command ended (Unix time).", record.ended)
    gauge("duration_seconds", "How long the last run took.", record.ended - record.started)
    gauge("exit_code", "The last run's exit code: 0 all done, 1 something left or failed, 2 could not run.",
          record.exit_code)
    gauge("success", "1 if the last run ended with exit code 0, else 0.", 1 if record.exit_code == 0 else 0)
    gauge("dry_run", "1 if the last run was a dry run (its counts say what it would have done).", int(record.dry_run))
    gauge("failures", "Media or files that failed in the last run.", record.failures)
    if record.left is not None:
        gauge("left", "What the last run was to do and left undone: media still on local disk after upload "
                      "--delete; orphans left by reconcile's --max-delete.", record.left)
    by_unit: dict[str, Gauge] = {}
    for (unit, action), value in sorted(record.counts.items()):
        if unit not in by_unit:
            by_unit[unit] = Gauge(f"{PREFIX}_{unit}", f"{unit.capitalize()} the last run handled, by action.",
                                  (*LABELS, "action"), registry=registry)
        by_unit[unit].labels(**labels, action=action).set(value)
    return registry


def series_of_others(path: str, command: str, shard: str) -> list[str]:
    """The series in the textfile at `path` that are not this command's and shard's: another
    run's, which writing this run's file would make vanish (a file holds one run). A file that
    does not parse as a textfile is another program's: its first line stands for it."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        return [f"(unreadable: {error})"]
    others: list[str] = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if not sample.name.startswith(PREFIX + "_"):
                    others.append(sample.name)
                elif (labels.get("command"), labels.get("shard")) != (command, shard):
                    others.append(f"{sample.name}{{command={labels.get('command')},shard={labels.get('shard')}}}")
    except ValueError:
        return [text.strip().splitlines()[0][:100]]
    return others


def write_run_metrics(path: str, record: RunRecord) -> None:
    """Replace the textfile at `path` with this run's, atomically."""
    write_to_textfile(os.fspath(path), registry_of(record))
