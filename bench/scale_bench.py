"""Scaling benchmark (issue 12): how the cost of `objstore-offload` grows with the homeserver.

Run through `bench/run scale` (ours only; no competitor). For each size, in a fresh process
timed from outside with its peak RSS (bench/offload_measure.py, GNU time):

- **update-db** at --update-db-rows rows of `local_media_repository` (PostgreSQL on
  127.0.0.1:5432, rows made by the server with generate_series, last accessed 40-400 days ago
  in random id order). Three runs: from scratch (`update-db 41d`, nearly every row), the
  nightly increment (`update-db 40d`: the one day of rows that aged past the cutoff since),
  and a rerun with nothing new.
- **reconcile --apply** at --reconcile-objects objects: a `backend: fsspec` store on a local
  directory (`file://`; with --reconcile-moto up to N objects, also on moto), two objects per
  media (original and one thumbnail), a tenth of the media remote. Synapse's database knows
  every media but 1%: those objects (1% of the store) are the orphans it deletes. Every
  object and media is a year old (moto dates its objects now: there the run has --grace 0s);
  the owner marker, written beforehand, records this homeserver's claim as old, so nothing is
  held back by the grace period.
- **upload --delete** of --offload-media media on moto: small files (originals 1-32 KB,
  thumbnails as Synapse's sizes), so the figure is the cost per request rather than per byte.
  Checked afterwards: every file in the bucket, none left on disk, every media marked deleted.

Per size: wall time, peak RSS, cost per item and the ratio of that cost to the smallest
size's. Raw results: bench/.work/scale-results.json; tables on stdout. Every database,
directory, bucket and server it makes, it removes (servers stopped by their PIDs).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

import psycopg2
import yaml

from bench.offload_bench import CREDENTIALS, bucket_contents, drop_bucket, s3_client
from bench.offload_fixture import (
    DAY_MS,
    IMAGE_THUMBNAILS,
    KB,
    OTHER_THUMBNAILS,
    Filler,
    MediaStore,
    count_files,
    create_media_tables,
    log_uniform,
    random_ids,
)
from bench.offload_measure import Measured, clean_environment, run_measured
from servers.moto import MotoServer
from servers.postgres import temporary_database
from synapse_objstore import media as layout
from synapse_objstore.cli.cache_db import CacheDb

COMMAND_TIMEOUT = 3 * 3600.0
ORPHAN_EVERY = 100  # media i with i % ORPHAN_EVERY == 0 are not in the database: 1% orphans
REMOTE_EVERY = 10  # media i with i % REMOTE_EVERY == 1 are remote
REMOTE_ORIGIN = "remote.example"
THUMBNAIL = (32, 32, "image/png", "crop")
YEAR_S = 365 * 24 * 3600


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tool = Path(os.path.abspath(args.python)).parent / "objstore-offload"
        # the subprocess imports synapse_objstore from this checkout, whatever its venv has installed
        self.env = clean_environment({**CREDENTIALS, "PYTHONPATH": str(ROOT)})
        self.base = Path(args.work).resolve()
        self.logs = Path(args.output).parent / "logs"

    def offload(self, cwd: Path, name: str, *argv: str, stdout: Path | None = None) -> Measured:
        load = load1()
        measured = run_measured([str(self.tool), "--no-progress", *argv], cwd, self.env,
                                self.logs / f"scale-{name}.log", COMMAND_TIMEOUT, stdout=stdout)
        log(f"  {' '.join(argv[:3])}: exit {measured.returncode}, {measured.seconds:.2f} s, peak RSS "
            f"{measured.peak_rss_mib} MiB (load {load})")
        return measured

    # ------------------------------------------------------------ update-db

    def update_db(self, rows: int) -> dict[str, Any]:
        workdir = self.base / f"update-db-{rows}"
        workdir.mkdir(parents=True)
        try:
            with temporary_database("objstore_scale") as db:
                started = time.monotonic()
                database_bytes = load_local_rows(db, rows)
                log(f"update-db {rows:,}: rows made in {time.monotonic() - started:.1f} s "
                    f"({database_bytes / 2**20:.0f} MiB database)")
                (workdir / "database.yaml").write_text(yaml.safe_dump({"postgres": db}))
                runs = {}
                for phase, duration in (("scratch", "41d"), ("increment", "40d"), ("nothing new", "40d")):
                    measured = self.offload(workdir, "update-db", "update-db", duration)
                    runs[phase] = {**measured.as_dict(), "rows_in_cache_db": cache_rows(workdir / "cache.db"),
                                   "load1_before": load1()}
                cache_bytes = (workdir / "cache.db").stat().st_size
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        scratch, increment = runs["scratch"]["rows_in_cache_db"], runs["increment"]["rows_in_cache_db"]
        runs["scratch"]["items"] = scratch
        # the later runs read the whole table (Synapse has no index on last_access_ts): per row of it
        runs["increment"]["items"] = runs["nothing new"]["items"] = rows
        runs["increment"]["new_rows"] = increment - scratch
        ok = all(r["returncode"] == 0 for r in runs.values()) and increment == rows == \
            runs["nothing new"]["rows_in_cache_db"]
        return {"rows": rows, "database_mib": round(database_bytes / 2**20), "cache_db_mib": round(cache_bytes / 2**20),
                "runs": runs, "ok": ok}

    # ------------------------------------------------------------ reconcile

    def reconcile(self, objects: int, backend: str, moto: MotoServer | None) -> dict[str, Any]:
        workdir = self.base / f"reconcile-{backend}-{objects}"
        media_store = workdir / "media_store"  # empty: everything is offloaded
        media_store.mkdir(parents=True)
        media = objects // 2
        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        s3 = s3_client(moto.endpoint_url) if moto else None
        try:
            with temporary_database("objstore_scale") as db:
                started = time.monotonic()
                if moto and s3:
                    s3.create_bucket(Bucket=bucket)
                    store = {"backend": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url,
                             "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                             "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
                    written = fill_bucket(s3, bucket, media)
                else:
                    store = {"backend": "fsspec", "url": (workdir / "store").as_uri()}
                    written = fill_directory(workdir / "store", media)
                known = load_reconcile_rows(db, media)
                (workdir / "database.yaml").write_text(yaml.safe_dump({"postgres": db}))
                (workdir / "store.yaml").write_text(yaml.safe_dump(store))
                claim_store_long_ago(workdir, store)
                orphans = 2 * (media - known)
                log(f"reconcile {backend} {objects:,}: {written:,} objects of {media:,} media, {known:,} media in the "
                    f"database, {orphans:,} orphan objects; made in {time.monotonic() - started:.1f} s")
                summary_path = workdir / "summary.json"
                # moto dates its objects now: only --grace 0s counts them old (the claim is older still)
                grace = ["--grace", "0s"] if moto else []
                measured = self.offload(workdir, f"reconcile-{backend}", "--json", "reconcile", str(media_store),
                                        "--apply", "--store-config", "store.yaml", *grace, stdout=summary_path)
                summary = json.loads(summary_path.read_text() or "{}")
        finally:
            if s3 is not None:
                try:
                    drop_bucket(s3, bucket)
                except Exception as error:  # the bucket may not exist; moto stops anyway
                    log(f"  dropping {bucket}: {error}")
            shutil.rmtree(workdir, ignore_errors=True)
        ok = (measured.returncode == 0 and summary.get("objects_listed") == written
              and summary.get("files_deleted") == orphans and summary.get("media_lost") == 0)
        return {"objects": written, "media": media, "media_in_database": known, "orphans": orphans,
                "backend": backend, **measured.as_dict(), "items": written, "ok": ok,
                "summary": {k: summary.get(k) for k in ("objects_listed", "objects_orphaned", "files_deleted",
                                                         "media", "media_lost", "objects_recent")}}

    # ------------------------------------------------------------ upload --delete

    def upload(self, count: int, moto: MotoServer) -> dict[str, Any]:
        workdir = self.base / f"upload-{count}"
        workdir.mkdir(parents=True)
        s3 = s3_client(moto.endpoint_url)
        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        try:
            started = time.monotonic()
            store = build_small_media_store(workdir / "media_store", count, self.args.seed)
            cache = CacheDb(str(workdir / "cache.db"))
            cache.add_media(store.media)
            cache.close()
            log(f"upload {count:,} media: {len(store.files):,} files, {store.total_bytes / 1e6:.0f} MB, made in "
                f"{time.monotonic() - started:.1f} s")
            measured = self.offload(workdir, "upload", "upload", "--delete", "--endpoint-url", moto.endpoint_url,
                                    str(workdir / "media_store"), bucket)
            contents = bucket_contents(s3, bucket)
            missing = sum(1 for path in store.files if path not in contents)
            left = count_files(workdir / "media_store")
            with sqlite3.connect(workdir / "cache.db") as conn:
                undeleted = conn.execute("SELECT count(*) FROM media WHERE NOT known_deleted").fetchone()[0]
        finally:
            drop_bucket(s3, bucket)
            shutil.rmtree(workdir, ignore_errors=True)
        ok = measured.returncode == 0 and not missing and not left and not undeleted
        return {"media": count, "files": len(store.files), "bytes": store.total_bytes, **measured.as_dict(),
                "items": count, "ok": ok, "check": {"missing": missing, "left": left, "undeleted": undeleted}}


# ---------------------------------------------------------------- fixtures


def load_local_rows(db: dict[str, Any], rows: int) -> int:
    """`rows` local media made by PostgreSQL itself, in random id order (md5 of a counter), each
    last accessed 40-400 days ago; returns the database's size in bytes."""
    conn = psycopg2.connect(**db)
    try:
        create_media_tables(conn)
        now_ms = int(time.time() * 1000)
        with conn.cursor() as cursor:
            cursor.execute(
                """INSERT INTO local_media_repository
                       (media_id, media_type, media_length, created_ts, upload_name, user_id, last_access_ts)
                   SELECT substr(md5(i::text), 1, 24), 'image/jpeg', 10000 + (i::bigint * 7919) %% 2000000,
                          ts - %s::bigint, 'upload.jpg', '@user:bench.example', ts
                   FROM (SELECT i, %s::bigint - 40 * %s::bigint - (random() * 360 * %s)::bigint AS ts
                         FROM generate_series(1, %s) AS i) AS made""",
                (DAY_MS, now_ms, DAY_MS, DAY_MS, rows))
            cursor.execute("ANALYZE local_media_repository")
            cursor.execute("SELECT count(*) FROM local_media_repository WHERE last_access_ts > 0")  # warm the cache
            cursor.execute("SELECT pg_database_size(current_database())")
            size = int(cursor.fetchone()[0])
        conn.commit()
        return size
    finally:
        conn.close()


def cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM media").fetchone()[0])


def media_of(index: int) -> tuple[str, str, str]:
    """(origin, media_id, filesystem_id) of the reconcile fixture's media `index`: the same ids
    as load_reconcile_rows makes in SQL (md5 of the counter)."""
    media_id = hashlib.md5(str(index).encode()).hexdigest()[:24]
    if index % REMOTE_EVERY == 1:
        return REMOTE_ORIGIN, media_id, hashlib.md5(f"r{index}".encode()).hexdigest()[:24]
    return "", media_id, media_id


def object_paths(count: int) -> Iterator[str]:
    """The original and one thumbnail of each media of the reconcile fixture."""
    width, height, content_type, method = THUMBNAIL
    for index in range(count):
        origin, _, file_id = media_of(index)
        if origin:
            yield layout.remote_media_path(origin, file_id)
            yield layout.remote_thumbnail_path(origin, file_id, width, height, content_type, method)
        else:
            yield layout.local_media_path(file_id)
            yield layout.local_thumbnail_path(file_id, width, height, content_type, method)


def fill_directory(root: Path, media: int) -> int:
    """A file of one byte per object, a year old (older than any grace period)."""
    old = time.time() - YEAR_S
    made: set[str] = set()
    written = 0
    for path in object_paths(media):
        full = f"{root}/{path}"
        parent = full.rpartition("/")[0]
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"x")
        os.close(fd)
        os.utime(full, (old, old))
        written += 1
    return written


