"""The floor under our per-file CPU (issue 15): what the S3 client stack the project must use
(s3fs's aiobotocore over aiohttp) costs per PutObject and per GetObject, with none of our code
around it, beside `rclone copy` of the same files to and from the same moto server.

    bench/run floor                 # 4,000 files, 16 at a time
    bench/run floor --files 1000

Each lane is a fresh process timed from outside (bench/offload_measure.py: CPU user + system
from os.wait4, peak RSS). The aiobotocore lane is the least a Python client on this stack does
per file: read the file, compute its Content-MD5, `put_object` with 16 in flight on one warm
client, nothing else (no hashing for metadata, no verification, no journal, no delete); and
back: list the bucket, `get_object` each key, read the body whole and write the file. Its
CPU per file, less its start-up (imports and the client, reported apart), is the floor that
`objstore-offload upload` cannot go under while it uses s3fs; the gap between that and rclone's
is what Python and botocore cost, not our code.

    bench/run floor --stream        # the provider stream's floor instead (issue 15): 7 runs
    bench/run floor --stream --runs 9 --stream-mib 256

The stream lanes read one 256 MiB object with each client of the required stack alone, with
boto3 as the reference, and with our S3 backend's ObjectStream without the reactor, with only
the thread hop to a Twisted reactor, and through our whole responder (bench/stream_floor_worker.py
lists the lanes); three of them again under jemalloc, the allocator Synapse's Docker image
preloads. Each run starts every lane in a fresh process, in a shuffled order, and each process
warms up with one read, then times --reads more; CPU is the process's own (getrusage, all
threads) per read, so imports and the start-up never count. The table gives medians over all
reads, in ms per 256 MiB and as a ratio to boto3's, with the minor page faults per read and
the context switches per read and each thread's CPU per read.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.offload_measure import clean_environment, run_measured
from servers.moto import MotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench-key", "AWS_SECRET_ACCESS_KEY": "bench-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}

# The lane run in its own process: argv = put|get, endpoint, bucket, directory, concurrency.
AIOBOTOCORE_LANE = r"""
import asyncio, base64, hashlib, os, sys, time
started = time.process_time()
from aiobotocore.session import get_session
mode, endpoint, bucket, root, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

