"""Listing at scale (issue 15): reconcile's listing (`ObjectStore.list()`) against `rclone lsf -R`
on a bucket of --keys objects (default 100,000), where the per-key cost tells rather than the
start-up's. bench/run rclone lists about 4,000 keys, where ours' ~1 s of imports and client set-up
is most of its CPU.

    bench/run listing                  # 100,000 keys on moto, 3 interleaved rounds
    bench/run listing --keys 300000 --rounds 5 --server ceph

The bucket is filled once, straight on the server (boto3, 16 threads), with keys in Synapse's
layout: originals `local_content/ab/cd/rest` and 1-3 thumbnails each under
`local_thumbnails/ab/cd/rest/`, objects of a few bytes (a listing's cost does not depend on their
size). Each round runs ours (bench/rclone_list_worker.py: imports, client, the listing; alone in a
process) and `rclone lsf -R --files-only --fast-list`, in turns, each a fresh process measured
from outside (bench/offload_measure.py: wall time, user + system CPU, peak RSS). A run that does not
count every key is reported as failed. Reported: keys/s, CPU µs per key, peak RSS, and the ratios;
also the marginal CPU per key (ours' and rclone's CPU over a run of a tenth of the keys,
subtracted), which leaves start-up out. Raw results: bench/.work/listing-results.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

import yaml

from bench.offload_bench import drop_bucket
from bench.offload_measure import Measured, clean_environment, run_measured
from bench.rclone_bench import RCLONE_FLAGS, Server, Tools, log, start_server
from servers.ceph_rgw import ceph_available

THUMBNAILS = ("32-32-image-png-crop", "96-96-image-png-crop", "320-240-image-jpeg-scale")


def synapse_keys(count: int, seed: int) -> list[str]:
    """`count` keys in Synapse's layout: an original and 1-3 thumbnails per media."""
    rng = random.Random(seed)
    keys: list[str] = []
    while len(keys) < count:
        media_id = "".join(rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", k=24))
        where = f"{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}"
        keys.append(f"local_content/{where}")
        keys.extend(f"local_thumbnails/{where}/{name}" for name in THUMBNAILS[:rng.randint(1, 3)])
    return keys[:count]


def fill(server: Server, bucket: str, keys: list[str]) -> None:
    s3 = server.s3()
    s3.create_bucket(Bucket=bucket)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for _ in pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 7), keys):
            pass


def measure(args: argparse.Namespace, tools: Tools, server: Server, bucket: str, expected: int, tool: str,
            logs: Path) -> Measured:
    if tool == "ours":
        argv = [str(tools.python), str(HERE / "rclone_list_worker.py"), "store.yaml"]
        env = clean_environment({"PYTHONPATH": str(ROOT)})
    else:
        argv = [tools.rclone, "--config", "/dev/null", "lsf", "-R", "--files-only", f"src:{bucket}", *RCLONE_FLAGS]
        env = clean_environment({f"RCLONE_CONFIG_SRC_{name}": value for name, value in (
            ("TYPE", "s3"), ("PROVIDER", "Other"), ("ENDPOINT", server.endpoint_url),
            ("ACCESS_KEY_ID", server.access_key), ("SECRET_ACCESS_KEY", server.secret_key),
            ("REGION", "us-east-1"))})
    out = args.work / f"{tool}.out"
    measured = run_measured(argv, args.work, env, logs / "listing-bench.log", timeout=3600, stdout=out)
    text = out.read_text()
    counted = int(text.split()[0]) if tool == "ours" and text.strip() else len(text.splitlines())
    if measured.returncode != 0 or counted != expected:
        raise SystemExit(f"{tool} failed its check on {bucket}: exit {measured.returncode}, {counted} of {expected} "
                         f"keys listed (log: {logs / 'listing-bench.log'})")
    return measured


