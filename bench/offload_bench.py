"""Offload benchmark (issue 3): `objstore-offload` against `s3_media_upload` from
synapse-s3-storage-provider 1.7.0, and a 16-thread boto3 upload loop as the ceiling.

Run through `bench/run offload`, which builds the two virtual environments. In one run, on
one moto server and one PostgreSQL database (both on 127.0.0.1):

1. `update-db` from scratch on --local-rows + --remote-rows media rows (loaded with COPY into
   Synapse's own media tables), each tool with its own cache.db; then the rerun that finds
   nothing new. Rounds alternate which tool goes first; medians are reported.
2. `upload --delete` of --media media with thumbnails, each run on its own `cp -a` copy of one
   media store, into its own empty bucket; beside them the boto3 ceiling over the same files.
   Afterwards every run is checked: every file in the bucket with its size, no file left
   on disk, every media marked deleted in cache.db. A run that fails the check is reported as
   failed, whatever its speed.
3. The same uploads through bench/latency_proxy.py (20 ms round trip). s3_media_upload goes
   over the first --rtt-old-media media only, when that is set, and the table says so.

With --candidate DIR, `objstore-offload` also runs with synapse_objstore imported from DIR
(first on PYTHONPATH, in ours' venv): a proposed change, measured beside the shipped code.

With --storm, only this (issue 11): `upload --delete` of --storm-media media by each tool,
once, through the fault proxy (synapse_objstore/testing/fault_proxy.py, a process of its own)
answering --storm-503 of the requests with 503 SlowDown and resetting --storm-reset of the
connections. The faults are drawn per object and attempt from --storm-seed, so every tool
meets the same ones. Reported: files left on disk and media not marked deleted after that
one run, the exit code and the wall time.

Each command is a fresh process of its own venv, timed from outside, with its peak RSS from
`os.wait4`. Raw results: bench/.work/offload-results.json; tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

import boto3
import psycopg2
import yaml
from botocore.config import Config

from bench.latency_proxy import LatencyProxy
from bench.offload_fixture import MediaStore, build_media_store, count_files, load_media_rows
from bench.offload_measure import Measured, clean_environment, run_measured
from servers.moto import MotoServer
from servers.postgres import temporary_database
from synapse_objstore.cli.cache_db import CacheDb
from synapse_objstore.testing.fault_proxy import FaultProxyProcess, Faults

MiB = 1024 * 1024
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench-key", "AWS_SECRET_ACCESS_KEY": "bench-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}
DURATION = "30d"  # every benchmark row was last accessed 40-400 days ago
COMMAND_TIMEOUT = 3600.0

# Where s3_media_upload stood on this machine in issue 3, and the targets.
ISSUE_OLD = {"upload_files_per_s": "36-38", "update_db_rows_per_s": "53-58k", "rerun_s": "11-12"}
TARGET_UPLOAD_VS_OLD = 2.5
TARGET_UPLOAD_VS_CEILING = 0.80
TARGET_UPLOAD_VS_OLD_RTT = 10.0
TARGET_UPDATE_DB_VS_OLD = 3.0
TARGET_RERUN_VS_OLD = 10.0
TARGET_PEAK_RSS_MIB = 200.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass(frozen=True)
class Tools:
    ours: Path  # objstore-offload
    old: Path  # s3_media_upload
    old_python: Path  # runs offload_ceiling.py

    @classmethod
    def from_pythons(cls, ours_python: str, old_python: str) -> Tools:
        ours_bin, old_bin = Path(os.path.abspath(ours_python)).parent, Path(os.path.abspath(old_python)).parent
        return cls(ours=ours_bin / "objstore-offload", old=old_bin / "s3_media_upload", old_python=old_bin / "python")


# ---------------------------------------------------------------- update-db


def cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM media").fetchone()[0])


def update_db_command(tools: Tools, impl: str) -> list[str]:
    """The same command line for both tools (the candidate is ours, importing from elsewhere)."""
    return [str(tools.old if impl == "old" else tools.ours), "--no-progress", "update-db", DURATION]


def impl_environment(impl: str, args: argparse.Namespace, extra: dict[str, str]) -> dict[str, str]:
    """The environment of one tool's run: the candidate imports synapse_objstore from its DIR."""
    return clean_environment({**extra, **({"PYTHONPATH": args.candidate} if impl == "candidate" else {})})


