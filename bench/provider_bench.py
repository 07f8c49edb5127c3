"""Provider benchmark (issue 2): synapse-objstore against synapse-s3-storage-provider 1.7.0.

Run through `bench/run`, which builds the two virtual environments. This driver starts the S3
server(s) on 127.0.0.1 (moto always; Ceph's RADOS Gateway with --server ceph/all when
installed), uploads the objects once, then runs every measurement in a fresh worker process
(bench/fetch_worker.py) of the implementation's own venv, so that RSS and reactor stalls
belong to one implementation. Measurements are interleaved (ours, old, boto3, then the next
round in another order) and the medians are reported. Results: bench/.work/results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

from servers.moto import MotoServer

MiB = 1024 * 1024
KiB = 1024

# Where synapse-s3-storage-provider stood in issue 2, and the targets.
TARGET_THROUGHPUT_VS_OLD = 2.0
TARGET_THROUGHPUT_VS_BOTO3 = 0.70
TARGET_EXTRA_TTFB_MS = 500
TARGET_WRITES_AFTER_PAUSE = 1
TARGET_STALL_MS = 20
TARGET_RSS_GROWTH_MIB = 16


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- servers


class Moto:
    name = "moto"

    def __init__(self) -> None:
        self._server = MotoServer(WORK / "logs")

    def start(self) -> dict[str, Any]:
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        self._server.start()
        return {"name": "moto", "endpoint_url": self._server.endpoint_url, "access_key": "bench-key",
                "secret_key": "bench-secret", "region_name": "us-east-1", "pid": self._server.pid}

    def stop(self) -> None:
        self._server.stop()


class Ceph:
    name = "ceph"

    def __init__(self) -> None:
        from servers.ceph_rgw import CephRGW

        base = WORK / "ceph"  # each cluster lives in a new directory under it
        base.mkdir(parents=True, exist_ok=True)
        self._server = CephRGW(base)

    def start(self) -> dict[str, Any]:
        self._server.start()
        s = self._server
        return {"name": "ceph", "endpoint_url": s.endpoint_url, "access_key": s.access_key, "secret_key": s.secret_key,
                "region_name": "us-east-1"}

    def stop(self) -> None:
        self._server.stop()


def ceph_available() -> str | None:
    """Why Ceph RGW cannot be used here, or None when it can."""
    import shutil

    if shutil.which("radosgw") is None:
        return "radosgw is not installed (apt-get install -y ceph-mon ceph-osd radosgw ceph-common)"
    return None


# ---------------------------------------------------------------- objects


def client_for(server: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=server["endpoint_url"], aws_access_key_id=server["access_key"],
        aws_secret_access_key=server["secret_key"], region_name=server.get("region_name") or "us-east-1",
        config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


def upload_objects(server: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    s3 = client_for(server)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    big_size = args.big_mib * MiB
    blob = WORK / f"blob-{args.big_mib}mib"
    if not blob.exists() or blob.stat().st_size != big_size:
        with open(blob, "wb") as out:
            out.writelines(os.urandom(MiB) for _ in range(args.big_mib))
    started = time.monotonic()
    big_key = "local_content/be/nc/hbig"
    s3.upload_file(str(blob), bucket, big_key,
                   Config=TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=2))
    small_keys = [f"local_content/sm/al/l{i:03d}" for i in range(args.paused_clients + 1)]
    small = os.urandom(args.small_kib * KiB)
    for key in small_keys:
        s3.put_object(Bucket=bucket, Key=key, Body=small)
    # The paused clients fetch objects of --paused-kib; the small 64 KiB ones when equal.
    if args.paused_kib == args.small_kib:
        paused_keys = small_keys[1:]
    else:
        body = os.urandom(args.paused_kib * KiB)
        paused_keys = [f"local_content/pa/us/p{i:03d}" for i in range(args.paused_clients)]
        for key in paused_keys:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
    log(f"{server['name']}: uploaded {args.big_mib} MiB + {len(small_keys)} x {args.small_kib} KiB"
        f"{'' if args.paused_kib == args.small_kib else f' + {len(paused_keys)} x {args.paused_kib} KiB'}"
        f" in {time.monotonic() - started:.1f} s")
    return {
        "bucket": bucket, "big_key": big_key, "big_size": big_size,
        # small_keys[0] is the warm-up / first fetch, [1] the extra fetch
        "small_keys": [small_keys[0], small_keys[-1]],
        "paused_keys": paused_keys, "paused_size": args.paused_kib * KiB,
    }


# ---------------------------------------------------------------- workers


def run_worker(python: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONDONTWRITEBYTECODE": "1"}
    if spec.get("source"):  # --candidate: import synapse_objstore from another checkout
        env["PYTHONPATH"] = spec["source"]
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(variable, None)
    errlog = WORK / "logs" / f"worker-{spec['impl']}-{spec['scenario']}.log"
    with open(errlog, "ab") as err:
        err.write(f"\n=== {time.strftime('%H:%M:%S')} {spec['impl']} {spec['scenario']}\n".encode())
        err.flush()
        try:
            done = subprocess.run([python, str(HERE / "fetch_worker.py"), json.dumps(spec)], check=False,
                                  stdout=subprocess.PIPE, stderr=err, timeout=timeout, cwd=str(WORK), env=env)
        except subprocess.TimeoutExpired:
            return {"impl": spec["impl"], "scenario": spec["scenario"], "error": f"worker timed out after {timeout} s"}
    for line in done.stdout.decode(errors="replace").splitlines():
        if line.startswith("RESULT: "):
            return json.loads(line[len("RESULT: "):])
    return {"impl": spec["impl"], "scenario": spec["scenario"],
            "error": f"worker exited {done.returncode} without a result (see {errlog})"}


def parse_tweaks(text: str) -> dict[str, int]:
    """'chunk_kib=1024,read_bufsize_kib=512' -> {'chunk_kib': 1024, 'read_bufsize_kib': 512}"""
    tweaks = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        tweaks[name.strip()] = int(value)
    return tweaks


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def dig(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def run_server(server: dict[str, Any], args: argparse.Namespace, pythons: dict[str, str]) -> dict[str, Any]:
    objects = upload_objects(server, args)
    media = WORK / "media_store"
    media.mkdir(exist_ok=True)
    base = {
        "server": {k: server[k] for k in ("endpoint_url", "access_key", "secret_key", "region_name")},
        "media_store_path": str(media), **objects,
        "paused_clients": args.paused_clients, "pause_observe_s": 1.0, "paused_settle_max_s": 10.0,
        "extra_timeout_s": args.extra_timeout,
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    candidate = ["candidate"] if args.candidate else []
    impls = ["ours", "old", "boto3"] + (["aiobotocore"] if args.diagnostics else []) + candidate + list(args.variant)
    if args.only:
        impls = [i for i in impls if i in args.only]
    for round_no in range(0 if args.skip_stream else args.repeats):
        order = impls[round_no % len(impls):] + impls[: round_no % len(impls)]
        for impl in order:
            kind, _, tweaks = impl.partition("+")
            spec = {**base, "impl": kind, "scenario": "stream", "tweaks": parse_tweaks(tweaks)}
            if kind == "candidate":
                spec.update(impl="ours", source=args.candidate)
            result = run_worker(pythons[kind], spec, timeout=300)
            result["impl"] = impl
            runs.setdefault("stream", {}).setdefault(impl, []).append(result)
            log(f"{server['name']} stream {impl} #{round_no + 1}: " + summary(result, "stream"))
    paused_impls = ["ours", "old", *candidate, *args.variant]
    if args.only:
        paused_impls = [i for i in paused_impls if i in args.only]
    for round_no in range(0 if args.skip_paused else args.paused_repeats):
        for impl in (paused_impls if round_no % 2 == 0 else paused_impls[::-1]):
            kind, _, tweaks = impl.partition("+")
            spec = {**base, "impl": kind, "scenario": "paused", "tweaks": parse_tweaks(tweaks)}
            if kind == "candidate":
                spec.update(impl="ours", source=args.candidate)
            result = run_worker(pythons[kind], spec, timeout=120 + args.extra_timeout)
            result["impl"] = impl
            runs.setdefault("paused", {}).setdefault(impl, []).append(result)
            log(f"{server['name']} paused {impl} #{round_no + 1}: " + summary(result, "paused"))
    return {"server": server["name"], "objects": {k: v for k, v in objects.items() if k != "paused_keys"},
            "runs": runs, "medians": medians(runs)}


def summary(result: dict[str, Any], scenario: str) -> str:
    if "error" in result:
        return "ERROR " + result["error"]
    if scenario == "stream":
        s = result["stream"]
        text = (f"{s['mb_per_s']} MB/s end-to-end, {s['stream_mb_per_s']} MB/s after the first byte, "
                f"ttfb {s['ttfb_ms']} ms, rss +{s['growth_mib']} MiB, "
                f"{s['writes']} writes (median {s['chunk_median_kib']} KiB)")
        if "stall_ms" in result:
            text += f", stalls {result['stall_ms']}"
        return text
    p, e, m = result["paused"], result["extra_fetch"], result["pause_mid_stream"]
    return (f"mid-stream pause: {m['writes_after_pause']} writes/{m['bytes_after_pause']} B after; "
            f"{p['started']}/{p['clients']} paused clients started, "
            f"max {p['max_writes_after_pause']} writes after pause; "
            f"extra fetch ttfb {e['ttfb_ms']} ms total {e['total_ms']} ms; stalls {result['stall_ms']}")


STREAM_FIELDS = ["stream.mb_per_s", "stream.stream_mb_per_s", "stream.ttfb_ms", "stream.cpu_ms", "paced.mb_per_s",
                 "paced.cpu_ms", "stream.growth_mib", "stream.writes", "stream.chunk_median_kib",
                 "first_fetch.ttfb_ms", "first_fetch.total_ms", "stall_ms.startup", "stall_ms.first_fetch",
                 "stall_ms.stream", "stall_ms.whole_run", "stall_ms_excl_os.whole_run", "construct_s"]
PAUSED_FIELDS = ["pause_mid_stream.writes_after_pause", "pause_mid_stream.bytes_after_pause",
                 "paused.started", "paused.max_writes_after_pause", "paused.max_bytes_after_pause",
                 "paused.rss_growth_mib",
                 "extra_fetch.ttfb_ms", "extra_fetch.total_ms", "stall_ms.pause_mid_stream", "stall_ms.paused_clients",
                 "stall_ms.extra_fetch", "stall_ms.whole_run", "stall_ms_excl_os.whole_run"]
# Where the worst case matters more than the median, it is reported too.
WORST = {"stall_ms.startup", "stall_ms.first_fetch", "stall_ms.stream", "stall_ms.whole_run", "stream.growth_mib",
         "pause_mid_stream.writes_after_pause", "paused.max_writes_after_pause", "extra_fetch.ttfb_ms",
         "stall_ms.extra_fetch", "stall_ms.pause_mid_stream", "stall_ms.paused_clients", "stall_ms_excl_os.whole_run"}


def medians(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario, fields in (("stream", STREAM_FIELDS), ("paused", PAUSED_FIELDS)):
        for impl, results in runs.get(scenario, {}).items():
            good = [r for r in results if "error" not in r]
            row: dict[str, Any] = {"runs": len(results), "errors": len(results) - len(good)}
            for field in fields:
                values = [dig(r, field) for r in good]
                if field == "extra_fetch.ttfb_ms":  # a fetch that never started counts as its timeout
                    values = [v if v is not None else 1000 * dig(r, "extra_fetch.timed_out_after_s") for v, r in
                              zip(values, good, strict=True)]
                if any(v is not None for v in values):
                    row[field] = median(values)
                    if field in WORST:
                        row[field + ".worst"] = max(v for v in values if v is not None)
            out.setdefault(scenario, {})[impl] = row
    return out


# ---------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b not in (None, 0) else "n/a"


def fmt(value: Any) -> str:
    return "n/a" if value is None else str(value)


def verdicts(m: dict[str, Any]) -> list[dict[str, Any]]:
    s, p = m.get("stream", {}), m.get("paused", {})
    ours, old, boto3 = s.get("ours", {}), s.get("old", {}), s.get("boto3", {})
    pours = p.get("ours", {})
    tput, tput_old, tput_boto3 = ours.get("stream.mb_per_s"), old.get("stream.mb_per_s"), boto3.get("stream.mb_per_s")
    rate, rate_old, rate_boto3 = (ours.get("stream.stream_mb_per_s"), old.get("stream.stream_mb_per_s"),
                                  boto3.get("stream.stream_mb_per_s"))
    stall = max(ours.get("stall_ms.whole_run.worst") or 0, pours.get("stall_ms.whole_run.worst") or 0)
    stall_own = max(ours.get("stall_ms_excl_os.whole_run.worst") or 0,
                    pours.get("stall_ms_excl_os.whole_run.worst") or 0)
    extra = pours.get("extra_fetch.ttfb_ms.worst")
    after = max(pours.get("pause_mid_stream.writes_after_pause.worst") or 0,
                pours.get("paused.max_writes_after_pause.worst") or 0)
    rss = ours.get("stream.growth_mib.worst")
    def at_least(a: float | None, b: float | None, factor: float) -> bool:
        return a is not None and b is not None and a >= factor * b

    rows = [
        ("throughput >= 2x synapse-s3-storage-provider (end-to-end)",
         f"{fmt(tput)} vs {fmt(tput_old)} MB/s = {ratio(tput, tput_old)}",
         at_least(tput, tput_old, TARGET_THROUGHPUT_VS_OLD)),
        ("throughput >= 2x synapse-s3-storage-provider (after first byte)",
         f"{fmt(rate)} vs {fmt(rate_old)} MB/s = {ratio(rate, rate_old)}",
         at_least(rate, rate_old, TARGET_THROUGHPUT_VS_OLD)),
        ("throughput >= 70% of plain boto3 (end-to-end)",
         f"{fmt(tput)} vs {fmt(tput_boto3)} MB/s = {ratio(tput, tput_boto3)}",
         at_least(tput, tput_boto3, TARGET_THROUGHPUT_VS_BOTO3)),
        ("throughput >= 70% of plain boto3 (after first byte)",
         f"{fmt(rate)} vs {fmt(rate_boto3)} MB/s = {ratio(rate, rate_boto3)}",
         at_least(rate, rate_boto3, TARGET_THROUGHPUT_VS_BOTO3)),
        ("extra fetch under 60 paused clients starts < 0.5 s (worst run)", f"{fmt(extra)} ms",
         extra is not None and extra < TARGET_EXTRA_TTFB_MS),
        ("at most one chunk written after a pause (worst run)", f"{after} writes", after <= TARGET_WRITES_AFTER_PAUSE),
        ("no reactor stall > 20 ms, first fetch included (worst run)", f"{stall} ms", stall <= TARGET_STALL_MS),
        ("... less time the OS kept the reactor thread off the CPU (worst run)", f"{stall_own} ms",
         stall_own <= TARGET_STALL_MS),
        ("RSS growth < 16 MiB during the 256 MiB stream (worst run)", f"{fmt(rss)} MiB",
         rss is not None and rss < TARGET_RSS_GROWTH_MIB),
    ]
    return [{"target": t, "ours": v, "met": bool(ok)} for t, v, ok in rows]


def table(result: dict[str, Any]) -> str:
    m = result["medians"]
    lines = [f"## {result['server']}", ""]
    s = m.get("stream", {})
    impls = ([i for i in ("ours", "old", "boto3", "aiobotocore", "candidate") if i in s]
             + sorted(i for i in s if "+" in i))
    labels = {
        "stream.mb_per_s": "throughput end-to-end (fetch call to last byte), MB/s",
        "stream.stream_mb_per_s": "throughput after the first byte, MB/s",
        "stream.ttfb_ms": "time to first byte, ms",
        "stream.cpu_ms": "CPU time of the process, fetch call to last byte, ms",
        "paced.mb_per_s": "paced by a client that pauses at every write: throughput end-to-end, MB/s",
        "paced.cpu_ms": "paced by a client that pauses at every write: CPU time, ms",
        "stream.growth_mib": "peak RSS growth, MiB",
        "stream.growth_mib.worst": "peak RSS growth, MiB (worst)",
        "stream.writes": "consumer writes",
        "stream.chunk_median_kib": "median chunk, KiB",
        "first_fetch.ttfb_ms": "first fetch (cold): time to first byte, ms",
        "first_fetch.total_ms": "first fetch (cold): total, ms",
        "stall_ms.startup": "reactor stall, first 1 s after start, ms",
        "stall_ms.first_fetch": "reactor stall during first fetch, ms",
        "stall_ms.first_fetch.worst": "reactor stall during first fetch, ms (worst)",
        "stall_ms.stream": "reactor stall during stream, ms",
        "stall_ms.whole_run.worst": "reactor stall, whole run, ms (worst)",
        "stall_ms_excl_os.whole_run.worst": "... less time the OS kept the reactor off the CPU, ms (worst)",
        "construct_s": "provider construction, s",
    }
    n = max((row.get("runs", 0) for row in s.values()), default=0)
    lines.append(f"### 256 MiB stream (median of {n} runs; ratios ours/old, ours/boto3)")
    lines.append("")
    lines.append("| | " + " | ".join(impls) + " | ours/old | ours/boto3 |")
    lines.append("|---|" + "---|" * (len(impls) + 2))
    for field, label in labels.items():
        values = [s[i].get(field) for i in impls]
        if all(v is None for v in values):
            continue
        o, d, b = s.get("ours", {}).get(field), s.get("old", {}).get(field), s.get("boto3", {}).get(field)
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {ratio(o, d)} | {ratio(o, b)} |")
    p = m.get("paused", {})
    if p:
        n = max(row.get("runs", 0) for row in p.values())
        pimpls = [i for i in ("ours", "old", "candidate") if i in p] + sorted(i for i in p if "+" in i)
        lines += ["", f"### pause behaviour (median of {n} runs)", "", "| | " + " | ".join(pimpls) + " |",
                  "|---|" + "---|" * len(pimpls)]
        plabels = {
            "pause_mid_stream.writes_after_pause": "writes after a pause request (mid-stream)",
            "pause_mid_stream.writes_after_pause.worst": "... worst run",
            "pause_mid_stream.bytes_after_pause": "bytes after a pause request (mid-stream)",
            "paused.started": f"paused clients that got a first byte (of {result['paused_clients']})",
            "paused.max_writes_after_pause": "paused clients: max writes after pause",
            "paused.rss_growth_mib": "RSS growth with the paused clients, MiB",
            "extra_fetch.ttfb_ms": "extra fetch: time to first byte, ms",
            "extra_fetch.ttfb_ms.worst": "extra fetch: time to first byte, ms (worst)",
            "extra_fetch.total_ms": "extra fetch: total, ms",
            "stall_ms.pause_mid_stream.worst": "reactor stall, mid-stream pause phase, ms (worst)",
            "stall_ms.paused_clients": "reactor stall while the paused clients start, ms",
            "stall_ms.paused_clients.worst": "... worst run",
            "stall_ms.extra_fetch": "reactor stall during extra fetch, ms",
            "stall_ms.whole_run.worst": "reactor stall, whole run, ms (worst)",
            "stall_ms_excl_os.whole_run.worst": "... less time the OS kept the reactor off the CPU, ms (worst)",
        }
        for field, label in plabels.items():
            lines.append(f"| {label} | " + " | ".join(fmt(p.get(i, {}).get(field)) for i in pimpls) + " |")
    lines += ["", "### targets (ours)", "", "| target | measured | met |", "|---|---|---|"]
    for v in result["verdicts"]:
        lines.append(f"| {v['target']} | {v['ours']} | {'yes' if v['met'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours-python", required=True)
    parser.add_argument("--old-python", required=True)
    parser.add_argument("--server", choices=["moto", "ceph", "all"], default="all",
                        help="'all' (default): moto, and Ceph RGW when it is installed")
    parser.add_argument("--repeats", type=int, default=5, help="stream runs per implementation (default 5)")
    parser.add_argument("--paused-repeats", type=int, default=3, help="paused-scenario runs per provider (default 3)")
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--paused-kib", type=int, default=8192,
                        help="size of the objects the paused clients fetch (default 8192 KiB)")
    parser.add_argument("--paused-clients", type=int, default=60)
    parser.add_argument("--extra-timeout", type=float, default=20.0,
                        help="give up on the extra fetch after this many seconds (default 20)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also stream with bare s3fs/aiobotocore (our HTTP stack without the provider)")
    parser.add_argument("--variant", action="append", default=[], metavar="ours+TWEAKS",
                        help="also measure a variant of ours, e.g. ours+chunk_kib=1024 "
                        "(see apply_tweaks in fetch_worker.py); repeatable")
    parser.add_argument("--candidate", metavar="DIR",
                        help="also measure synapse_objstore from another checkout DIR (put first on PYTHONPATH, "
                        "in ours' venv), e.g. a branch with a proposed change")
    parser.add_argument("--only", action="append", metavar="IMPL",
                        help="run only this implementation (ours, old, boto3, aiobotocore or a --variant); repeatable")
    parser.add_argument("--skip-stream", action="store_true", help="only the paused scenario")
    parser.add_argument("--skip-paused", action="store_true", help="only the stream scenario")
    parser.add_argument("--output", default=str(WORK / "results.json"))
    args = parser.parse_args()

    WORK.mkdir(exist_ok=True)
    (WORK / "logs").mkdir(exist_ok=True)
    ours_python, old_python = os.path.abspath(args.ours_python), os.path.abspath(args.old_python)
    pythons = {"ours": ours_python, "old": old_python, "boto3": old_python, "aiobotocore": ours_python,
               "candidate": ours_python}
    if args.candidate:
        args.candidate = os.path.abspath(args.candidate)
    servers: list[Any] = []
    notes: list[str] = []
    if args.server in ("moto", "all"):
        servers.append(Moto)
    if args.server in ("ceph", "all"):
        why_not = ceph_available()
        if why_not is None:
            servers.append(Ceph)
        elif args.server == "ceph":
            sys.exit(f"Ceph RGW unavailable: {why_not}")
        else:
            notes.append(f"Ceph RGW skipped: {why_not}")
            log(notes[-1])

    started = time.monotonic()
    results = []
    for server_class in servers:
        server = server_class()
        info = server.start()
        log(f"{info['name']} listening at {info['endpoint_url']}")
        try:
            result = run_server(info, args, pythons)
        finally:
            server.stop()
        result["paused_clients"] = args.paused_clients
        result["verdicts"] = verdicts(result["medians"])
        results.append(result)

    report = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "load_avg_at_end": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("ours_python", "old_python")},
        "versions": versions(pythons),
        "notes": notes,
        "duration_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    Path(args.output).write_text(json.dumps(report, indent=2))
    print()
    for result in results:
        print(table(result))
        print()
    for note in notes:
        print(f"note: {note}")
    print(f"full results: {args.output} ({report['duration_s']} s)")


def versions(pythons: dict[str, str]) -> dict[str, Any]:
    wanted = ["matrix-synapse", "boto3", "botocore", "s3fs", "aiobotocore", "synapse-s3-storage-provider",
              "synapse-objstore", "twisted"]
    code = ("import importlib.metadata as m, json, sys; have = {d.metadata['Name'].lower(): d.version "
            "for d in m.distributions()}; print(json.dumps({p: have[p] for p in sys.argv[1:] if p in have}))")
    out = {}
    for impl in ("ours", "old"):
        try:
            out[impl] = json.loads(subprocess.run([pythons[impl], "-c", code, *wanted], check=False,
                                                  capture_output=True, text=True, cwd=WORK, timeout=60).stdout)
        except Exception as error:
            out[impl] = str(error)
    return out


if __name__ == "__main__":
    main()
