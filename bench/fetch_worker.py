"""One measurement in a process of its own, run by the Python of the implementation's venv.

    python fetch_worker.py '<json spec>'      -> prints one line "RESULT: {json}" on stdout

Implementations (spec["impl"]):
  ours    synapse_objstore.ObjectStorageProvider        (bench/.work/venv-ours)
  old     s3_storage_provider.S3StorageProviderBackend  (.work/old-provider/venv, from PyPI)
  boto3   a plain boto3 get_object + read(1 MiB) loop, no reactor (the server's ceiling)
  aiobotocore  s3fs/aiobotocore get_object + read(256 KiB) on fsspec's loop, no reactor
          (diagnostic: the ceiling of our own HTTP stack)

Scenarios (spec["scenario"]):
  stream  reactor start, 1 s idle, a cold first fetch of a small object, then one fetch of
          the big object streamed into a byte-counting consumer (throughput, time to first
          byte, peak RSS growth, reactor stalls in each phase).
  paused  a warm-up fetch; a stream of the big object whose consumer pauses after 8 MiB
          (what is written after the pause request, in 1 s); then N fetches whose consumers
          pause at their first write and stay paused; then one more small fetch (its time to
          first byte and to completion).

The providers are loaded the way Synapse loads them (synapse.util.module_loader.load_module:
parse_config, then cls(hs, parsed)), wrapped in Synapse's StorageProviderWrapper, and driven
on Twisted's real (epoll) reactor, as Synapse's media repository drives them:
`responder = await provider.fetch(path, file_info)`, `with responder: await
responder.write_to_consumer(consumer)`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

MiB = 1024 * 1024
now = time.monotonic


# ---------------------------------------------------------------- process measurements


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """VmRSS every 10 ms from a thread, plus the kernel's own high-water mark (VmHWM, reset
    through /proc/self/clear_refs) so that a peak between two samples is not missed."""

    def __init__(self, interval: float = 0.010) -> None:
        self.interval = interval
        self.baseline_kib = 0
        self.peak_kib = 0
        self._lock = threading.Lock()
        thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            rss = _status_kib("VmRSS")
            with self._lock:
                self.peak_kib = max(self.peak_kib, rss)
            time.sleep(self.interval)

    def mark(self) -> None:
        """Take the baseline now and start a new peak."""
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        rss = _status_kib("VmRSS")
        with self._lock:
            self.baseline_kib = rss
            self.peak_kib = rss

    def growth_mib(self) -> dict[str, float]:
        with self._lock:
            sampled = self.peak_kib - self.baseline_kib
        hwm = _status_kib("VmHWM") - self.baseline_kib
        return {
            "baseline_mib": round(self.baseline_kib / 1024, 1),
            "growth_sampled_mib": round(sampled / 1024, 1),
            "growth_hwm_mib": round(hwm / 1024, 1),
            "growth_mib": round(max(sampled, hwm) / 1024, 1),
        }


class StallMonitor:
    """A 5 ms timer on the reactor; a stall is how much longer than 5 ms the reactor took
    between two ticks (resolution about 5 ms). Gaps are kept with their times, so the
    worst stall can be given per phase.

    For each gap it also reads the reactor thread's run-queue wait (/proc/thread-self/schedstat):
    time the kernel kept the thread runnable but off the CPU, because other processes (the S3
    server, other jobs on this 2-core machine) had both cores. `max_between(..., exclude_os=True)`
    gives the stall without that part: what the process itself (the GIL, its own work) caused."""

    def __init__(self, reactor: Any, interval: float = 0.005) -> None:
        self.reactor = reactor
        self.interval = interval
        self.gaps: list[tuple[float, float, float]] = []  # (end time, stall s, run-queue wait s) above 1 ms
        self.last = 0.0
        self.last_wait = 0.0
        self.ticks = 0
        self._fd: int | None = None

    def _run_queue_wait(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 100, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def start(self) -> None:
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # the reactor thread's
        except OSError:
            self._fd = None
        self.last = now()
        self.last_wait = self._run_queue_wait()
        self.reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        t = now()
        wait = self._run_queue_wait()
        stall = t - self.last - self.interval
        if stall > 0.001:
            self.gaps.append((t, stall, wait - self.last_wait))
        self.last = t
        self.last_wait = wait
        self.ticks += 1
        self.reactor.callLater(self.interval, self._tick)

    def max_between(self, start: float, end: float, exclude_os: bool = False) -> float:
        """The worst stall overlapping [start, end], in ms."""
        worst = 0.0
        for t_end, stall, wait in self.gaps:
            if t_end >= start and t_end - stall - self.interval <= end:
                worst = max(worst, stall - wait if exclude_os else stall)
        return round(max(worst, 0.0) * 1000, 1)


# ---------------------------------------------------------------- the consumer


def make_consumer_class() -> type:
    from twisted.internet.interfaces import IConsumer
    from zope.interface import implementer

    @implementer(IConsumer)
    class CountingConsumer:
        """Counts what it is given. With `pause_at` it calls pauseProducing() inside the write
        that reaches `pause_at` bytes, and from then on counts what still arrives. With
        `paced_by` (a reactor) it pauses inside every write and resumes on the reactor's next
        turn, as Twisted's TCP transport does when each write fills its buffer and the socket
        drains at once: a client on a fast network."""

        def __init__(self, pause_at: int | None = None, on_first_write: Any = None, paced_by: Any = None) -> None:
            self.pause_at = pause_at
            self.on_first_write = on_first_write
            self.paced_by = paced_by
            self.producer: Any = None
            self.last_producer: Any = None
            self.streaming: bool | None = None
            self.bytes = 0
            self.writes = 0
            self.first_write_at: float | None = None
            self.paused_at: float | None = None
            self.bytes_after_pause = 0
            self.writes_after_pause = 0
            self.sizes: list[int] = []

        def registerProducer(self, producer: Any, streaming: bool) -> None:
            self.producer = self.last_producer = producer
            self.streaming = streaming

        def unregisterProducer(self) -> None:
            self.producer = None

        def write(self, data: bytes) -> None:
            n = len(data)
            if self.first_write_at is None:
                self.first_write_at = now()
                if self.on_first_write is not None:
                    self.on_first_write(self)
            if self.paused_at is not None:
                self.bytes_after_pause += n
                self.writes_after_pause += 1
            self.bytes += n
            self.writes += 1
            self.sizes.append(n)
            if self.pause_at is not None and self.paused_at is None and self.bytes >= self.pause_at:
                self.paused_at = now()
                self.producer.pauseProducing()
            elif self.paced_by is not None:
                self.producer.pauseProducing()
                self.paced_by.callLater(0, self._resume)

        def _resume(self) -> None:
            if self.producer is not None:
                self.producer.resumeProducing()

    return CountingConsumer


def chunk_stats(sizes: list[int]) -> dict[str, Any]:
    if not sizes:
        return {"writes": 0}
    ordered = sorted(sizes)
    return {
        "writes": len(sizes),
        "chunk_min_kib": round(ordered[0] / 1024, 1),
        "chunk_median_kib": round(ordered[len(ordered) // 2] / 1024, 1),
        "chunk_mean_kib": round(sum(sizes) / len(sizes) / 1024, 1),
        "chunk_max_kib": round(ordered[-1] / 1024, 1),
    }


# ---------------------------------------------------------------- loading a provider as Synapse does


class ModuleApiStandIn:
    """What synapse-s3-storage-provider uses of Synapse's ModuleApi: defer_to_threadpool, with
    the body of ModuleApi.defer_to_threadpool (synapse 1.163)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    async def defer_to_threadpool(self, threadpool: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        from synapse.logging.context import defer_to_threadpool

        return await defer_to_threadpool(self._reactor, threadpool, f, *args, **kwargs)


class HomeServerStandIn:
    def __init__(self, reactor: Any, media_store_path: str) -> None:
        self._reactor = reactor
        self.hostname = "bench.localhost"
        self.config = SimpleNamespace(
            media=SimpleNamespace(media_store_path=media_store_path, enable_local_media_storage=True)
        )
        self._module_api = ModuleApiStandIn(reactor)

    def get_reactor(self) -> Any:
        return self._reactor

    def get_module_api(self) -> Any:
        return self._module_api


PROVIDER_MODULES = {
    "ours": "synapse_objstore.ObjectStorageProvider",
    "old": "s3_storage_provider.S3StorageProviderBackend",
}


def load_provider(spec: dict[str, Any], reactor: Any) -> tuple[Any, float]:
    from synapse.media.storage_provider import StorageProviderWrapper
    from synapse.util.module_loader import load_module

    s = spec["server"]
    config = {
        "bucket": spec["bucket"],
        "endpoint_url": s["endpoint_url"],
        "access_key_id": s["access_key"],
        "secret_access_key": s["secret_key"],
    }
    if spec["impl"] == "ours":
        config["backend"] = "s3"
    if s.get("region_name"):
        config["region_name"] = s["region_name"]
    started = now()
    cls, parsed = load_module(
        {"module": PROVIDER_MODULES[spec["impl"]], "config": config}, ("media_storage_providers", "<item 0>")
    )
    backend = cls(HomeServerStandIn(reactor, spec["media_store_path"]), parsed)
    provider = StorageProviderWrapper(backend, store_local=True, store_synchronous=True, store_remote=True)
    return provider, now() - started


def file_info(media_path: str) -> Any:
    from synapse.media._base import FileInfo

    return FileInfo(server_name=None, file_id=media_path.rsplit("/", 1)[-1])


# ---------------------------------------------------------------- provider scenarios


def apply_tweaks(tweaks: dict[str, Any]) -> None:
    """Diagnostic variants of our provider (bench/run --variant ...), applied in this process only:
    chunk_kib      synapse_objstore.responder.CHUNK_SIZE (a stream's first chunks, and those after a pause)
    max_chunk_kib  synapse_objstore.responder.MAX_CHUNK_SIZE (what chunks grow to while the consumer keeps up)
    in_flight      synapse_objstore.responder.CHUNKS_IN_FLIGHT
    read_bufsize_kib  aiohttp's per-response read buffer (ClientSession(read_bufsize=...), 64 KiB by default)
    """
    if "chunk_kib" in tweaks:
        from synapse_objstore import responder

        responder.CHUNK_SIZE = int(tweaks["chunk_kib"]) * 1024
    if "max_chunk_kib" in tweaks:
        from synapse_objstore import responder

        responder.MAX_CHUNK_SIZE = int(tweaks["max_chunk_kib"]) * 1024
    if "in_flight" in tweaks:
        from synapse_objstore import responder

        responder.CHUNKS_IN_FLIGHT = int(tweaks["in_flight"])
    if "read_bufsize_kib" in tweaks:
        import aiohttp

        size = int(tweaks["read_bufsize_kib"]) * 1024
        original = aiohttp.ClientSession.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("read_bufsize", size)
            original(self, *args, **kwargs)

        aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]


