"""The rclone benchmark's medians, its verdicts against issue 15's targets, and its tables.

A row's figures are medians over the runs that passed their check (a failed run counts as
failed, never as slow): items/s (files, or keys for the listing rows), client CPU per item
(user + system, ms) and peak RSS (MiB). Ratios are ours / the other tool's, each figure's median
over the other's. The targets (issue 15, "ratios in one run, medians"):
- upload --delete: files/s >= 1.5x rclone's and >= s5cmd's; CPU per file <= rclone's; peak RSS
  <= 100 MiB.
- restore, verify, migrate: files/s >= rclone's; CPU per file <= 1.2x rclone's.
- listing for reconcile: keys/s >= rclone's (`lsf -R`). The whole reconcile dry run is shown
  against the same rclone figures, for information: it also reads the database and the disk.
"""

from __future__ import annotations

import statistics
from typing import Any

RSS_LIMIT_MIB = 100.0
UNITS = {"list": "keys", "reconcile": "keys"}
LABELS = {
    ("upload", "ours"): "upload --delete", ("upload", "rclone"): "rclone move --files-from",
    ("upload", "s5cmd"): "s5cmd run (mv lines)",
    ("verify", "ours"): "verify", ("verify", "rclone"): "rclone check --size-only",
    ("restore", "ours"): "restore", ("restore", "rclone"): "rclone copy (back)", ("restore", "s5cmd"): "s5cmd cp",
    ("migrate", "ours"): "migrate", ("migrate", "rclone"): "rclone copy src: dst:",
    ("list", "ours"): "store.list() (reconcile's listing)", ("list", "rclone"): "rclone lsf -R",
    ("reconcile", "ours"): "reconcile dry run, whole",
}
TOOL_ORDER = ("ours", "candidate", "rclone", "s5cmd")


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def fmt(value: Any, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:g}{suffix}" if isinstance(value, float) else f"{value}{suffix}"


def summarise(results: list[dict[str, Any]], rows: list[str]) -> dict[str, dict[str, Any]]:
    """`row/tool` -> medians of the passing runs, with the counts of runs and failures."""
    summary: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(f"{r['row']}/{r['tool']}" for r in results):
        runs = [r for r in results if f"{r['row']}/{r['tool']}" == key]
        good = [r for r in runs if r["ok"]]
        summary[key] = {
            "runs": len(runs), "failed": len(runs) - len(good),
            "items": runs[0]["items"],
            "seconds": median([r["seconds"] for r in good]),
            "items_per_s": median([r["items_per_s"] for r in good]),
            "cpu_ms_per_item": median([r["cpu_ms_per_item"] for r in good]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in good]),
            "peak_rss_mib_worst": max((r["peak_rss_mib"] for r in good), default=None),
            "problems": sorted({p for r in runs for p in r["problems"]}),
            "reported": key.split("/")[0] in rows,
        }
    return summary


def verdict(row: str, mine: dict[str, Any], rclone: dict[str, Any], s5cmd: dict[str, Any]) -> list[tuple[str, bool]]:
    """(what, met) for each target of this row."""
    speed, cpu = ratio(mine.get("items_per_s"), rclone.get("items_per_s")), \
        ratio(mine.get("cpu_ms_per_item"), rclone.get("cpu_ms_per_item"))
    if row == "upload":
        vs_s5cmd = ratio(mine.get("items_per_s"), s5cmd.get("items_per_s"))
        rss = mine.get("peak_rss_mib")
        checks = [("files/s >= 1.5x rclone", speed is not None and speed >= 1.5),
                  ("CPU/file <= rclone", cpu is not None and cpu <= 1.0),
                  (f"RSS <= {RSS_LIMIT_MIB:g} MiB", rss is not None and rss <= RSS_LIMIT_MIB)]
        if s5cmd:
            checks.insert(1, ("files/s >= s5cmd", vs_s5cmd is not None and vs_s5cmd >= 1.0))
        return checks
    if row in ("restore", "verify", "migrate"):
        return [("files/s >= rclone", speed is not None and speed >= 1.0),
                ("CPU/file <= 1.2x rclone", cpu is not None and cpu <= 1.2)]
    if row == "list":
        return [("keys/s >= rclone", speed is not None and speed >= 1.0)]
    return []