async def main() -> None:
    async with get_session().create_client("s3", endpoint_url=endpoint) as s3:
        ready = time.process_time()
        if mode == "put":
            queue = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        else:
            queue = [o["Key"] async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                     for o in page.get("Contents", [])]
        count = len(queue)
        async def put(key: str) -> None:
            with open(os.path.join(root, key), "rb") as f:
                body = f.read()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5)
        async def get(key: str) -> None:
            reply = await s3.get_object(Bucket=bucket, Key=key)
            async with reply["Body"] as body:
                data = await body.read()
            path = os.path.join(root, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        async def worker() -> None:
            while queue:
                await (put if mode == "put" else get)(queue.pop())
        await asyncio.gather(*(worker() for _ in range(jobs)))
        done = time.process_time()
        print(f"startup_cpu_s={ready - started:.3f} per_file_cpu_ms={(done - ready) / count * 1000:.3f}")

asyncio.run(main())
"""


def make_files(root: Path, count: int, seed: int) -> int:
    """`count` files with a media store's size mix: mostly thumbnails and small images, some
    originals up to a few MB. Returns the total size."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        roll = rng.random()
        size = (rng.randint(1_000, 50_000) if roll < 0.7 else
                rng.randint(100_000, 1_000_000) if roll < 0.95 else rng.randint(1_000_000, 5_000_000))
        path = root / f"{i % 97:02d}" / f"file{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        total += size
    return total


STREAM_LANES = ("boto3", "aiobotocore", "aiohttp", "aiohttp-any", "ours", "ours-hop", "responder")
# A lane named "<lane>@jemalloc" runs under jemalloc (LD_PRELOAD, as Synapse's Docker image runs it):
# glibc's malloc gives back and faults in again the heap the two-thread stream's buffers churn.
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"  # Debian's libjemalloc2
DEFAULT_LANES = STREAM_LANES + tuple(f"{lane}@jemalloc" for lane in ("boto3", "ours", "responder"))


def stream_floor(args: argparse.Namespace, work: Path) -> None:
    """The stream lanes (see the module's docstring), on one moto server."""
    import boto3

    size = args.stream_mib * 1024 * 1024
    if not os.path.exists(JEMALLOC):
        print(f"{JEMALLOC} missing (Debian's libjemalloc2): its lanes are left out", file=sys.stderr)
        args.lanes = [lane for lane in args.lanes if not lane.endswith("@jemalloc")]
    blob = work / "big"
    with blob.open("wb") as out:
        out.writelines(os.urandom(1024 * 1024) for _ in range(args.stream_mib))
    with MotoServer(work / "logs") as moto:
        client = {"endpoint_url": moto.endpoint_url, "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
                  "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                  "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
        s3 = boto3.client("s3", **client)
        bucket, key = "stream-floor", "stream/big"
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(blob), bucket, key)
        blob.unlink()
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=24 * 3600)
        env = clean_environment({**CREDENTIALS, "PYTHONPATH": str(HERE.parent)})
        worker = str(HERE / "stream_floor_worker.py")
        cpu_ms: dict[str, list[float]] = {lane: [] for lane in args.lanes}
        faults: dict[str, list[float]] = {lane: [] for lane in args.lanes}
        switches: dict[str, list[float]] = {lane: [] for lane in args.lanes}
        threads: dict[str, dict[str, list[float]]] = {lane: {} for lane in args.lanes}
        rng = random.Random(args.seed)
        for run in range(args.runs):
            order = list(args.lanes)
            rng.shuffle(order)
            load = os.getloadavg()[0]
            for lane in order:
                name, _, allocator = lane.partition("@")
                lane_env = {**env, "LD_PRELOAD": JEMALLOC} if allocator == "jemalloc" else env
                spec = {"lane": name, "client": client, "bucket": bucket, "key": key, "media_path": key,
                        "url": url, "size": size, "reads": args.reads}
                done = subprocess.run([sys.executable, worker, json.dumps(spec)], env=lane_env, cwd=work,
                                      capture_output=True, text=True, timeout=900)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT: ")]
                if done.returncode or not lines:
                    print(f"run {run + 1} {lane}: FAILED (exit {done.returncode})\n{done.stderr[-2000:]}", flush=True)
                    continue
                result = json.loads(lines[-1][len("RESULT: "):])
                reads = result["reads"]
                cpu_ms[lane] += [r["cpu_s"] * 1000 for r in reads]
                faults[lane] += [r["page_faults"] for r in reads]
                switches[lane] += [r["context_switches"] for r in reads]
                for name, cpu_s in result["thread_cpu_s"].items():
                    threads[lane].setdefault(name, []).append(cpu_s * 1000)
                print(f"run {run + 1} (load {load:.1f}) {lane:21s} CPU ms per read: "
                      + " ".join(f"{r['cpu_s'] * 1000:.1f}" for r in reads)
                      + "  page faults: " + " ".join(str(r["page_faults"]) for r in reads)
                      + f"  ({size / min(r['seconds'] for r in reads) / 1e6:.0f} MB/s best)", flush=True)
    reference = statistics.median(cpu_ms["boto3"]) if cpu_ms.get("boto3") else None
    print(f"\n{args.stream_mib} MiB stream, medians of {args.runs} runs x {args.reads} reads, CPU ms per stream:")
    print("| lane | CPU ms | x boto3 | spread (min-max) | page faults | context switches | CPU ms by thread |\n"
          "|---|---|---|---|---|---|---|")
    for lane in args.lanes:
        if cpu_ms[lane]:
            median = statistics.median(cpu_ms[lane])
            ratio = f"{median / reference:.2f}x" if reference else "-"
            by_thread = ", ".join(f"{name} {statistics.median(values):.0f}"
                                  for name, values in sorted(threads[lane].items(), key=lambda item: -sum(item[1])))
            print(f"| {lane} | {median:.1f} | {ratio} | {min(cpu_ms[lane]):.1f}-{max(cpu_ms[lane]):.1f} "
                  f"| {statistics.median(faults[lane]):.0f} | {statistics.median(switches[lane]):.0f} | {by_thread} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--stream", action="store_true", help="the provider stream's floor instead of the files")
    parser.add_argument("--runs", type=int, default=7, help="--stream: runs, each lane once per run")
    parser.add_argument("--reads", type=int, default=3, help="--stream: timed reads per lane and run")
    parser.add_argument("--stream-mib", type=int, default=256, help="--stream: the object's size")
    parser.add_argument("--lanes", type=lambda text: text.split(","), default=list(DEFAULT_LANES),
                        help="--stream: the lanes, comma-separated (boto3 is the reference; '<lane>@jemalloc' runs "
                        f"one under jemalloc); by default {','.join(DEFAULT_LANES)}")
    args = parser.parse_args()
    import boto3  # the bench venv's; used only to make and drop buckets
    work = Path(tempfile.mkdtemp(prefix="objstore-floor-"))
    if args.stream:
        try:
            (work / "logs").mkdir()
            stream_floor(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        files = work / "files"
        (work / "logs").mkdir()
        total = make_files(files, args.files, args.seed)
        print(f"{args.files} files, {total / 1e6:.0f} MB, {args.jobs} at a time", file=sys.stderr)
        with MotoServer(work / "logs") as moto:
            s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
            env = clean_environment({**CREDENTIALS, "AWS_EC2_METADATA_DISABLED": "true",
                                     "RCLONE_CONFIG_FLOOR_TYPE": "s3", "RCLONE_CONFIG_FLOOR_PROVIDER": "Other",
                                     "RCLONE_CONFIG_FLOOR_ENDPOINT": moto.endpoint_url,
                                     "RCLONE_CONFIG_FLOOR_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                     "RCLONE_CONFIG_FLOOR_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]})
            for round_ in range(args.rounds):
                for lane in ("aiobotocore", "rclone"):
                    bucket = f"floor-{lane}-{round_}-{int(time.time())}"
                    s3.create_bucket(Bucket=bucket)
                    back = work / f"back-{lane}-{round_}"
                    for mode, source, target in (("put", str(files), f"floor:{bucket}"),
                                                 ("get", f"floor:{bucket}", str(back))):
                        argv = ([sys.executable, "-c", AIOBOTOCORE_LANE, mode, moto.endpoint_url, bucket,
                                 str(files if mode == "put" else back), str(args.jobs)] if lane == "aiobotocore" else
                                ["rclone", "--config", "/dev/null", "copy", "--transfers", str(args.jobs),
                                 "--s3-no-check-bucket", source, target])
                        measured = run_measured(argv, work, env, work / "lanes.log", timeout=3600.0)
                        extra = measured.stdout_tail.strip().splitlines()[-1] if lane == "aiobotocore" else ""
                        cpu_ms = measured.cpu_s / args.files * 1000
                        print(f"round {round_ + 1} {mode} {lane:12s} exit {measured.returncode}  "
                              f"{args.files / measured.seconds:7.1f} files/s  CPU {cpu_ms:6.3f} ms/file"
                              f"  peak RSS {measured.peak_rss_mib:6.1f} MiB  {extra}", flush=True)
                    keys = sum(page.get("KeyCount", 0) for page in
                               s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
                    got = sum(len(names) for _, _, names in os.walk(back))
                    if keys != args.files or got != args.files:
                        print(f"  {lane}: {keys} objects in the bucket, {got} files back, of {args.files}: FAILED",
                              flush=True)
                    shutil.rmtree(back, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
