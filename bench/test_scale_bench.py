"""The scaling benchmark (bench/scale_bench.py) at tiny sizes: each measured command ran and
passed the benchmark's own checks (rows in cache.db, objects deleted, nothing lost), and the
benchmark removed what it made. Speed is not looked at here."""

from __future__ import annotations

import sys
from pathlib import Path

from bench import scale_bench


def test_the_scaling_benchmark_measures_and_checks_update_db_and_reconcile_and_cleans_up(tmp_path: Path) -> None:
    work = tmp_path / "scratch"
    report = scale_bench.main([
        "--python", sys.executable, "--only", "update-db", "--only", "reconcile",
        "--update-db-rows", "1000", "--reconcile-objects", "200", "--reconcile-moto", "0",
        "--output", str(tmp_path / "results.json"), "--work", str(work),
    ])
    [update_db] = report["update_db"]
    assert update_db["ok"], update_db
    assert update_db["runs"]["scratch"]["rows_in_cache_db"] > 900  # rows last accessed 41-400 days ago
    assert update_db["runs"]["increment"]["rows_in_cache_db"] == 1000
    [reconcile] = report["reconcile"]
    assert reconcile["ok"], reconcile
    assert reconcile["summary"]["files_deleted"] == reconcile["orphans"] == 2  # media 0 of 100: its 2 objects
    assert all(run["peak_rss_mib"] > 0 for run in [*update_db["runs"].values(), reconcile])
    assert not work.exists()