def server_verdicts(server: dict[str, Any]) -> list[dict[str, Any]]:
    summary = server["summary"]
    out = []
    for key, mine in summary.items():
        row, tool = key.split("/")
        if tool not in ("ours", "candidate") or not mine["reported"]:
            continue
        other = "list" if row == "reconcile" else row
        for what, met in verdict(row, mine, summary.get(f"{other}/rclone", {}), summary.get(f"{other}/s5cmd", {})):
            out.append({"row": row, "tool": tool, "target": what, "met": met})
    return out


def tables(report: dict[str, Any]) -> str:
    store = report.get("media_store", {})
    lines = [f"Media store: {store.get('media')} media, {store.get('files')} files, "
             f"{store.get('bytes', 0) / 1e6:.0f} MB; eligible: {store.get('eligible_media')} media, "
             f"{store.get('eligible_files')} files, {store.get('eligible_bytes', 0) / 1e6:.0f} MB "
             f"(the upload, restore, verify and migrate rows move these; the listing rows count their objects).",
             f"Tools: {report.get('versions', {})}"]
    for server in report["servers"]:
        summary = server["summary"]
        server["verdicts"] = server_verdicts(server)
        rounds = max((s["runs"] for s in summary.values()), default=0)
        lines += ["", f"### {server['name']} (medians of {rounds} rounds)", "",
                  "| row | tool | items/s | CPU ms/item | peak RSS MiB | runs ok | items/s ours/rclone | "
                  "CPU ours/rclone | RSS ours/rclone | items/s ours/s5cmd | CPU ours/s5cmd | RSS ours/s5cmd | "
                  "targets |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in ("upload", "verify", "restore", "migrate", "list", "reconcile"):
            for tool in TOOL_ORDER:
                s = summary.get(f"{row}/{tool}")
                if s is None or not s["reported"]:
                    continue
                lines.append(table_line(server, row, tool, s))
        failed = [f"{key}: {'; '.join(s['problems'])}" for key, s in summary.items() if s["failed"]]
        lines += [f"\nFAILED runs ({len(failed)} rows): " + " | ".join(failed)] if failed else []
    return "\n".join(lines)


def table_line(server: dict[str, Any], row: str, tool: str, s: dict[str, Any]) -> str:
    summary = server["summary"]
    label = LABELS[(row, "ours" if tool == "candidate" else tool)] + (" (candidate)" if tool == "candidate" else "")
    unit = UNITS.get(row, "files")
    cells = [row, label, fmt(s["items_per_s"], f" {unit}/s"), fmt(s["cpu_ms_per_item"]), fmt(s["peak_rss_mib"]),
             f"{s['runs'] - s['failed']}/{s['runs']}"]
    if tool in ("ours", "candidate"):
        other = "list" if row == "reconcile" else row
        for competitor in ("rclone", "s5cmd"):
            c = summary.get(f"{other}/{competitor}", {})
            cells += [fmt(ratio(s["items_per_s"], c.get("items_per_s")), "x"),
                      fmt(ratio(s["cpu_ms_per_item"], c.get("cpu_ms_per_item")), "x"),
                      fmt(ratio(s["peak_rss_mib"], c.get("peak_rss_mib")), "x")] if c else ["", "", ""]
        met = [v for v in server["verdicts"] if v["row"] == row and v["tool"] == tool]
        cells.append("; ".join(f"{v['target']}: {'yes' if v['met'] else 'NO'}" for v in met)
                     or ("(information)" if row == "reconcile" else ""))
    else:
        cells += [""] * 7
    return "| " + " | ".join(cells) + " |"