def run_provider(spec: dict[str, Any]) -> dict[str, Any]:
    from twisted.internet import defer, reactor, task

    apply_tweaks(spec.get("tweaks") or {})

    result: dict[str, Any] = {"impl": spec["impl"], "scenario": spec["scenario"]}
    rss = RssSampler()
    provider, result["construct_s"] = load_provider(spec, reactor)
    result["module_file"] = sys.modules[type(provider.backend).__module__].__file__
    stalls = StallMonitor(reactor)
    Consumer = make_consumer_class()
    phases: dict[str, tuple[float, float]] = {}

    def sleep(seconds: float) -> Any:
        return task.deferLater(reactor, seconds, lambda: None)

    async def fetch_into(media_path: str, consumer: Any, record: dict[str, Any]) -> None:
        record["fetch_called"] = now()
        responder = await provider.fetch(media_path, file_info(media_path))
        record["fetch_returned"] = now()
        if responder is None:
            raise RuntimeError(f"{spec['impl']}: {media_path} not found")
        with responder:
            record["responder"] = responder
            await responder.write_to_consumer(consumer)
        record["done"] = now()

    async def fetch_big_object(consumer: Any, phase: str) -> tuple[dict[str, Any], float]:
        """Fetch the big object into `consumer` as `phase`, which must get every byte; the
        fetch's record and the process's CPU time during it, in ms."""
        record: dict[str, Any] = {}
        cpu_started = time.process_time()
        await fetch_into(spec["big_key"], consumer, record)
        cpu_ms = (time.process_time() - cpu_started) * 1000
        phases[phase] = (record["fetch_called"], record["done"])
        if consumer.bytes != spec["big_size"]:
            raise RuntimeError(f"{phase}: {consumer.bytes} bytes of {spec['big_size']}")
        return record, cpu_ms

    async def stream_scenario() -> None:
        t0 = now()
        await sleep(1.0)  # the reactor runs; Synapse would be starting up
        phases["startup"] = (t0, now())

        # the first fetch of the process: whatever a provider builds lazily, it builds now
        consumer = Consumer()
        record: dict[str, Any] = {}
        await fetch_into(spec["small_keys"][0], consumer, record)
        phases["first_fetch"] = (record["fetch_called"], record["done"])
        result["first_fetch"] = {
            "ttfb_ms": round((consumer.first_write_at - record["fetch_called"]) * 1000, 1),
            "total_ms": round((record["done"] - record["fetch_called"]) * 1000, 1),
            "bytes": consumer.bytes,
        }
        await sleep(0.3)

        # the big stream
        rss.mark()
        consumer = Consumer()
        record, cpu_ms = await fetch_big_object(consumer, "stream")
        elapsed = record["done"] - record["fetch_called"]
        result["stream"] = {
            "bytes": consumer.bytes,
            "seconds": round(elapsed, 3),
            "mb_per_s": round(consumer.bytes / elapsed / 1e6, 1),
            "ttfb_ms": round((consumer.first_write_at - record["fetch_called"]) * 1000, 1),
            "stream_mb_per_s": round(consumer.bytes / (record["done"] - consumer.first_write_at) / 1e6, 1),
            "cpu_ms": round(cpu_ms, 1),
            **chunk_stats(consumer.sizes),
            **rss.growth_mib(),
        }
        await sleep(0.3)

        # the same object to a client that pauses at every write (a fast network's pace)
        consumer = Consumer(paced_by=reactor)
        record, cpu_ms = await fetch_big_object(consumer, "paced")
        result["paced"] = {
            "mb_per_s": round(consumer.bytes / (record["done"] - record["fetch_called"]) / 1e6, 1),
            "cpu_ms": round(cpu_ms, 1),
            "writes": consumer.writes,
        }

    async def paused_scenario() -> None:
        t0 = now()
        await sleep(1.0)
        phases["startup"] = (t0, now())
        record: dict[str, Any] = {}
        await fetch_into(spec["small_keys"][0], Consumer(), record)  # warm-up: client built
        phases["first_fetch"] = (record["fetch_called"], record["done"])

        # 1. a flowing stream paused after 8 MiB: what arrives after the pause request?
        consumer = Consumer(pause_at=8 * MiB)
        record = {}
        mid_start = now()
        d = defer.ensureDeferred(fetch_into(spec["big_key"], consumer, record))
        d.addErrback(lambda _: None)
        deadline = now() + 30
        while consumer.paused_at is None and now() < deadline:
            await sleep(0.01)
        await sleep(spec["pause_observe_s"])
        result["pause_mid_stream"] = {
            "paused_after_bytes": consumer.bytes - consumer.bytes_after_pause,
            "writes_after_pause": consumer.writes_after_pause,
            "bytes_after_pause": consumer.bytes_after_pause,
            "chunk_max_kib": round(max(consumer.sizes) / 1024, 1),
        }
        if consumer.last_producer is not None:  # the client goes away
            consumer.last_producer.stopProducing()
        await sleep(0.5)
        phases["pause_mid_stream"] = (mid_start, now())

        # 2. N clients that pause at their first write and stay paused
        n = spec["paused_clients"]
        rss.mark()
        first_bytes = []
        paused = [Consumer(pause_at=1, on_first_write=lambda c: first_bytes.append(c)) for _ in range(n)]
        issued = now()
        for i, consumer in enumerate(paused):
            d = defer.ensureDeferred(fetch_into(spec["paused_keys"][i % len(spec["paused_keys"])], consumer, {}))
            d.addErrback(lambda _: None)
        while len(first_bytes) < n and now() - issued < spec["paused_settle_max_s"]:
            await sleep(0.01)
        all_started = now() - issued
        await sleep(spec["pause_observe_s"])
        phases["paused_clients"] = (issued, now())
        result["paused"] = {
            "clients": n,
            "object_kib": spec["paused_size"] // 1024,
            "started": len(first_bytes),
            "all_started_s": round(all_started, 2) if len(first_bytes) == n else None,
            "max_writes_after_pause": max(c.writes_after_pause for c in paused),
            "max_bytes_after_pause": max(c.bytes_after_pause for c in paused),
            "finished_while_paused": sum(1 for c in paused if c.producer is None and c.first_write_at is not None),
            "rss_growth_mib": rss.growth_mib()["growth_mib"],
        }

        # 3. one more fetch
        consumer = Consumer()
        record = {}
        extra_start = now()
        d = defer.ensureDeferred(fetch_into(spec["small_keys"][1], consumer, record))
        d.addErrback(lambda _: None)
        limit = spec["extra_timeout_s"]
        while "done" not in record and now() - extra_start < limit:
            await sleep(0.005)
        phases["extra_fetch"] = (extra_start, now())
        result["extra_fetch"] = {
            "ttfb_ms": round((consumer.first_write_at - extra_start) * 1000, 1) if consumer.first_write_at else None,
            "total_ms": round((record["done"] - extra_start) * 1000, 1) if "done" in record else None,
            "timed_out_after_s": None if "done" in record else limit,
            "threads": threading.active_count(),
        }

    async def main() -> None:
        stalls.start()
        try:
            if spec["scenario"] == "stream":
                await stream_scenario()
            else:
                await paused_scenario()
            result["stall_ms"] = {name: stalls.max_between(*window) for name, window in phases.items()}
            result["stall_ms"]["whole_run"] = stalls.max_between(0, now())
            result["stall_ms_excl_os"] = {name: stalls.max_between(*window, exclude_os=True)
                                          for name, window in phases.items()}
            result["stall_ms_excl_os"]["whole_run"] = stalls.max_between(0, now(), exclude_os=True)
            result["stall_ticks"] = stalls.ticks
            result["gc_pauses_over_5ms"] = gc_pauses
        except BaseException as error:
            import traceback

            result["error"] = f"{type(error).__name__}: {error}"
            result["traceback"] = traceback.format_exc()
        finish(result)

    # As Synapse does at startup (synapse.app._base): collect, freeze everything allocated so
    # far, and replace automatic collection by Synapse's GC manager (a 100 ms LoopingCall on the
    # reactor). Collections that take over 5 ms are recorded, so a stall they cause is known.
    from synapse.metrics import install_gc_manager

    gc.collect()
    gc.freeze()
    install_gc_manager()
    gc_pauses: list[dict[str, Any]] = []
    gc_started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started["t"] = now()
        elif "t" in gc_started and now() - gc_started["t"] > 0.005:
            gc_pauses.append({"generation": info["generation"], "ms": round((now() - gc_started["t"]) * 1000, 1),
                              "thread": threading.current_thread().name})

    gc.callbacks.append(on_gc)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()))
    reactor.run(installSignalHandlers=False)
    return result