def run_server(args: argparse.Namespace, tools: Tools, name: str, logs: Path) -> dict[str, Any]:
    keys = synapse_keys(args.keys, args.seed)
    small = max(1000, args.keys // 10)
    with start_server(name, args, logs) as server:
        buckets = {size: f"listing-{size}" for size in (args.keys, small)}
        started = time.monotonic()
        for size, bucket in buckets.items():
            fill(server, bucket, keys[:size])
        log(f"{server.name}: {args.keys} + {small} keys stored in {time.monotonic() - started:.0f} s")
        runs: dict[str, dict[int, list[Measured]]] = {tool: {size: [] for size in buckets} for tool in TOOLS}
        try:
            for round_no in range(args.rounds):
                order = TOOLS if round_no % 2 == 0 else TOOLS[::-1]
                for size, bucket in buckets.items():
                    for tool in order:
                        (args.work / "store.yaml").write_text(yaml.safe_dump(server.store_config(bucket)))
                        measured = measure(args, tools, server, bucket, size, tool, logs)
                        runs[tool][size].append(measured)
                        log(f"round {round_no + 1} {tool} {size} keys: {measured.seconds:.2f} s, "
                            f"CPU {measured.cpu_s:.2f} s, {measured.peak_rss_mib:.0f} MiB")
        finally:
            for bucket in buckets.values():
                drop_bucket(server.s3(), bucket)
        return {"server": server.name, "keys": args.keys, "small_keys": small,
                "results": {tool: summarise_tool(per_size, args.keys, small) for tool, per_size in runs.items()}}


def summarise_tool(per_size: dict[int, list[Measured]], keys: int, small: int) -> dict[str, Any]:
    def median(size: int, value: str) -> float:
        return statistics.median(getattr(m, value) for m in per_size[size])

    seconds, cpu = median(keys, "seconds"), median(keys, "cpu_s")
    return {"keys_per_s": keys / seconds, "cpu_us_per_key": cpu / keys * 1e6,
            "peak_rss_mib": median(keys, "peak_rss_mib"),
            "marginal_cpu_us_per_key": (cpu - median(small, "cpu_s")) / (keys - small) * 1e6,
            "runs": [m.as_dict() for m in per_size[keys]]}


TOOLS = ("ours", "rclone")


def table(server: dict[str, Any]) -> str:
    ours, rclone = server["results"]["ours"], server["results"]["rclone"]
    rows = [f"{server['server']}, {server['keys']:,} keys (marginal: over {server['small_keys']:,} keys fewer)",
            "| | keys/s | CPU µs/key | marginal CPU µs/key | peak RSS MiB |", "|---|---|---|---|---|"]
    for name, r in (("ours", ours), ("rclone", rclone)):
        rows.append(f"| {name} | {r['keys_per_s']:.0f} | {r['cpu_us_per_key']:.1f} | "
                    f"{r['marginal_cpu_us_per_key']:.1f} | {r['peak_rss_mib']:.0f} |")
    rows.append(f"| ours/rclone | {ours['keys_per_s'] / rclone['keys_per_s']:.2f}x (target >= 1) | "
                f"{ours['cpu_us_per_key'] / rclone['cpu_us_per_key']:.2f}x | "
                f"{ours['marginal_cpu_us_per_key'] / rclone['marginal_cpu_us_per_key']:.2f}x | "
                f"{ours['peak_rss_mib'] / rclone['peak_rss_mib']:.2f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="ours' venv Python")
    parser.add_argument("--server", action="append", choices=("moto", "ceph", "rtt"), help="repeatable; default moto")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="proxy delay each way for --server rtt")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--output", default=str(WORK / "listing-results.json"))
    parser.add_argument("--work", default=str(WORK / "listing"), help="scratch directory (removed at the end)")
    args = parser.parse_args(argv)
    args.server = args.server or ["moto"]
    if "ceph" in args.server and not ceph_available():
        parser.error("Ceph is not installed (.ci/install-ceph)")
    args.work = Path(args.work).resolve()
    args.rclone = None
    args.s5cmd = "-"
    tools = Tools.find(args)
    if not tools.rclone:
        sys.exit("rclone is missing: run bench/run listing (bench/install-tools)")
    logs = Path(args.output).parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    report: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_avg_at_start": os.getloadavg(),
                              "servers": []}
    try:
        for name in args.server:
            report["servers"].append(run_server(args, tools, name, logs))
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    report["load_avg_at_end"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(report, indent=2))
    for server in report["servers"]:
        print("\n" + table(server))
    print(f"\nload average {report['load_avg_at_start']} -> {report['load_avg_at_end']}; results: {args.output}")


if __name__ == "__main__":
    main()