def bench_update_db(tools: Tools, db: dict[str, Any], args: argparse.Namespace, base: Path) -> dict[str, Any]:
    conn = psycopg2.connect(**db)
    started = time.monotonic()
    counts = load_media_rows(conn, args.local_rows, args.remote_rows, args.seed)
    with conn.cursor() as cursor:  # read both tables once, so the first tool does not pay for a cold cache
        cursor.execute("SELECT count(*) FROM local_media_repository WHERE last_access_ts > 0")
        cursor.execute("SELECT count(*) FROM remote_media_cache WHERE last_access_ts > 0")
    conn.close()
    rows = counts["local"] + counts["remote"]
    log(f"update-db: loaded {counts['local']} local + {counts['remote']} remote rows with COPY in "
        f"{time.monotonic() - started:.1f} s")
    impls = ["old", "ours"] + (["candidate"] if args.candidate else [])
    dirs = {}
    for impl in impls:
        dirs[impl] = base / f"db-{impl}"
        dirs[impl].mkdir(parents=True)
        (dirs[impl] / "database.yaml").write_text(yaml.safe_dump({"postgres": db}))
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(args.db_repeats):
        order = impls[round_no % len(impls):] + impls[:round_no % len(impls)]
        for phase in ("scratch", "rerun"):
            for impl in order if phase == "scratch" else order[::-1]:
                cache = dirs[impl] / "cache.db"
                if phase == "scratch":
                    cache.unlink(missing_ok=True)
                load = load1()
                measured = run_measured(update_db_command(tools, impl), dirs[impl], impl_environment(impl, args, {}),
                                        WORK / "logs" / f"offload-update-db-{impl}.log", COMMAND_TIMEOUT)
                in_cache = cache_rows(cache) if cache.exists() else 0
                ok = measured.returncode == 0 and in_cache == rows
                result = {**measured.as_dict(), "load1_before": load, "rows": rows, "rows_in_cache_db": in_cache,
                          "ok": ok, "rows_per_s": round(rows / measured.seconds) if ok else None}
                runs.setdefault(f"{impl}.{phase}", []).append(result)
                log(f"update-db {phase} {impl} #{round_no + 1}: {measured.seconds:.2f} s, "
                    f"{result['rows_per_s']} rows/s, peak RSS {measured.peak_rss_mib} MiB, load {load}"
                    + ("" if ok else f" FAILED (exit {measured.returncode}, {in_cache} rows in cache.db)"))
    summary = {}
    for key, results in runs.items():
        good = [r for r in results if r["ok"]]
        summary[key] = {
            "runs": len(results), "failed": len(results) - len(good),
            "seconds": median([r["seconds"] for r in good]),
            "rows_per_s": median([r["rows_per_s"] for r in good]),
            "peak_rss_mib": max((r["peak_rss_mib"] for r in good), default=None),
            "seconds_all": [r["seconds"] for r in results],
        }
    return {"rows": counts, "runs": runs, "summary": summary}


# ---------------------------------------------------------------- uploads


