"""Fault benchmark (issue 11): downloads from a store that stops answering, synapse-objstore
against synapse-s3-storage-provider 1.7.0, each with its default settings, on the same moto.

Run through `bench/run faults`. One moto server on 127.0.0.1 holds one 64 KiB object. Each
measurement runs in a worker process of the implementation's own venv (bench/fault_worker.py)
that first downloads the object once (so its client is connected), then:

  silent  moto is stopped with SIGSTOP: the kernel still accepts connections, nothing answers.
          - one:  one download; its time to error (capped at --cap seconds).
          - pile: --downloads downloads requested evenly over --over seconds (a burst, all of
                  them before any provider can know the store is down); after --cap seconds, how
                  many have ended (and how long each waited) and how many still wait. Then moto
                  resumes (SIGCONT): the time until a new download works, and what became of the
                  downloads that were still waiting.
          - trickle: the same with --trickle-downloads over --trickle-over seconds: downloads
                  that keep coming after a provider could know.
  dead    moto is stopped for good (connections refused): one download's time to error
          (capped at --dead-cap seconds).

The six silent-store workers run at once (they wait, they do not compete for the CPU), then
the two dead-store ones. Results: bench/.work/fault_results.json; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

from servers.moto import MotoServer

KEY = "local_content/fa/ul/tbenchobject"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Worker:
    """A fault_worker.py process, and the lines it prints, as they come."""

    def __init__(self, python: str, spec: dict[str, Any]) -> None:
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONDONTWRITEBYTECODE": "1"}
        if spec["impl"] == "ours":  # this checkout, whichever one the venv was installed from
            env["PYTHONPATH"] = str(ROOT)
        for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(variable, None)
        self.name = f"{spec['impl']}-{spec['scenario']}"
        errlog = open(WORK / "logs" / f"fault-{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([python, str(HERE / "fault_worker.py"), json.dumps(spec)], cwd=str(WORK),
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                                        text=True)
        errlog.close()
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put("EOF")

    def expect(self, word: str, timeout: float) -> str:
        """The next line, which must start with `word`."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no {word} within {timeout:.0f} s") from None
        if not line.startswith(word):
            raise RuntimeError(f"{self.name}: expected {word}, got {line!r} "
                               f"(see bench/.work/logs/fault-{self.name}.log)")
        return line

    def result(self, timeout: float) -> dict[str, Any]:
        return dict(json.loads(self.expect("RESULT", timeout)[len("RESULT "):]))

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_workers(pythons: dict[str, str], base: dict[str, Any], scenarios: list[tuple[str, str]],
                  **extra: Any) -> list[Worker]:
    workers = [Worker(pythons[impl], {**base, "impl": impl, "scenario": scenario, **extra})
               for impl, scenario in scenarios]
    for worker in workers:
        worker.expect("READY", 120)
    return workers


def run(args: argparse.Namespace) -> dict[str, Any]:
    pythons = {"ours": args.ours_python, "old": args.old_python}
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    media = WORK / "media_store"
    media.mkdir(exist_ok=True)
    moto = MotoServer(WORK / "logs")
    moto.start()
    workers: list[Worker] = []
    stopped = False
    try:
        import boto3

        bucket = f"faults-{uuid.uuid4().hex[:8]}"
        s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="bench-key", aws_secret_access_key="bench-secret")
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=KEY, Body=os.urandom(64 * 1024))
        base = {"server": {"endpoint_url": moto.endpoint_url, "access_key": "bench-key", "secret_key": "bench-secret",
                           "region_name": "us-east-1"},
                "bucket": bucket, "key": KEY, "media_store_path": str(media), "cap_s": args.cap,
                "downloads": args.downloads, "over_s": args.over,
                "trickle_downloads": args.trickle_downloads, "trickle_over_s": args.trickle_over}
        results: dict[str, Any] = {"settings": vars(args)}

        log("silent store: starting 6 workers")
        workers = start_workers(pythons, base, [("ours", "one"), ("old", "one"), ("ours", "pile"), ("old", "pile"),
                                                ("ours", "trickle"), ("old", "trickle")])
        os.kill(moto.pid, signal.SIGSTOP)
        stopped = True
        for worker in workers:
            worker.send("GO")
        log(f"silent store: moto stopped (SIGSTOP); waiting up to {args.cap:.0f} s")
        ones, piles = workers[:2], workers[2:]
        for worker in ones:
            results[worker.name] = worker.result(args.cap + 30)
        for worker in piles:
            worker.expect("WINDOW", args.cap + 30)
        os.kill(moto.pid, signal.SIGCONT)
        stopped = False
        for worker in piles:
            worker.send("UP")
        log("silent store: moto answers again (SIGCONT)")
        for worker in piles:
            results[worker.name] = worker.result(60)
        for worker in workers:
            worker.stop()

        log("dead store: starting 2 workers")
        workers = start_workers(pythons, base, [("ours", "one"), ("old", "one")], cap_s=args.dead_cap)
        moto.stop()
        for worker in workers:
            worker.send("GO")
        log(f"dead store: moto stopped for good; waiting up to {args.dead_cap:.0f} s")
        for worker in workers:
            results[f"{worker.name}-dead"] = worker.result(args.dead_cap + 30)
        return results
    finally:
        if stopped:
            os.kill(moto.pid, signal.SIGCONT)
        for worker in workers:
            worker.stop()
        moto.stop()


