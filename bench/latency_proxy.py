"""A TCP proxy on 127.0.0.1 that adds a network round trip: each chunk of bytes is held
`--delay-ms` in each direction before it is passed on, in order.

This machine's kernel has no netem, and real S3 is not on loopback: the offload benchmark
(bench/offload_bench.py) puts this in front of the S3 server. It runs in a process of its own,
so it takes no GIL time from the process being measured. Only the standard library is used.

    python bench/latency_proxy.py --target 127.0.0.1:PORT --delay-ms 10

It listens on a free port of 127.0.0.1 and prints `LISTENING <port>` on stdout once it accepts
connections; it stops on SIGTERM.

Chunks are delayed, not the connection: a reader stamps each chunk with its arrival time and
queues it, a writer sends it once `arrival + delay` has passed. Bytes arriving while earlier ones
wait are not held any longer than `delay`, so the proxy adds latency, not a bandwidth limit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 256 * 1024


async def delayed_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk `delay` seconds after it arrived; end (half-close) in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic() + delay, data))
        except ConnectionError:
            pass
        queue.put_nowait((time.monotonic() + delay, b""))

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.create_task(read())
    try:
        await write()
    except ConnectionError:
        reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)


async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: tuple[str, int],
                 delay: float) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(delayed_pipe(client_reader, server_writer, delay),
                             delayed_pipe(server_reader, client_writer, delay), return_exceptions=True)
    finally:
        for writer in (client_writer, server_writer):
            writer.close()


async def serve(target: tuple[str, int], delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, delay), "127.0.0.1", 0, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


class LatencyProxy:
    """This proxy in a child process of its own, stopped by its PID."""

    def __init__(self, target_port: int, delay_ms: float, log: Path) -> None:
        self._argv = [sys.executable, __file__, "--target", f"127.0.0.1:{target_port}", "--delay-ms", str(delay_ms)]
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> LatencyProxy:
        with self._log.open("ab") as err:
            self._process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"latency proxy did not start (see {self._log})")
        self.port = int(line.split()[1])
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to (127.0.0.1 only)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="delay per direction (default 10 ms)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    if host != "127.0.0.1":
        parser.error("the proxy only forwards to 127.0.0.1")
    asyncio.run(serve((host, int(port)), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
