"""Rekey benchmark (issue 14): `objstore-offload rekey --apply` against a boto3 download-and-reupload.

For each server and each path (key -> key: objects under an old SSE-C key moved to a new one;
plain -> key: objects written without SSE-C encrypted), a fresh bucket is filled with the same
objects (`--small` of `--small-kib` KiB and `--large` of `--large-mib` MiB, each with a
Content-Type and user metadata), then moved to the new key by one of:

- ours: `objstore-offload --json rekey --apply --jobs J --store-config F` in a new process, the
  code of this checkout (`--python`: the interpreter, default this one). The time is the
  process's wall clock, start-up (imports, about a second) and listing included.
- boto3: in this process, a listing then, on a pool of J threads, for each object a GET with the
  old key (or none), the body read whole, and a PUT with the new key, the same Content-Type and
  metadata: what an admin without the tool would write.
- copy: the same pool, each object copied onto itself in the store (CopyObject with the
  copy-source SSE-C headers, the new key, MetadataDirective REPLACE with its Content-Type and
  metadata): the server-side path, where a store implements it.

Servers: Ceph RGW (enforces SSE-C) runs ours and boto3. RGW 16.2 cannot rewrite into SSE-C in
the store (501 to a copy from an SSE-C source; a copy of an unencrypted object stays
unencrypted), so ours takes its streamed fallback there on both paths, and `copy` would not
encrypt anything. moto accepts the SSE-C headers and ignores them: it never says which key an
object is under (no SSECustomerKeyMD5 in its replies), so `rekey` cannot tell a rewritten object
from an old one there and is not run; moto measures `copy` against boto3, what the server-side
path saves where the store has it (AWS S3).

Runs are interleaved (the first implementation changes each round); the tables show medians,
objects/s, MB/s (10^6 bytes of object data per second) and boto3's time over each one's. Each
run is checked: every object reads with the new key alone (on RGW: and not without it),
byte-identical, with its Content-Type and metadata.

    bench/run rekey [--server rgw|moto|all] [--repeats 3] [--jobs 8] [--small 300] [--large 4]

Imports nothing from tests/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servers.ceph_rgw import CephRGW, ceph_available
from servers.moto import MotoServer

OLD_KEY = "old-key-for-the-rekey-benchmark!"
NEW_KEY = "new-key-for-the-rekey-benchmark!"
PREFIX = "media/"
MAIN = "import sys; from synapse_objstore.cli.main import cli; sys.exit(cli(prog_name='objstore-offload'))"
PATHS = ("key->key", "plain->key")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Server:
    def __init__(self, name: str, endpoint_url: str, credentials: dict[str, str]) -> None:
        self.name = name
        self.endpoint_url = endpoint_url
        self.credentials = credentials

    def client(self) -> Any:
        config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        s3={"addressing_style": "path"}, max_pool_connections=64)
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1", config=config,
                            aws_access_key_id=self.credentials["access_key_id"],
                            aws_secret_access_key=self.credentials["secret_access_key"])


@contextmanager
def server(name: str, work: Path) -> Iterator[Server]:
    if name == "rgw":
        with CephRGW(work) as rgw:
            yield Server("Ceph RGW", rgw.endpoint_url,
                         {"access_key_id": rgw.access_key, "secret_access_key": rgw.secret_key})
    else:
        moto = MotoServer(work).start()
        try:
            yield Server("moto", moto.endpoint_url, {"access_key_id": "bench", "secret_access_key": "bench"})
        finally:
            moto.stop()


def sse(key: str | None) -> dict[str, str]:
    return {} if key is None else {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def copy_source_sse(key: str | None) -> dict[str, str]:
    return {} if key is None else {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def dataset(args: argparse.Namespace) -> dict[str, bytes]:
    objects = {f"{PREFIX}local_content/sm/al/l{n:05d}": os.urandom(args.small_kib * 1024) for n in range(args.small)}
    objects.update({f"{PREFIX}local_content/bi/gg/b{n:03d}": os.urandom(args.large_mib * 1024 * 1024)
                    for n in range(args.large)})
    return objects


def metadata_of(body: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(body).hexdigest()}


def fill(s3: Any, bucket: str, objects: dict[str, bytes], old_key: str | None, jobs: int) -> None:
    s3.create_bucket(Bucket=bucket)

    def put(item: tuple[str, bytes]) -> None:
        key, body = item
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/png", Metadata=metadata_of(body),
                      **sse(old_key))

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(put, objects.items()))


def drop(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


def check(s3: Any, bucket: str, objects: dict[str, bytes], jobs: int, enforced: bool) -> None:
    """Every object reads with the new key, byte-identical, Content-Type and metadata kept; and,
    on a store that enforces SSE-C, not without a key."""
    def one(item: tuple[str, bytes]) -> None:
        key, body = item
        if enforced:
            try:
                s3.head_object(Bucket=bucket, Key=key)
            except ClientError:
                pass
            else:
                raise AssertionError(f"{key}: reads without a key")
        reply = s3.get_object(Bucket=bucket, Key=key, **sse(NEW_KEY))
        got = reply["Body"].read()
        if got != body or reply["ContentType"] != "image/png" or reply["Metadata"] != metadata_of(body):
            raise AssertionError(f"{key}: not kept ({len(got)} bytes, {reply['ContentType']}, {reply['Metadata']})")

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, objects.items()))
    listed = sum(len(page.get("Contents", [])) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    if listed != len(objects):
        raise AssertionError(f"{listed} objects listed, {len(objects)} expected")


def run_ours(srv: Server, bucket: str, old_key: str | None, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config = {"bucket": bucket, "endpoint_url": srv.endpoint_url, "addressing_style": "path", "prefix": PREFIX,
              **srv.credentials, "sse_customer_key": NEW_KEY}
    if old_key is None:
        config["previously_unencrypted"] = True
    else:
        config["previous_sse_customer_keys"] = [old_key]
    path = work / f"store-{bucket}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "AWS_EC2_METADATA_DISABLED": "true"}
    command = [args.python, "-c", MAIN, "--no-progress", "--json", "rekey", "--apply", "--jobs", str(args.jobs),
               "--store-config", str(path)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"rekey exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    summary = json.loads(done.stdout)
    return {"seconds": seconds, "copied": summary["objects_copied"], "streamed": summary["objects_streamed"],
            "rekeyed": summary["objects_rekeyed"]}


def run_boto3(srv: Server, bucket: str, old_key: str | None, args: argparse.Namespace) -> dict[str, Any]:
    s3 = srv.client()
    started = time.perf_counter()
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
            for item in page.get("Contents", [])]

    def one(key: str) -> None:
        reply = s3.get_object(Bucket=bucket, Key=key, **sse(old_key))
        body = reply["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=reply["ContentType"],
                      Metadata=reply["Metadata"], **sse(NEW_KEY))

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, keys))
    return {"seconds": time.perf_counter() - started, "rekeyed": len(keys)}


def run_copy(srv: Server, bucket: str, old_key: str | None, args: argparse.Namespace) -> dict[str, Any]:
    s3 = srv.client()
    started = time.perf_counter()
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
            for item in page.get("Contents", [])]

    def one(key: str) -> None:
        head = s3.head_object(Bucket=bucket, Key=key, **sse(old_key))
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="REPLACE",
                       ContentType=head["ContentType"], Metadata=head["Metadata"], **copy_source_sse(old_key),
                       **sse(NEW_KEY))

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, keys))
    return {"seconds": time.perf_counter() - started, "rekeyed": len(keys)}


IMPLS = {"rgw": ("ours", "boto3"), "moto": ("copy", "boto3")}


def startup_seconds(args: argparse.Namespace, work: Path) -> float:
    """objstore-offload's fixed cost: a process that imports the CLI and the store and exits."""
    code = MAIN.replace("cli(prog_name", "__import__('synapse_objstore.cli.rekey') and cli(prog_name")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run([args.python, "-c", code, "--help"], cwd=work, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def bench_server(name: str, args: argparse.Namespace, work: Path, objects: dict[str, bytes]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with server(name, work) as srv:
        s3 = srv.client()
        log(f"{srv.name}: started at {srv.endpoint_url}")
        for path in PATHS:
            old_key = OLD_KEY if path == "key->key" else None
            impls = [impl for impl in IMPLS[name] if impl in args.impl]
            runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
            for repeat in range(args.repeats):
                for impl in impls[repeat % len(impls):] + impls[:repeat % len(impls)]:
                    bucket = f"rekey-{uuid.uuid4().hex[:10]}"
                    fill(s3, bucket, objects, old_key, args.jobs)
                    if impl == "ours":
                        run = run_ours(srv, bucket, old_key, args, work)
                    elif impl == "copy":
                        run = run_copy(srv, bucket, old_key, args)
                    else:
                        run = run_boto3(srv, bucket, old_key, args)
                    check(s3, bucket, objects, args.jobs, enforced=name == "rgw")
                    drop(s3, bucket)
                    runs[impl].append(run)
                    log(f"{srv.name} {path} {impl}: {run['seconds']:.2f} s {run}")
            results[path] = runs
    return {"server": srv.name, "paths": results}


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(report: dict[str, Any]) -> str:
    count, size = report["objects"], report["bytes"]
    lines = [f"{count} objects, {size / 1e6:.1f} MB; --jobs {report['jobs']}; {report['repeats']} runs each, "
             f"medians; objstore-offload start-up {report['startup_seconds']:.2f} s (included in ours)", "",
             "| server, path | how | seconds | objects/s | MB/s | boto3 time / this one's |",
             "|---|---|---|---|---|---|"]
    for result in report["servers"]:
        for path, runs in result["paths"].items():
            boto = median([run["seconds"] for run in runs["boto3"]]) if runs.get("boto3") else None
            for impl, impl_runs in runs.items():
                if not impl_runs:
                    continue
                seconds = median([run["seconds"] for run in impl_runs])
                how = {"boto3": "boto3 GET + PUT", "copy": "boto3 CopyObject in place"}.get(impl, "")
                if impl == "ours":
                    last = impl_runs[-1]
                    how = ("ours, server-side copy" if last["copied"] and not last["streamed"] else
                           "ours, streamed fallback" if last["streamed"] and not last["copied"] else
                           f"ours, {last['copied']} copied, {last['streamed']} streamed")
                ratio = f"**{boto / seconds:.2f}x**" if boto is not None and impl != "boto3" else ""
                lines.append(f"| {result['server']}, {path} | {how} | {seconds:.2f} | {count / seconds:.0f} | "
                             f"{size / 1e6 / seconds:.1f} | {ratio} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("rgw", "moto", "all"), default="all",
                        help="all: Ceph RGW (when installed) and moto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--small", type=int, default=300, help="objects of --small-kib KiB")
    parser.add_argument("--small-kib", type=int, default=100)
    parser.add_argument("--large", type=int, default=4, help="objects of --large-mib MiB")
    parser.add_argument("--large-mib", type=int, default=8)
    parser.add_argument("--impl", nargs="+", choices=("ours", "boto3", "copy"),
                        default=["ours", "boto3", "copy"], help="what to measure, among what each server runs")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs objstore-offload")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / ".work" / "rekey-results.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    servers = ["rgw", "moto"] if args.server == "all" else [args.server]
    if "rgw" in servers and not ceph_available():
        if args.server == "rgw":
            sys.exit("Ceph RGW is not installed here (.ci/install-ceph)")
        servers.remove("rgw")
    objects = dataset(args)
    with tempfile.TemporaryDirectory(prefix="rekey-bench-") as tmp:
        work = Path(tmp)
        startup = median([startup_seconds(args, work) for _ in range(3)]) if "ours" in args.impl else 0
        report = {"objects": len(objects), "bytes": sum(map(len, objects.values())), "jobs": args.jobs,
                  "repeats": args.repeats, "startup_seconds": startup,
                  "servers": [bench_server(name, args, work, objects) for name in servers]}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