def s3_client(endpoint_url: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def bucket_contents(s3: Any, bucket: str) -> dict[str, int]:
    contents: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        contents.update((item["Key"], item["Size"]) for item in page.get("Contents", []))
    return contents


def drop_bucket(s3: Any, bucket: str) -> None:
    """Delete the bucket and its objects, so moto does not keep gigabytes in memory."""
    keys = list(bucket_contents(s3, bucket))
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                 "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


@dataclass(frozen=True)
class UploadRun:
    """One measured upload: which tool, how, and over which media."""

    label: str  # "old", "ours", "ours --jobs 16", "boto3 x16"
    impl: str  # old | ours | candidate | boto3
    jobs: int | None
    media_count: int  # the first N media of the store

    def command(self, tools: Tools, endpoint_url: str, media: Path, bucket: str) -> list[str]:
        if self.impl == "old":
            return [str(tools.old), "--no-progress", "upload", "--delete", "--endpoint-url", endpoint_url,
                    str(media), bucket]
        if self.impl in ("ours", "candidate"):
            jobs = ["--jobs", str(self.jobs)] if self.jobs else []
            return [str(tools.ours), "--no-progress", "upload", "--delete", "--endpoint-url", endpoint_url, *jobs,
                    str(media), bucket]
        return [str(tools.old_python), str(HERE / "offload_ceiling.py"), endpoint_url, bucket, str(media),
                "--threads", str(self.jobs)]


def run_upload(run: UploadRun, tools: Tools, store: MediaStore, endpoint_url: str, network: str,
               base: Path, args: argparse.Namespace) -> dict[str, Any]:
    s3 = s3_client(endpoint_url)
    bucket = f"bench-{run.impl}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    workdir = base / f"upload-{run.impl}-{uuid.uuid4().hex[:6]}"
    media_dir = workdir / "media_store"
    workdir.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(store.root), str(media_dir)], check=True)
    if run.impl != "boto3":
        cache = CacheDb(str(workdir / "cache.db"))
        cache.add_media(store.media[:run.media_count])
        cache.close()
    expected = store.files_of_first(run.media_count) if run.impl != "boto3" else dict(store.files)
    load = load1()
    measured = run_measured(run.command(tools, endpoint_url, media_dir, bucket), workdir,
                            impl_environment(run.impl, args, CREDENTIALS),
                            WORK / "logs" / f"offload-upload-{run.impl}.log",
                            COMMAND_TIMEOUT)
    check = check_upload(run, s3, bucket, expected, len(store.files), media_dir, workdir)
    result = upload_result(run, measured, expected, check, network, load)
    drop_bucket(s3, bucket)
    shutil.rmtree(workdir)
    log(f"upload {network} {run.label}: " + upload_summary(result))
    return result


def check_upload(run: UploadRun, s3: Any, bucket: str, expected: dict[str, int], store_files: int, media_dir: Path,
                 workdir: Path) -> dict[str, Any]:
    """Is every file in the bucket with its size, and (for the tools) gone from disk and
    marked deleted? Returns the counts and the list of problems."""
    contents = bucket_contents(s3, bucket)
    missing = [p for p in expected if p not in contents]
    wrong_size = [p for p, size in expected.items() if p in contents and contents[p] != size]
    problems = [f"{len(missing)} files missing in the bucket"] if missing else []
    problems += [f"{len(wrong_size)} objects with the wrong size"] if wrong_size else []
    left = count_files(media_dir)
    check: dict[str, Any] = {"objects": len(contents), "missing": len(missing), "wrong_size": len(wrong_size),
                             "local_files_left": left}
    if run.impl != "boto3":
        if left != store_files - len(expected):
            problems.append(f"{left} local files left, expected {store_files - len(expected)}")
        with sqlite3.connect(workdir / "cache.db") as conn:
            undeleted = conn.execute("SELECT count(*) FROM media WHERE NOT known_deleted").fetchone()[0]
        check["media_not_marked_deleted"] = undeleted
        if undeleted:
            problems.append(f"{undeleted} media not marked deleted in cache.db")
    check["problems"] = problems
    return check