def finish(result: dict[str, Any]) -> None:
    # Paused downloads may hold threads for up to 90 s: leave without waiting for them.
    sys.stdout.write("RESULT: " + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------- plain-client baselines


def run_boto3(spec: dict[str, Any]) -> None:
    import boto3
    from botocore.config import Config

    s = spec["server"]
    rss = RssSampler()
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s["endpoint_url"],
        aws_access_key_id=s["access_key"],
        aws_secret_access_key=s["secret_key"],
        region_name=s.get("region_name") or "us-east-1",
        config=Config(response_checksum_validation="when_required", request_checksum_calculation="when_required"),
    )
    client.get_object(Bucket=spec["bucket"], Key=spec["small_keys"][0])["Body"].read()  # warm
    time.sleep(0.3)
    rss.mark()
    started = now()
    cpu_started = time.process_time()
    body = client.get_object(Bucket=spec["bucket"], Key=spec["big_key"])["Body"]
    first = None
    total = 0
    sizes = []
    while True:
        chunk = body.read(MiB)
        if not chunk:
            break
        if first is None:
            first = now()
        total += len(chunk)
        sizes.append(len(chunk))
    elapsed = now() - started
    cpu_ms = (time.process_time() - cpu_started) * 1000
    if total != spec["big_size"]:
        raise RuntimeError(f"read {total} of {spec['big_size']}")
    finish({
        "impl": "boto3",
        "scenario": "stream",
        "stream": {
            "bytes": total,
            "seconds": round(elapsed, 3),
            "mb_per_s": round(total / elapsed / 1e6, 1),
            "ttfb_ms": round((first - started) * 1000, 1),
            "stream_mb_per_s": round(total / (started + elapsed - first) / 1e6, 1),
            "cpu_ms": round(cpu_ms, 1),
            **chunk_stats(sizes),
            **rss.growth_mib(),
        },
    })


