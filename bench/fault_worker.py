"""One provider against a store that stops answering, in a process of its own, run by the
Python of the implementation's venv (bench/fault_bench.py drives it).

    python fault_worker.py '<json spec>'

The provider is loaded and driven as bench/fetch_worker.py does it (Synapse's load_module and
StorageProviderWrapper, Twisted's epoll reactor), with each provider's default settings. The
protocol on stdin/stdout, one line each:
  worker: READY            after a warm-up download that worked (the client is connected)
  driver: GO               the store has just stopped answering (or gone away)
  driver: UP               (scenario "pile" only) the store answers again
  worker: RESULT {json}

Scenarios (spec["scenario"]):
  one   one download; its time to error, or None if it has not ended within spec["cap_s"].
  pile  spec["downloads"] downloads requested evenly over spec["over_s"] (scenario "trickle" is the
        same with spec["trickle_downloads"] over spec["trickle_over_s"]); after spec["cap_s"]
        from GO: how many ended (and how long each waited), how many are still waiting. Then,
        after UP: the time until a new download works again, and what became of the waiting ones.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fetch_worker import file_info, load_provider, make_consumer_class, now

RECOVERY_LIMIT_S = 30.0
RECOVERY_POLL_S = 0.25


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    from twisted.internet import defer, reactor, task

    provider, _ = load_provider(spec, reactor)
    consumer_class = make_consumer_class()
    key = spec["key"]
    result: dict[str, Any] = {"impl": spec["impl"], "scenario": spec["scenario"]}
    lines: defer.DeferredQueue[str] = defer.DeferredQueue()

    def read_lines() -> None:  # stdin, in a thread: the reactor never blocks on it
        for line in sys.stdin:
            reactor.callFromThread(lines.put, line.strip())

    def next_line() -> defer.Deferred[str]:
        return lines.get()

    def sleep(seconds: float) -> Any:
        return task.deferLater(reactor, seconds, lambda: None)

    async def download(record: dict[str, Any]) -> None:
        record["start"] = now()
        try:
            responder = await provider.fetch(key, file_info(key))
            if responder is None:
                record["outcome"] = "missing"
            else:
                with responder:
                    await responder.write_to_consumer(consumer_class())
                record["outcome"] = "ok"
        except Exception as error:
            record["outcome"] = "error"
            record["error"] = f"{type(error).__name__}: {error}"[:400]
        record["end"] = now()

    async def until(condition: Any, limit: float) -> None:
        started = now()
        while not condition() and now() - started < limit:
            await sleep(0.02)

    async def one(go: float) -> None:
        record: dict[str, Any] = {}
        defer.ensureDeferred(download(record))
        await until(lambda: "end" in record, spec["cap_s"])
        result["ended"] = "end" in record
        result["time_to_end_s"] = round(record["end"] - record["start"], 3) if "end" in record else None
        result["outcome"] = record.get("outcome")
        result["error"] = record.get("error")

    async def pile(go: float) -> None:
        count, over = ((spec["downloads"], spec["over_s"]) if spec["scenario"] == "pile"
                       else (spec["trickle_downloads"], spec["trickle_over_s"]))
        records: list[dict[str, Any]] = [{} for _ in range(count)]
        gap = over / count
        for number, record in enumerate(records):
            reactor.callLater(number * gap, lambda record=record: defer.ensureDeferred(download(record)))
        await until(lambda: all("end" in record for record in records), spec["cap_s"])
        window_end = now()
        ended = [record for record in records if "end" in record]
        result["window_s"] = round(window_end - go, 1)
        result["ended"] = len(ended)
        result["pending"] = len(records) - len(ended)
        result["ended_outcomes"] = {o: sum(r["outcome"] == o for r in ended) for o in {r["outcome"] for r in ended}}
        result["waits_s"] = sorted(round(r["end"] - r["start"], 3) for r in ended)
        result["pending_waited_s"] = sorted(round(window_end - r["start"], 1) for r in records if "end" not in r)
        # each download: (requested, s after GO; waited, s, or None if still waiting)
        result["downloads"] = [(round(r["start"] - go, 2), round(r["end"] - r["start"], 3) if "end" in r else None)
                               for r in records]
        result["last_error"] = ended[-1].get("error") if ended else None
        print("WINDOW", flush=True)

        assert await next_line() == "UP"
        up = now()
        recovered = None
        while now() - up < RECOVERY_LIMIT_S:
            attempt: dict[str, Any] = {}
            defer.ensureDeferred(download(attempt))
            await until(lambda attempt=attempt: "end" in attempt, RECOVERY_LIMIT_S - (now() - up))
            if attempt.get("outcome") == "ok":
                recovered = round(attempt["end"] - up, 2)
                break
            await sleep(RECOVERY_POLL_S)
        result["recovered_after_s"] = recovered
        late = [record for record in records if "end" in record and record["end"] > window_end]
        result["late_outcomes"] = {o: sum(r["outcome"] == o for r in late) for o in {r["outcome"] for r in late}}
        result["still_pending"] = sum("end" not in record for record in records)

    async def run() -> None:
        try:
            warm: dict[str, Any] = {}
            await download(warm)
            if warm["outcome"] != "ok":
                raise RuntimeError(f"the warm-up download failed: {warm}")
            print("READY", flush=True)
            assert await next_line() == "GO"
            await (one if spec["scenario"] == "one" else pile)(now())
        except Exception as error:
            result["failure"] = f"{type(error).__name__}: {error}"
        # A provider's threads may wait on the store for ever: leave without them.
        sys.stdout.write("RESULT " + json.dumps(result) + "\n")
        sys.stdout.flush()
        os._exit(0)

    threading.Thread(target=read_lines, daemon=True).start()
    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()))
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