def upload_result(run: UploadRun, measured: Measured, expected: dict[str, int], check: dict[str, Any], network: str,
                  load: float) -> dict[str, Any]:
    ok = measured.returncode == 0 and not check["problems"]
    files, size = len(expected), sum(expected.values())
    return {
        "label": run.label, "impl": run.impl, "jobs": run.jobs, "network": network, "media": run.media_count,
        "files": files, "bytes": size, **measured.as_dict(), "load1_before": load, "check": check, "ok": ok,
        "files_per_s": round(files / measured.seconds, 1) if ok else None,
        "mb_per_s": round(size / measured.seconds / 1e6, 1) if ok else None,
    }


def upload_summary(result: dict[str, Any]) -> str:
    text = (f"{result['files']} files in {result['seconds']:.1f} s = {result['files_per_s']} files/s, "
            f"{result['mb_per_s']} MB/s, peak RSS {result['peak_rss_mib']} MiB, load {result['load1_before']}")
    if not result["ok"]:
        text += f" FAILED (exit {result['returncode']}; {'; '.join(result['check']['problems'])})"
    return text


def measure_added_rtt(direct_url: str, proxied_url: str, requests: int = 21) -> dict[str, float]:
    """Median time of a HEAD on one kept-alive connection, straight and through the proxy."""
    s3 = s3_client(direct_url)
    bucket = f"bench-rtt-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    medians = {}
    for name, url in (("direct", direct_url), ("proxied", proxied_url)):
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            conn.request("HEAD", f"/{bucket}")
            conn.getresponse().read()
            times.append(time.perf_counter() - started)
        conn.close()
        medians[name] = round(statistics.median(times[1:]) * 1000, 2)
    s3.delete_bucket(Bucket=bucket)
    medians["added_ms"] = round(medians["proxied"] - medians["direct"], 2)
    return medians


def upload_runs(args: argparse.Namespace, media_count: int, old_media: int) -> list[UploadRun]:
    runs = [UploadRun("old (1.7.0)" + ("" if old_media == media_count else f", first {old_media} media"), "old",
                      None, old_media),
            UploadRun("ours (default --jobs)", "ours", None, media_count)]
    runs += [UploadRun(f"ours --jobs {jobs}", "ours", jobs, media_count) for jobs in args.ours_jobs]
    if args.candidate:
        runs.append(UploadRun("candidate (default --jobs)", "candidate", None, media_count))
    runs.append(UploadRun(f"boto3 put_object x{args.ceiling_threads}", "boto3", args.ceiling_threads, media_count))
    return runs


# ---------------------------------------------------------------- report


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def fmt(value: Any, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value}{suffix}"