def run_aiobotocore(spec: dict[str, Any]) -> None:
    import fsspec.asyn
    import s3fs

    s = spec["server"]
    apply_tweaks(spec.get("tweaks") or {})
    rss = RssSampler()
    loop = fsspec.asyn.get_loop()
    read_size = spec.get("read_size", 256 * 1024)

    async def go() -> dict[str, Any]:
        fs = s3fs.S3FileSystem(
            endpoint_url=s["endpoint_url"], key=s["access_key"], secret=s["secret_key"],
            asynchronous=True, loop=loop, skip_instance_cache=True,
            config_kwargs={"response_checksum_validation": "when_required",
                           "request_checksum_calculation": "when_required"},
        )
        await fs.set_session()
        reply = await fs._call_s3("get_object", Bucket=spec["bucket"], Key=spec["small_keys"][0])
        await reply["Body"].read()
        return {"fs": fs}

    state = fsspec.asyn.sync(loop, go)
    time.sleep(0.3)
    rss.mark()

    async def stream() -> dict[str, Any]:
        fs = state["fs"]
        started = now()
        cpu_started = time.process_time()
        reply = await fs._call_s3("get_object", Bucket=spec["bucket"], Key=spec["big_key"])
        body = reply["Body"]
        first = None
        total = 0
        sizes = []
        while True:
            chunk = await body.read(read_size)
            if not chunk:
                break
            if first is None:
                first = now()
            total += len(chunk)
            sizes.append(len(chunk))
        elapsed = now() - started
        cpu_ms = (time.process_time() - cpu_started) * 1000
        return {
            "bytes": total,
            "seconds": round(elapsed, 3),
            "mb_per_s": round(total / elapsed / 1e6, 1),
            "ttfb_ms": round((first - started) * 1000, 1),
            "stream_mb_per_s": round(total / (started + elapsed - first) / 1e6, 1),
            "cpu_ms": round(cpu_ms, 1),
            **chunk_stats(sizes),
        }

    out = fsspec.asyn.sync(loop, stream)
    out.update(rss.growth_mib())
    finish({"impl": "aiobotocore", "scenario": "stream", "stream": out})


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    try:
        if spec["impl"] == "boto3":
            run_boto3(spec)
        elif spec["impl"] == "aiobotocore":
            run_aiobotocore(spec)
        else:
            run_provider(spec)
    except BaseException as error:
        import traceback

        finish({"impl": spec["impl"], "scenario": spec["scenario"], "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()})


if __name__ == "__main__":
    main()
