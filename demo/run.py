"""The README's demo: Synapse's media goes into a bucket and is served back from it.

    .venv/bin/python -m demo [--big-mib 20] [--keep]

Starts an S3 server (moto, in this process, on 127.0.0.1) and a real Synapse (SQLite) whose
media storage provider is synapse_objstore.ObjectStorageProvider; registers a user; uploads an
image and a large file through the client API; lists the objects; removes the local copies;
downloads both back (and a thumbnail) through the authenticated media endpoints, so that they
can only come from the bucket; checks every byte by sha256. Everything it starts is stopped
on the way out (also on Ctrl-C, SIGTERM or an error). The exit code is non-zero if any check
fails.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import FrameType

import boto3
import humanize
from moto.server import ThreadedMotoServer

from servers.matrix_client import MatrixClient, Mxc
from servers.media import image_size, make_image
from servers.process import free_port
from servers.synapse import SynapseServer, local_content_path, local_thumbnails_dir, provider_entry
from synapse_objstore.cli.cache_db import MEDIA_STORE_ID_FILE

MiB = 1024 * 1024
BUCKET = "synapse-media"
PREFIX = "media/"
STORAGE_CLASS = "STANDARD_IA"
# moto accepts any credentials; these are given to both Synapse's provider and our boto3.
CREDENTIALS = {"access_key_id": "demo-access-key", "secret_access_key": "demo-secret-key"}


@dataclass
class Checks:
    """Named pass/fail results, printed as they come."""

    failed: list[str] = field(default_factory=list)
    passed: int = 0

    def __call__(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"    [{'ok' if ok else 'FAILED'}] {name}{f' ({detail})' if detail else ''}")
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok


@contextmanager
def timed(what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    print(f"  {what}: {time.monotonic() - start:.2f} s")


def size(n: int) -> str:
    return humanize.naturalsize(n, binary=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def media_files(synapse: SynapseServer) -> list[Path]:
    return sorted(p for p in synapse.media_store_path.rglob("*") if p.is_file() and p.name != MEDIA_STORE_ID_FILE)


def offload_local_copies(synapse: SynapseServer) -> str:
    """Free the disk the way an admin does: objstore-offload reads homeserver.yaml, records the
    media in cache.db, uploads, verifies and only then deletes the local copies."""
    offload = [str(Path(sys.executable).with_name("objstore-offload")), "--no-progress",
               "--config", str(synapse.config_path), "--cache-db", str(synapse.config_path.parent / "cache.db")]
    time.sleep(1.1)  # durations must be positive: every media of the demo is then older than 1 s
    subprocess.run([*offload, "update", "1s"], check=True, capture_output=True, text=True)
    done = subprocess.run([*offload, "upload", "--delete"], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def run(workdir: Path, stack: ExitStack, big_size: int) -> Checks:
    checks = Checks()
    print("Starting servers")
    with timed(f"moto S3 server, bucket '{BUCKET}'"):
        port = free_port()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        endpoint_url = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["access_key_id"],
                          aws_secret_access_key=CREDENTIALS["secret_access_key"])
        s3.create_bucket(Bucket=BUCKET)
    provider_config = {"bucket": BUCKET, "endpoint_url": endpoint_url, "region_name": "us-east-1",
                       "prefix": PREFIX, "storage_class": STORAGE_CLASS, **CREDENTIALS}
    synapse = SynapseServer(workdir / "synapse", [provider_entry(provider_config)])
    with timed(f"Synapse {version('matrix-synapse')} (SQLite) at {synapse.base_url}"):
        stack.callback(synapse.stop)
        synapse.start()
    print(f"  homeserver.yaml: {synapse.config_path} (--keep keeps it)")
    client = MatrixClient.register(synapse.base_url, synapse.registration_shared_secret, "demo", "demo-password")
    print("  registered @demo:localhost")

    print("\nUploading through POST /_matrix/media/v3/upload")
    files = {"photo.jpg": (make_image(), "image/jpeg"), "big.bin": (os.urandom(big_size), "application/octet-stream")}
    uploaded: dict[str, Mxc] = {}
    for name, (data, content_type) in files.items():
        with timed(f"{name} ({size(len(data))})"):
            uploaded[name] = client.upload(data, content_type, name)
        print(f"    -> {uploaded[name]}")

    print(f"\nObjects in s3://{BUCKET}/{PREFIX}")
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])
    for item in listing:
        storage_class = s3.head_object(Bucket=BUCKET, Key=item["Key"]).get("StorageClass", "STANDARD")
        print(f"  {item['Key']:<62} {size(item['Size']):>10}  {storage_class}")
    keys = {item["Key"] for item in listing}
    for name, (data, _) in files.items():
        key = PREFIX + local_content_path(uploaded[name].media_id)
        if checks(f"{name} is in the bucket", key in keys, key):
            stored = s3.get_object(Bucket=BUCKET, Key=key)
            checks(f"{name}: same bytes in the bucket", sha256(stored["Body"].read()) == sha256(data))
            checks(f"{name}: storage class {STORAGE_CLASS}", stored.get("StorageClass") == STORAGE_CLASS)
    thumbnails = [key for key in keys if key.startswith(PREFIX + local_thumbnails_dir(uploaded["photo.jpg"].media_id))]
    checks("the photo's thumbnails are in the bucket", len(thumbnails) > 0, f"{len(thumbnails)} thumbnails")

    print("\nRemoving the local copies")
    local_files = media_files(synapse)
    local_bytes = sum(p.stat().st_size for p in local_files)
    print(offload_local_copies(synapse))
    print(f"  media_store_path: {len(local_files)} files ({size(local_bytes)}) before, "
          f"{len(media_files(synapse))} after")
    checks("media_store_path holds no media files", not media_files(synapse))

    print("\nDownloading through GET /_matrix/client/v1/media/download (from the bucket)")
    for name, (data, _) in files.items():
        start = time.monotonic()
        response = client.download(uploaded[name])
        took = time.monotonic() - start
        ok = response.status == 200 and sha256(response.body) == sha256(data)
        checks(f"{name}: {size(len(response.body))} in {took:.2f} s, sha256 identical", ok,
               "" if ok else f"HTTP {response.status}")
    response = client.thumbnail(uploaded["photo.jpg"], 32, 32, "scale")
    stored_thumbnails = {sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in thumbnails}
    ok = response.status == 200 and sha256(response.body) in stored_thumbnails
    detail = f"HTTP {response.status}"
    if ok:
        detail = f"{response.headers['content-type']} {'x'.join(map(str, image_size(response.body)))}, as in the bucket"
    checks("thumbnail 32x32 (scale) through /_matrix/client/v1/media/thumbnail", ok, detail)
    checks("served without re-creating local files", not media_files(synapse))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-mib", type=int, default=20, help="size of the large upload in MiB (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (config, logs, database)")
    args = parser.parse_args(argv)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the ExitStack, which stops the servers

    signal.signal(signal.SIGTERM, terminate)
    workdir = Path(tempfile.mkdtemp(prefix="objstore-demo-"))
    started = time.monotonic()
    checks: Checks | None = None
    try:
        with ExitStack() as stack:
            checks = run(workdir, stack, args.big_mib * MiB)
    except KeyboardInterrupt:
        print("\nInterrupted: everything the demo started is stopped.", file=sys.stderr)
        return 130
    except Exception:
        log = workdir / "synapse" / "homeserver.log"
        if log.exists():
            print(f"\nThe end of Synapse's log:\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"\nWorking directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{checks.passed} checks passed, {len(checks.failed)} failed; "
          f"{time.monotonic() - started:.1f} s in all; servers stopped.")
    for name in checks.failed:
        print(f"  FAILED: {name}", file=sys.stderr)
    return 1 if checks.failed else 0