def find(uploads: list[dict[str, Any]], network: str, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return next((u for u in uploads if u["network"] == network and predicate(u)), {})


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    db = report.get("update_db", {}).get("summary", {})
    if db:
        ours, old = db.get("ours.scratch", {}), db.get("old.scratch", {})
        gain = ratio(ours.get("rows_per_s"), old.get("rows_per_s"))
        rows.append({"target": "update-db from scratch >= 3x s3_media_upload (rows/s)",
                     "measured": f"{fmt(ours.get('rows_per_s'))} vs {fmt(old.get('rows_per_s'))} rows/s "
                                 f"= {fmt(gain, 'x')}",
                     "met": gain is not None and gain >= TARGET_UPDATE_DB_VS_OLD})
        ours_r, old_r = db.get("ours.rerun", {}), db.get("old.rerun", {})
        gain = ratio(old_r.get("seconds"), ours_r.get("seconds"))
        rows.append({"target": "rerun with nothing new >= 10x faster",
                     "measured": f"{fmt(ours_r.get('seconds'))} s vs {fmt(old_r.get('seconds'))} s = {fmt(gain, 'x')}",
                     "met": gain is not None and gain >= TARGET_RERUN_VS_OLD})
    uploads = report.get("uploads", [])
    for network, vs_old in (("loopback", TARGET_UPLOAD_VS_OLD), ("rtt", TARGET_UPLOAD_VS_OLD_RTT)):
        ours = find(uploads, network, lambda u: u["impl"] == "ours" and u["jobs"] is None)
        old = find(uploads, network, lambda u: u["impl"] == "old")
        ceiling = find(uploads, network, lambda u: u["impl"] == "boto3")
        if not ours:
            continue
        gain = ratio(ours.get("files_per_s"), old.get("files_per_s"))
        where = ("loopback" if network == "loopback"
                 else f"{report.get('proxy_rtt', {}).get('added_ms', '?')} ms round trip")
        subset = "" if old.get("media") == ours.get("media") else f" (old on its first {old.get('media')} media)"
        rows.append({"target": f"upload --delete >= {vs_old:g}x s3_media_upload's files/s, {where}",
                     "measured": f"{fmt(ours.get('files_per_s'))} vs {fmt(old.get('files_per_s'))} files/s = "
                                 f"{fmt(gain, 'x')}{subset}",
                     "met": gain is not None and gain >= vs_old})
        if network == "loopback":
            share = ratio(ours.get("files_per_s"), ceiling.get("files_per_s"))
            rows.append({"target": "upload --delete >= 80% of the 16-thread boto3 ceiling, loopback",
                         "measured": f"{fmt(ours.get('files_per_s'))} vs {fmt(ceiling.get('files_per_s'))} files/s = "
                                     f"{fmt(None if share is None else round(100 * share), '%')}",
                         "met": share is not None and share >= TARGET_UPLOAD_VS_CEILING})
    ours_rss = [u["peak_rss_mib"] for u in uploads if u["impl"] == "ours"]
    ours_rss += [r["peak_rss_mib"] for key, results in report.get("update_db", {}).get("runs", {}).items()
                 if key.startswith("ours.") for r in results]
    if ours_rss:
        rows.append({"target": "peak RSS < 200 MiB (every run of ours)", "measured": f"{max(ours_rss)} MiB",
                     "met": max(ours_rss) < TARGET_PEAK_RSS_MIB})
    return rows


def tables(report: dict[str, Any]) -> str:
    lines: list[str] = []
    db = report.get("update_db")
    if db:
        s = db["summary"]
        rows = db["rows"]["local"] + db["rows"]["remote"]
        cand = "candidate.scratch" in s
        head = "| | ours | old (1.7.0) | ours/old |" + (" candidate | candidate/old |" if cand else "")
        title = (f"### update-db, {db['rows']['local']:,} local + {db['rows']['remote']:,} remote rows "
                 f"(median of {s['ours.scratch']['runs']} runs)")
        lines += [title, "", head + " old in issue 3 |",
                  "|---|---|---|---|---|" + ("---|---|" if cand else "")]

        def row(label: str, field: str, phase: str, faster: bool) -> str:
            o, d = s[f"ours.{phase}"][field], s[f"old.{phase}"][field]
            gain = (lambda a: ratio(d, a)) if faster else (lambda a: ratio(a, d))
            suffix = "x faster" if faster else "x"
            text = f"| {label} | {fmt(o)} | {fmt(d)} | {fmt(gain(o), suffix)} |"
            if cand:
                c = s[f"candidate.{phase}"][field]
                text += f" {fmt(c)} | {fmt(gain(c), suffix)} |"
            return text

        lines.append(row("from scratch, rows/s", "rows_per_s", "scratch", False)
                     + f" {ISSUE_OLD['update_db_rows_per_s']} |")
        lines.append(row("from scratch, s", "seconds", "scratch", True) + " |")
        lines.append(row("rerun, nothing new, s", "seconds", "rerun", True) + f" {ISSUE_OLD['rerun_s']} |")
        peak = {i: max(filter(None, (s[f"{i}.scratch"]["peak_rss_mib"], s[f"{i}.rerun"]["peak_rss_mib"])), default=None)
                for i in ("ours", "old", "candidate") if f"{i}.scratch" in s}
        lines.append(f"| peak RSS, MiB (worst run) | {fmt(peak['ours'])} | {fmt(peak['old'])} | |"
                     + (f" {fmt(peak['candidate'])} | |" if cand else "") + " |")
        lines.append(f"\n({rows:,} rows; every run checked: exit 0 and {rows:,} rows in its cache.db.)")
    uploads = report.get("uploads", [])
    store = report.get("media_store")
    for network in ("loopback", "rtt"):
        runs = [u for u in uploads if u["network"] == network]
        if not runs:
            continue
        title = ("straight to moto on 127.0.0.1" if network == "loopback" else
                 f"through the latency proxy (+{report['proxy_rtt']['added_ms']} ms per round trip, measured)")
        lines += ["", f"### upload --delete, {title}", "",
                  "| | media | files | MB | s | files/s | MB/s | peak RSS, MiB | ok | files/s vs old |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        old = find(uploads, network, lambda u: u["impl"] == "old")
        for u in runs:
            lines.append(f"| {u['label']} | {u['media']} | {u['files']} | {u['bytes'] / 1e6:.0f} "
                         f"| {u['seconds']:.1f} | "
                         f"{fmt(u['files_per_s'])} | {fmt(u['mb_per_s'])} | {u['peak_rss_mib']} | "
                         f"{'yes' if u['ok'] else 'NO: ' + '; '.join(u['check']['problems'])} | "
                         f"{fmt(ratio(u['files_per_s'], old.get('files_per_s')), 'x') if u['impl'] != 'old' else ''} |")
    if store:
        lines += ["", (f"Media store: {store['media']} media ({store['local']} local, {store['remote']} remote), "
                       f"{store['files']} files ({store['thumbnails']} thumbnails), {store['bytes'] / 1e6:.0f} MB; "
                       f"median file {store['median_file_bytes'] / 1e3:.0f} KB, median original "
                       f"{store['median_original_bytes'] / 1e3:.0f} KB, largest {store['largest_bytes'] / 1e6:.1f} MB, "
                       f"{store['over_8_mib']} over 8 MiB.")]
    lines += ["", "### targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {v['target']} | {v['measured']} | {'yes' if v['met'] else 'NO'} |" for v in report["verdicts"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- the storm (issue 11)


def storm_runs(args: argparse.Namespace) -> list[UploadRun]:
    runs = [UploadRun("old (1.7.0)", "old", None, args.storm_media),
            UploadRun("ours (as installed in venv-ours)", "ours", None, args.storm_media)]
    if args.candidate:
        runs.append(UploadRun(f"candidate ({args.candidate})", "candidate", None, args.storm_media))
    return runs


def bench_storm(tools: Tools, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Each tool's `upload --delete` once through the same faults; what it left undone."""
    started = time.monotonic()
    store = build_media_store(base / "media-source", args.storm_media, args.seed)
    log(f"media store: {store.describe()} built in {time.monotonic() - started:.1f} s")
    faults = Faults(rate_503=args.storm_503, rate_reset=args.storm_reset)
    out: dict[str, Any] = {"media_store": store.describe(), "faults": {"rate_503": faults.rate_503,
                           "rate_reset": faults.rate_reset, "seed": args.storm_seed}, "runs": []}
    with MotoServer(WORK / "logs") as moto, FaultProxyProcess(moto.endpoint_url, faults, seed=args.storm_seed,
                                                              log=WORK / "logs" / "offload-fault-proxy.log") as proxy:
        log(f"moto at {moto.endpoint_url}, the fault proxy at {proxy.endpoint_url}: {faults}")
        for run in storm_runs(args):
            before = proxy.stats()
            result = run_storm_upload(run, tools, store, moto.endpoint_url, proxy.endpoint_url, base, args)
            after = proxy.stats()
            result["faults_met"] = {name: after.get(name, 0) - before.get(name, 0)
                                    for name in ("requests", "slowdown", "reset mid-request", "reset before reply")}
            out["runs"].append(result)
            log(f"storm {run.label}: exit {result['returncode']} in {result['seconds']:.1f} s, "
                f"{result['files_left']} files left, {result['media_left']} media not marked deleted, "
                f"faults met {result['faults_met']}")
    return out


def run_storm_upload(run: UploadRun, tools: Tools, store: MediaStore, moto_url: str, proxy_url: str, base: Path,
                     args: argparse.Namespace) -> dict[str, Any]:
    """One tool's run through the proxy; the bucket is made and checked straight on moto."""
    s3 = s3_client(moto_url)
    bucket = f"storm-{run.impl}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    workdir = base / f"storm-{run.impl}-{uuid.uuid4().hex[:6]}"
    media_dir = workdir / "media_store"
    workdir.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(store.root), str(media_dir)], check=True)
    cache = CacheDb(str(workdir / "cache.db"))
    cache.add_media(store.media[:run.media_count])
    cache.close()
    expected = store.files_of_first(run.media_count)
    measured = run_measured(run.command(tools, proxy_url, media_dir, bucket), workdir,
                            impl_environment(run.impl, args, CREDENTIALS),
                            WORK / "logs" / f"offload-storm-{run.impl}.log",
                            COMMAND_TIMEOUT)
    check = check_upload(run, s3, bucket, expected, len(store.files), media_dir, workdir)
    drop_bucket(s3, bucket)
    shutil.rmtree(workdir)
    # an uncaught exception: its traceback ends the output with a line "SomeError: message"
    last = (measured.stdout_tail.strip().splitlines() or [""])[-1]
    traceback = re.match(r"^[\w.]+(Error|Exception)\b", last) is not None
    return {"label": run.label, "impl": run.impl, "media": run.media_count, "files": len(expected),
            **measured.as_dict(), "files_left": check["local_files_left"],
            "media_left": check.get("media_not_marked_deleted"), "objects_missing": check["missing"],
            "ended_in_traceback": traceback, "check": check}


def storm_tables(storm: dict[str, Any]) -> str:
    faults = storm["faults"]
    title = (f"### upload --delete through {faults['rate_503']:.0%} 503 SlowDown and {faults['rate_reset']:.0%} "
             f"connection resets (seed {faults['seed']}), one run each")
    head = ("| | media | files | exit code | s | files left on disk | media not marked deleted | "
            "503s / resets met | ended in a traceback |")
    lines = [title, "", head, "|---|---|---|---|---|---|---|---|---|"]
    for run in storm["runs"]:
        met = run["faults_met"]
        lines.append(f"| {run['label']} | {run['media']} | {run['files']} | {run['returncode']} "
                     f"| {run['seconds']:.1f} | "
                     f"{run['files_left']} | {fmt(run['media_left'])} | {met['slowdown']} / "
                     f"{met['reset mid-request'] + met['reset before reply']} | "
                     f"{'yes' if run['ended_in_traceback'] else 'no'} |")
    store = storm["media_store"]
    lines += ["", f"Media store: {store['media']} media, {store['files']} files, {store['bytes'] / 1e6:.0f} MB."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours-python", required=True)
    parser.add_argument("--old-python", required=True)
    parser.add_argument("--local-rows", type=int, default=1_000_000)
    parser.add_argument("--remote-rows", type=int, default=100_000)
    parser.add_argument("--db-repeats", type=int, default=3, help="update-db rounds (scratch + rerun per tool)")
    parser.add_argument("--media", type=int, default=2000, help="media in the store to upload (default 2000)")
    parser.add_argument("--rtt-old-media", type=int, default=200,
                        help="through the proxy, s3_media_upload uploads only the first N media (0: all)")
    parser.add_argument("--ours-jobs", type=int, action="append", default=None,
                        help="also run ours with this --jobs (repeatable; default: 16)")
    parser.add_argument("--ceiling-threads", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="proxy delay per direction (default 10 ms)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--skip-db", action="store_true", help="no update-db measurements")
    parser.add_argument("--skip-upload", action="store_true", help="no upload measurements")
    parser.add_argument("--skip-rtt", action="store_true", help="no uploads through the latency proxy")
    parser.add_argument("--candidate", metavar="DIR",
                        help="also run objstore-offload with synapse_objstore from another checkout DIR")
    parser.add_argument("--storm", action="store_true",
                        help="only the storm: one upload --delete per tool through the fault proxy")
    parser.add_argument("--storm-media", type=int, default=300, help="media to upload in the storm (default 300)")
    parser.add_argument("--storm-503", type=float, default=0.10, help="share of requests answered 503 SlowDown")
    parser.add_argument("--storm-reset", type=float, default=0.05, help="share of connections reset")
    parser.add_argument("--storm-seed", type=int, default=1, help="seed of the faults (one run per seed: repeatable)")
    parser.add_argument("--output", default=None,
                        help="raw results (default bench/.work/offload-results.json, offload-storm.json with --storm)")
    args = parser.parse_args()
    if args.output is None:
        args.output = str(WORK / ("offload-storm.json" if args.storm else "offload-results.json"))
    if args.candidate:
        args.candidate = os.path.abspath(args.candidate)
    if args.ours_jobs is None:
        args.ours_jobs = [16]
    return args


def main() -> None:
    args = parse_args()
    tools = Tools.from_pythons(args.ours_python, args.old_python)
    for tool in (tools.ours, tools.old, tools.old_python):
        if not tool.exists():
            sys.exit(f"{tool} is missing: run bench/run --setup-only")
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    base = WORK / "offload"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "load_avg_at_start": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("ours_python", "old_python")},
    }
    try:
        if args.storm:
            report["storm"] = bench_storm(tools, args, base)
        else:
            if not args.skip_db:
                with temporary_database("objstore_bench") as db:
                    log(f"PostgreSQL database {db['database']} created")
                    report["update_db"] = bench_update_db(tools, db, args, base)
            if not args.skip_upload:
                report.update(bench_uploads(tools, args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["verdicts"] = [] if args.storm else verdicts(report)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    report["duration_s"] = round(time.monotonic() - started, 1)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print()
    print(storm_tables(report["storm"]) if args.storm else tables(report))
    print(f"\nload average at start {report['machine']['load_avg_at_start']}, at end "
          f"{report['machine']['load_avg_at_end']}; full results: {args.output} ({report['duration_s']} s)")


def bench_uploads(tools: Tools, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    started = time.monotonic()
    store = build_media_store(base / "media-source", args.media, args.seed)
    log(f"media store: {store.describe()} built in {time.monotonic() - started:.1f} s")
    out: dict[str, Any] = {"media_store": store.describe(), "uploads": []}
    moto = MotoServer(WORK / "logs")
    moto.start()
    log(f"moto listening at {moto.endpoint_url} (pid {moto.pid})")
    try:
        for run in upload_runs(args, args.media, args.media):
            out["uploads"].append(run_upload(run, tools, store, moto.endpoint_url, "loopback", base, args))
        if not args.skip_rtt:
            proxy = LatencyProxy(moto.port, args.delay_ms, WORK / "logs" / "offload-latency-proxy.log").start()
            try:
                out["proxy_rtt"] = measure_added_rtt(moto.endpoint_url, proxy.endpoint_url)
                log(f"latency proxy at {proxy.endpoint_url}: HEAD {out['proxy_rtt']['direct']} ms straight, "
                    f"{out['proxy_rtt']['proxied']} ms through it (+{out['proxy_rtt']['added_ms']} ms)")
                old_media = args.rtt_old_media or args.media
                for run in upload_runs(args, args.media, min(old_media, args.media)):
                    out["uploads"].append(run_upload(run, tools, store, proxy.endpoint_url, "rtt", base, args))
            finally:
                proxy.stop()
    finally:
        moto.stop()
    return out


if __name__ == "__main__":
    main()