def fill_bucket(s3: Any, bucket: str, media: int) -> int:
    """The same objects in a moto bucket, put from 16 threads."""
    from concurrent.futures import ThreadPoolExecutor

    paths = list(object_paths(media))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), paths))
    return len(paths)


def load_reconcile_rows(db: dict[str, Any], media: int) -> int:
    """Rows for every media of the fixture but one in ORPHAN_EVERY, created a year ago; returns
    how many. The ids are made as media_of makes them."""
    conn = psycopg2.connect(**db)
    try:
        create_media_tables(conn)
        created = int((time.time() - YEAR_S) * 1000)
        with conn.cursor() as cursor:
            cursor.execute(
                """INSERT INTO local_media_repository
                       (media_id, media_type, media_length, created_ts, upload_name, user_id, last_access_ts)
                   SELECT substr(md5(i::text), 1, 24), 'image/png', 1, %s, 'a.png', '@user:bench.example', %s
                   FROM generate_series(0, %s - 1) AS i WHERE i %% %s <> 1 AND i %% %s <> 0""",
                (created, created, media, REMOTE_EVERY, ORPHAN_EVERY))
            cursor.execute(
                """INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name,
                                                   media_length, filesystem_id, last_access_ts)
                   SELECT %s, substr(md5(i::text), 1, 24), 'image/png', %s, 'a.png', 1,
                          substr(md5('r' || i::text), 1, 24), %s
                   FROM generate_series(0, %s - 1) AS i WHERE i %% %s = 1 AND i %% %s <> 0""",
                (REMOTE_ORIGIN, created, created, media, REMOTE_EVERY, ORPHAN_EVERY))
            cursor.execute("ANALYZE local_media_repository; ANALYZE remote_media_cache")
            cursor.execute("SELECT (SELECT count(*) FROM local_media_repository) + "
                           "(SELECT count(*) FROM remote_media_cache)")
            known = int(cursor.fetchone()[0])
        conn.commit()
        return known
    finally:
        conn.close()