def seconds(value: float | None, cap: float) -> str:
    return f"{value:.1f} s" if value is not None else f"did not end within {cap:.0f} s"


def time_ratio(old: float | None, ours: float | None, cap: float) -> str:
    if ours is None or ours <= 0:
        return "-"
    return f"{old / ours:.1f}x" if old is not None else f"more than {cap / ours:.1f}x"


def waits(result: dict[str, Any]) -> str:
    if not result["waits_s"]:
        return "none ended"
    return (f"median {statistics.median(result['waits_s']):.1f} s, longest {max(result['waits_s']):.1f} s "
            f"({result['ended']} ended)")


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    title = (f"Store faults, each provider with its default settings; moto on 127.0.0.1 "
             f"(cap {args.cap:.0f} s silent, {args.dead_cap:.0f} s dead)")
    rows = [title, "",
            "| | synapse-objstore | synapse-s3-storage-provider 1.7.0 | old / ours |", "|---|---|---|---|"]
    for label, suffix, cap in (("silent store (SIGSTOP): one download, time to error", "", args.cap),
                               ("dead store (connection refused): one download, time to error", "-dead",
                                args.dead_cap)):
        ours, old = results[f"ours-one{suffix}"], results[f"old-one{suffix}"]
        rows.append(f"| {label} | {seconds(ours.get('time_to_end_s'), cap)} | {seconds(old.get('time_to_end_s'), cap)} "
                    f"| {time_ratio(old.get('time_to_end_s'), ours.get('time_to_end_s'), cap)} |")
    for scenario, n, over in (("pile", args.downloads, args.over),
                              ("trickle", args.trickle_downloads, args.trickle_over)):
        ours, old = results[f"ours-{scenario}"], results[f"old-{scenario}"]
        rows.append(f"| silent store: {n} downloads over {over:.0f} s, still waiting after {args.cap:.0f} s "
                    f"| {ours['pending']} of {n} | {old['pending']} of {n} | |")
        rows.append(f"| ... how long the ended ones waited | {waits(ours)} | {waits(old)} | |")
        rows.append(f"| ... of them, ended in under 1 s | {sum(w < 1 for w in ours['waits_s'])} "
                    f"| {sum(w < 1 for w in old['waits_s'])} | |")
        rows.append(f"| ... store answers again: time until a new download works | "
                    f"{seconds(ours['recovered_after_s'], 30)} | {seconds(old['recovered_after_s'], 30)} | |")
        rows.append(f"| ... downloads still waiting 30 s after that | {ours['still_pending']} "
                    f"| {old['still_pending']} | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours-python", required=True)
    parser.add_argument("--old-python", required=True)
    parser.add_argument("--cap", type=float, default=90.0, help="seconds to watch a silent store (default 90)")
    parser.add_argument("--dead-cap", type=float, default=60.0, help="seconds to watch a dead store (default 60)")
    parser.add_argument("--downloads", type=int, default=50, help="downloads in the pile (default 50)")
    parser.add_argument("--over", type=float, default=10.0, help="seconds over which they are requested (default 10)")
    parser.add_argument("--trickle-downloads", type=int, default=60, help="downloads in the trickle (default 60)")
    parser.add_argument("--trickle-over", type=float, default=60.0,
                        help="seconds over which they are requested (default 60)")
    args = parser.parse_args()
    started = time.monotonic()
    results = run(args)
    results["duration_s"] = round(time.monotonic() - started, 1)
    (WORK / "fault_results.json").write_text(json.dumps(results, indent=2))
    print(table(results, args))
    log(f"done in {results['duration_s']:.0f} s; raw results in bench/.work/fault_results.json")


if __name__ == "__main__":
    main()
