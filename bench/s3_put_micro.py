"""The S3 backend's small-file PUT against a bare aiobotocore `put_object`, in client CPU per file.

    python bench/s3_put_micro.py                    # 2,000 puts of 50-300 KB per lane, 3 rounds
    python bench/s3_put_micro.py --files 500 --rounds 1 --profile /tmp/put.prof

One process, one moto server (its own process, so not in the figures), the fsspec I/O loop
every store call runs on. Each lane puts the same files, held in memory with their MD5 and
SHA-256 (what `objstore-offload upload` has read and hashed before it uploads), 16 at a time;
its CPU is user + system of this process (resource.getrusage) from the first put to the last.
The lanes are interleaved, round after round:

    bare      the floor's call (bench/client_floor.py): a default aiobotocore client,
              put_object(Bucket, Key, Body, ContentMD5) and nothing else
    client    put_object on the store's own aiobotocore client (its config), with what the
              store's PUT sends: Content-MD5, If-None-Match: *, Content-Type, the sha256
              metadata, the storage class; nothing around the call
    store     ObjectStore.put_file, as upload calls it: if_absent (If-None-Match: *), the
              Content-Type and sha256 metadata, the content given (no read of the file)

moto is reset between lanes (its memory would hold every round's objects otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import hashlib
import random
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from servers.moto import MotoServer
from synapse_objstore.backends.base import LocalContent, ObjectMetadata
from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore

CREDENTIALS = {"aws_access_key_id": "bench-key", "aws_secret_access_key": "bench-secret"}
JOBS = 16


class File:
    def __init__(self, key: str, data: bytes) -> None:
        self.key, self.data = key, data
        digest = hashlib.md5(data).digest()
        self.md5_hex, self.md5_b64 = digest.hex(), base64.b64encode(digest).decode()
        self.sha256 = hashlib.sha256(data).hexdigest()


def make_files(count: int, seed: int) -> list[File]:
    rng = random.Random(seed)
    return [File(f"local_content/{i % 97:02d}/{i // 97:02d}/file{i}", rng.randbytes(rng.randint(50_000, 300_000)))
            for i in range(count)]


async def in_parallel(files: list[File], put: Callable[[File], Awaitable[object]]) -> None:
    queue = list(files)

    async def worker() -> None:
        while queue:
            await put(queue.pop())

    await asyncio.gather(*(worker() for _ in range(JOBS)))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bare_lane(endpoint: str, bucket: str, files: list[File]) -> float:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                           **CREDENTIALS) as s3:
        await s3.put_object(Bucket=bucket, Key="warm-up", Body=b"x")

        async def put(f: File) -> None:
            await s3.put_object(Bucket=bucket, Key=f.key, Body=f.data, ContentMD5=f.md5_b64)

        started = cpu()
        await in_parallel(files, put)
        return cpu() - started


def open_store(endpoint: str, bucket: str) -> ObjectStore:
    backend = parse_store_config({"bucket": bucket, "endpoint_url": endpoint, "region_name": "us-east-1",
                                  "access_key_id": CREDENTIALS["aws_access_key_id"],
                                  "secret_access_key": CREDENTIALS["aws_secret_access_key"]})
    backend.prepare()
    return ObjectStore(backend)


async def store_lane(endpoint: str, bucket: str, files: list[File]) -> float:
    store = open_store(endpoint, bucket)
    await store.connect()
    await store.put_file("/nonexistent", "warm-up", content=LocalContent(b"x", hashlib.md5(b"x").hexdigest()))

    async def put(f: File) -> None:
        await store.put_file("/nonexistent", f.key, if_absent=True,
                             metadata=ObjectMetadata("image/png", f.sha256), content=LocalContent(f.data, f.md5_hex))

    return await timed(store, files, put)


async def client_lane(endpoint: str, bucket: str, files: list[File]) -> float:
    store = open_store(endpoint, bucket)
    s3 = await store.filesystem().fs.set_session()
    await s3.put_object(Bucket=bucket, Key="warm-up", Body=b"x")

    async def put(f: File) -> None:
        await s3.put_object(Bucket=bucket, Key=f.key, Body=f.data, ContentMD5=f.md5_b64, IfNoneMatch="*",
                            ContentType="image/png", Metadata={"sha256": f.sha256}, StorageClass="STANDARD")

    return await timed(store, files, put)


async def timed(store: ObjectStore, files: list[File], put: Callable[[File], Awaitable[None]]) -> float:
    """CPU seconds of `put` for every file, `store`'s client closed after."""
    try:
        started = cpu()
        await in_parallel(files, put)
        return cpu() - started
    finally:
        await store.backend.close_filesystem(store.filesystem().fs)


LANES = {"bare": bare_lane, "client": client_lane, "store": store_lane}


async def profiled(lane: Awaitable[float], path: str) -> float:
    """The lane under cProfile, enabled on the I/O loop's thread (the one it runs on)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return await lane
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def reset_moto(moto: MotoServer, bucket: str) -> None:
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto.endpoint_url}/moto-api/reset", method="POST")).read()
    boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1", **CREDENTIALS).create_bucket(
        Bucket=bucket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--lanes", default=",".join(LANES))
    parser.add_argument("--profile", help="cProfile the store lane into this file (its figures are then off)")
    args = parser.parse_args()
    files = make_files(args.files, args.seed)
    lanes = args.lanes.split(",")
    print(f"{args.files} files, {sum(len(f.data) for f in files) / 1e6:.0f} MB, {JOBS} at a time", flush=True)
    results: dict[str, list[float]] = {lane: [] for lane in lanes}
    with tempfile.TemporaryDirectory(prefix="objstore-put-micro-") as work, MotoServer(Path(work)) as moto:
        for round_ in range(args.rounds):
            for lane in lanes:
                reset_moto(moto, "micro")
                lane_run = LANES[lane](moto.endpoint_url, "micro", files)
                if args.profile and lane == "store":
                    lane_run = profiled(lane_run, args.profile)
                wall = time.monotonic()
                spent = run(lane_run)
                wall = time.monotonic() - wall
                ms = spent / len(files) * 1000
                results[lane].append(ms)
                print(f"round {round_ + 1} {lane:6s} {ms:6.3f} ms/file CPU  {len(files) / wall:6.1f} files/s",
                      flush=True)
    for lane in lanes:
        print(f"median {lane:6s} {statistics.median(results[lane]):6.3f} ms/file CPU "
              f"({', '.join(f'{ms:.3f}' for ms in results[lane])})")


if __name__ == "__main__":
    main()