def claim_store_long_ago(workdir: Path, store_config: dict[str, Any]) -> None:
    """Write the owner marker as the first `upload` would have, with a claim a year old, so
    that reconcile deletes orphans at once (a fresh claim defers them by --grace)."""
    from synapse_objstore.cli.ownership import identify
    from synapse_objstore.cli.synapse_db import SynapseDb
    from synapse_objstore.config import parse_store_config
    from synapse_objstore.io_loop import run
    from synapse_objstore.owner_marker import record_owner
    from synapse_objstore.store import ObjectStore

    synapse_db = SynapseDb._from_database_yaml(str(workdir / "database.yaml"))
    try:
        identity = identify(synapse_db)
        newest = synapse_db.media_counts()[2]
    finally:
        synapse_db.close()
    store = ObjectStore(parse_store_config(store_config))
    claimed = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=365)
    try:
        run(record_owner(store, identity, newest, (), "bench", claimed.isoformat(timespec="seconds")))
    finally:
        run(store.close())


def build_small_media_store(root: Path, count: int, seed: int) -> MediaStore:
    """`count` local media, each an original of 1-32 KB with the thumbnails of offload_fixture's
    mix (70% three, 30% one), in Synapse's layout."""
    rng = random.Random(seed)
    filler = Filler(rng, block=1024 * 1024)
    store = MediaStore(root)
    for media_id in random_ids(count, rng):
        thumbnails = IMAGE_THUMBNAILS if rng.random() < 0.7 else OTHER_THUMBNAILS
        paths = [layout.local_media_path(media_id)] + [
            layout.local_thumbnail_path(media_id, w, h, ctype, method) for w, h, method, ctype, _, _ in thumbnails]
        sizes_ = [log_uniform(rng, 1 * KB, 32 * KB)] + [rng.randint(low, high) for *_, low, high in thumbnails]
        store.media.append(("", media_id, media_id, "local"))
        store.paths_by_media.append(paths)
        for media_path, size in zip(paths, sizes_, strict=True):
            filler.write(root / media_path, size)
            store.files[media_path] = size
    return store


# ---------------------------------------------------------------- report


def per_item(run: dict[str, Any], unit: float = 1e6) -> float | None:
    """Microseconds (by default) per item."""
    return round(run["seconds"] / run["items"] * unit, 2) if run.get("items") else None


def growth_rows(label: str, runs: list[dict[str, Any]], unit_name: str, unit: float) -> list[str]:
    """Table rows of one measured command over its sizes: the cost per item, that cost
    relative to the smallest size's, and the marginal cost per item from the size before (the
    start-up of a process, a second or two, weighs on the small sizes only)."""
    lines = []
    first = next((per_item(r, unit) for r in runs if per_item(r, unit)), None)
    previous: dict[str, Any] | None = None
    for run in runs:
        cost = per_item(run, unit)
        relative = f"{cost / first:.2f}" if cost and first else ""
        marginal = ""
        if previous is not None and run["items"] > previous["items"]:
            marginal = f"{(run['seconds'] - previous['seconds']) / (run['items'] - previous['items']) * unit:,.2f}"
        lines.append(f"| {label} | {run['items']:,} | {run['seconds']:.2f} | {fmt(cost)} {unit_name} | {relative} | "
                     f"{marginal} | {run['peak_rss_mib']} | {'yes' if run['ok'] else 'NO'} |")
        previous = run
    return lines


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


