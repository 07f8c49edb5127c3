"""One lane of the stream floor (bench/client_floor.py --stream), in a process of its own.

    python stream_floor_worker.py '<json spec>'   -> prints one line "RESULT: {json}" on stdout

The lane reads the big object once to warm up (imports, client, connection pool, allocator),
then `reads` more times; each read's CPU (user + system of the whole process, all threads,
from getrusage), minor page faults and context switches are reported, and each thread's CPU over the reads.
Every lane reads in 1 MiB asks (ours in the 2 MiB chunks its pump hands to the reactor once
a client keeps up), into nothing: only the bytes are counted.

Lanes (spec["lane"]):
  boto3        get_object()["Body"].read(1 MiB) in a loop (the reference)
  aiobotocore  get_object + `await body.read(1 MiB)` on an asyncio loop in the main thread
  aiohttp      a GET of the presigned URL, `resp.content.read(1 MiB)` (joins the pieces)
  aiohttp-any  the same, `resp.content.iter_any()` (the pieces as received, no join)
  ours         synapse_objstore's ObjectStore.open_read on our I/O loop thread, read as the
               responder's pump reads (pieces adding up to a 2 MiB chunk), no reactor
  ours-hop     the same, each chunk handed to a Twisted reactor in another thread with
               callFromThread (the responder's hop alone, without its flow control)
  responder    our ObjectResponder streaming the object into a byte-counting consumer on that
               reactor: the provider's whole path, less Synapse's HTTP request, logging contexts
               and LoopingCalls (importing Synapse installs its reactor's poll metrics)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024
CHUNK = 2 * MiB  # the responder's MAX_CHUNK_SIZE: the size of its chunks in a stream that keeps up


def process_usage() -> tuple[float, int, int]:
    """CPU seconds (user + system, all threads), minor page faults and context switches so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt, usage.ru_nvcsw + usage.ru_nivcsw


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread (/proc/self/task/*/stat) by its Python name: where a
    lane's CPU goes."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def boto3_lane(spec: dict[str, Any]) -> Callable[[], dict[str, float]]:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client("s3", **spec["client"], config=Config(
        response_checksum_validation="when_required", request_checksum_calculation="when_required"))

    def read() -> dict[str, float]:
        body = client.get_object(Bucket=spec["bucket"], Key=spec["key"])["Body"]
        total = 0
        while chunk := body.read(MiB):
            total += len(chunk)
        return {"bytes": total}

    return read


def aiobotocore_lane(spec: dict[str, Any]) -> Callable[[], dict[str, float]]:
    import asyncio

    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    loop = asyncio.new_event_loop()
    context = get_session().create_client("s3", **spec["client"], config=AioConfig(
        response_checksum_validation="when_required", request_checksum_calculation="when_required"))
    client = loop.run_until_complete(context.__aenter__())

    async def go() -> dict[str, float]:
        reply = await client.get_object(Bucket=spec["bucket"], Key=spec["key"])
        total = 0
        async with reply["Body"] as body:
            while chunk := await body.read(MiB):
                total += len(chunk)
        return {"bytes": total}

    return lambda: loop.run_until_complete(go())


def aiohttp_lane(spec: dict[str, Any], any_piece: bool) -> Callable[[], dict[str, float]]:
    import asyncio

    import aiohttp

    loop = asyncio.new_event_loop()

    async def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    http = loop.run_until_complete(session())

    async def go() -> dict[str, float]:
        total = 0
        async with http.get(spec["url"]) as response:
            response.raise_for_status()
            if any_piece:
                async for piece in response.content.iter_any():
                    total += len(piece)
            else:
                while chunk := await response.content.read(MiB):
                    total += len(chunk)
        return {"bytes": total}

    return lambda: loop.run_until_complete(go())


def open_store(spec: dict[str, Any]) -> Any:
    from synapse_objstore.config import parse_store_config
    from synapse_objstore.store import ObjectStore

    c = spec["client"]
    store = ObjectStore(parse_store_config({
        "backend": "s3", "bucket": spec["bucket"], "endpoint_url": c["endpoint_url"],
        "access_key_id": c["aws_access_key_id"], "secret_access_key": c["aws_secret_access_key"],
        "region_name": c["region_name"]}))
    store.backend.prepare()
    return store


def start_reactor() -> Any:
    """Twisted's epoll reactor (Synapse's), running in a thread of its own for the whole lane
    (it cannot be restarted); the main thread only waits."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, name="reactor",
                     daemon=True).start()
    return reactor


def responder_lane(spec: dict[str, Any]) -> Callable[[], dict[str, float]]:
    reactor = start_reactor()  # before Synapse is imported, which would install the default one
    from synapse_objstore import io_loop
    from synapse_objstore.metrics import ProviderMetrics
    from synapse_objstore.responder import ObjectResponder

    store = open_store(spec)
    metrics = ProviderMetrics("s3", "bench")

    class CountingConsumer:
        """What Synapse's request is to the responder: a push-producer consumer."""

        def __init__(self) -> None:
            self.received = 0

        def registerProducer(self, producer: Any, streaming: bool) -> None:
            pass

        def unregisterProducer(self) -> None:
            pass

        def write(self, data: bytes) -> None:
            self.received += len(data)

    def read() -> dict[str, float]:
        stream = io_loop.run(store.open_read(spec["media_path"]))
        consumer = CountingConsumer()
        finished = threading.Event()
        failure: list[Any] = []

        def start() -> None:
            responder = ObjectResponder(reactor, stream, spec["media_path"], metrics, time.perf_counter())
            done = responder.write_to_consumer(consumer)
            done.addErrback(failure.append)
            done.addBoth(lambda _: finished.set())

        reactor.callFromThread(start)
        finished.wait()
        if failure:
            raise RuntimeError(str(failure[0]))
        return {"bytes": consumer.received}

    return read


def ours_lane(spec: dict[str, Any], hop: bool) -> Callable[[], dict[str, float]]:
    from synapse_objstore import io_loop

    store = open_store(spec)
    deliver: Callable[[deque[bytes]], None] | None = None
    reactor: Any = None
    received = [0]
    if hop:
        reactor = start_reactor()

        def delivered(chunk: deque[bytes]) -> None:
            received[0] += sum(len(piece) for piece in chunk)

        def deliver_from_loop(chunk: deque[bytes]) -> None:
            reactor.callFromThread(delivered, chunk)

        deliver = deliver_from_loop

    async def go() -> dict[str, float]:
        stream = await store.open_read(spec["media_path"])
        assert stream is not None
        total = 0
        try:
            while True:  # the pump's _read_chunk: pieces adding up to a chunk, never joined
                parts: deque[bytes] = deque()
                have = 0
                while have < CHUNK:
                    data = await stream.read(CHUNK)
                    if not data:
                        break
                    parts.append(data)
                    have += len(data)
                if not have:
                    break
                total += have
                if deliver is not None:
                    deliver(parts)
        finally:
            await stream.close()
        return {"bytes": total}

    if not hop:
        return lambda: io_loop.run(go())

    def read_through_reactor() -> dict[str, float]:
        received[0] = 0
        finished = threading.Event()
        out: dict[str, float] = {}

        def done(result: dict[str, float]) -> None:
            out.update(result)
            finished.set()

        future = io_loop.submit(go())
        future.add_done_callback(lambda f: reactor.callFromThread(done, f.result()))
        finished.wait()
        if received[0] != out["bytes"]:
            raise RuntimeError(f"the reactor got {received[0]} of {out['bytes']} bytes")
        return out

    return read_through_reactor


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    lane = spec["lane"]
    read = {
        "boto3": lambda: boto3_lane(spec),
        "aiobotocore": lambda: aiobotocore_lane(spec),
        "aiohttp": lambda: aiohttp_lane(spec, any_piece=False),
        "aiohttp-any": lambda: aiohttp_lane(spec, any_piece=True),
        "ours": lambda: ours_lane(spec, hop=False),
        "ours-hop": lambda: ours_lane(spec, hop=True),
        "responder": lambda: responder_lane(spec),
    }[lane]()
    reads: list[dict[str, float]] = []
    threads_before: dict[str, float] = {}
    for i in range(spec["reads"] + 1):
        if i == 1:
            threads_before = thread_cpu()
        (cpu_before, faults_before, switches_before), wall_before = process_usage(), time.monotonic()
        out = read()
        cpu_after, faults_after, switches_after = process_usage()
        out["cpu_s"], out["page_faults"] = cpu_after - cpu_before, faults_after - faults_before
        out["context_switches"] = switches_after - switches_before
        out["seconds"] = time.monotonic() - wall_before
        if out["bytes"] != spec["size"]:
            raise RuntimeError(f"{lane}: read {out['bytes']} of {spec['size']} bytes")
        if i:  # the first read warms up
            reads.append(out)
    # Per thread, over the timed reads (clock ticks: 10 ms resolution, hence not per read).
    threads = {name: (cpu - threads_before.get(name, 0.0)) / spec["reads"] for name, cpu in thread_cpu().items()}
    result = {"lane": lane, "reads": reads, "thread_cpu_s": {k: v for k, v in threads.items() if v > 0}}
    sys.stdout.write("RESULT: " + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
