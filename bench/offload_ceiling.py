"""The ceiling for an upload: every file under a media store, put with boto3 from N threads.

No HEAD, no verification, no delete, no state: only `put_object` as fast as a thread pool on
one boto3 client goes (its connection pool sized to the threads). The offload benchmark runs
it with synapse-s3-storage-provider's venv (the boto3 that s3_media_upload uses) beside the
two tools, as the reference for what the S3 server and this machine allow.

    python bench/offload_ceiling.py ENDPOINT_URL BUCKET MEDIA_STORE [--threads 16]

Credentials come from the environment. Prints one JSON line: files, bytes, seconds (after the
client is built; the benchmark also times the whole process from outside).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def media_files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint_url")
    parser.add_argument("bucket")
    parser.add_argument("media_store")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    s3 = boto3.client("s3", endpoint_url=args.endpoint_url,
                      config=Config(max_pool_connections=args.threads, request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required"))
    files = media_files(args.media_store)

    def put(media_path: str) -> int:
        with open(os.path.join(args.media_store, media_path), "rb") as body:
            s3.put_object(Bucket=args.bucket, Key=media_path, Body=body)
        return os.path.getsize(os.path.join(args.media_store, media_path))

    started = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        sizes = list(pool.map(put, files))
    seconds = time.monotonic() - started
    print(json.dumps({"files": len(files), "bytes": sum(sizes), "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