def tables(report: dict[str, Any]) -> str:
    lines = ["| command | items | s | per item | per item vs smallest | marginal per item | peak RSS, MiB | checked |",
             "|---|---|---|---|---|---|---|---|"]
    for phase, label in (("scratch", "update-db from scratch (rows synced)"),
                         ("increment", "update-db, a day's increment (rows in the table)"),
                         ("nothing new", "update-db, nothing new (rows in the table)")):
        lines += growth_rows(label, [{**r["runs"][phase], "ok": r["ok"]} for r in report.get("update_db", [])],
                             "µs", 1e6)
    for backend in ("file", "moto"):
        runs = [r for r in report.get("reconcile", []) if r["backend"] == backend]
        lines += growth_rows(f"reconcile --apply, {backend} (objects)", runs, "µs", 1e6)
    lines += growth_rows("upload --delete, moto (media)", report.get("upload", []), "ms", 1e3)
    notes = [f"update-db {r['rows']:,}: PostgreSQL database {r['database_mib']} MiB, cache.db {r['cache_db_mib']} MiB; "
             f"increment {r['runs']['increment']['new_rows']:,} rows" for r in report.get("update_db", [])]
    notes += [f"reconcile {r['backend']} {r['objects']:,}: {r['summary']}" for r in report.get("reconcile", [])]
    notes += [f"upload {r['media']:,} media: {r['files']:,} files, {r['bytes'] / 1e6:.0f} MB, {r['check']}"
              for r in report.get("upload", [])]
    return "\n".join([*lines, "", *notes])


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="the venv whose objstore-offload runs (its bin/)")
    parser.add_argument("--update-db-rows", type=sizes, default=[100_000, 1_000_000, 10_000_000], metavar="N,N,...")
    parser.add_argument("--reconcile-objects", type=sizes, default=[10_000, 100_000, 1_000_000], metavar="N,N,...")
    parser.add_argument("--reconcile-moto", type=int, default=100_000,
                        help="also reconcile on moto at the sizes up to this many objects (0: never)")
    parser.add_argument("--offload-media", type=sizes, default=[1_000, 10_000], metavar="N,N,...")
    parser.add_argument("--only", action="append", choices=("update-db", "reconcile", "upload"),
                        help="only these measurements (repeatable)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--output", default=str(WORK / "scale-results.json"),
                        help="raw results; the commands' output goes to logs/ beside it")
    parser.add_argument("--work", default=str(WORK / "scale"), help="scratch directory (removed before and after)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    only = set(args.only or ("update-db", "reconcile", "upload"))
    bench = Bench(args)
    if not bench.tool.exists():
        sys.exit(f"{bench.tool} is missing")
    bench.logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(bench.base, ignore_errors=True)
    bench.base.mkdir(parents=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_start": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "python"},
    }
    moto: MotoServer | None = None
    try:
        if "update-db" in only:
            report["update_db"] = [bench.update_db(rows) for rows in args.update_db_rows]
        on_moto = [n for n in args.reconcile_objects if n <= args.reconcile_moto] if "reconcile" in only else []
        if on_moto or "upload" in only:
            moto = MotoServer(bench.logs).start()
            log(f"moto at {moto.endpoint_url} (pid {moto.pid})")
        if "reconcile" in only:
            report["reconcile"] = [bench.reconcile(n, "file", None) for n in args.reconcile_objects]
            report["reconcile"] += [bench.reconcile(n, "moto", moto) for n in on_moto]
        if "upload" in only:
            assert moto is not None
            report["upload"] = [bench.upload(n, moto) for n in args.offload_media]
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(bench.base, ignore_errors=True)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    report["duration_s"] = round(time.monotonic() - started, 1)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(tables(report))
    print(f"\nload average at start {report['machine']['load_avg_at_start']}, at end "
          f"{report['machine']['load_avg_at_end']}; full results: {args.output} ({report['duration_s']} s)")
    return report


if __name__ == "__main__":
    main()
