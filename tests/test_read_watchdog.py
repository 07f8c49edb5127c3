"""The S3 stream's read watchdog fails a body that stalls `read_timeout` after the read began
to wait, never later, whatever the phase of its timer (README, "What a download waits for")."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from synapse_objstore.backends.s3 import TimedPieceReader

# Long enough that a loaded machine's late timers (a tenth of a second or two) stay well within
# the margins below, short enough to keep these tests quick.
TIMEOUT = 1.0


class Protocol:
    """What aiohttp's StreamReader asks of its protocol: flow control, and whether it is connected."""

    connected = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def time_to_fail(start_after: float) -> float:
    """Seconds from a read beginning to wait until the watchdog fails it, when the read begins
    `start_after` seconds after the watchdog started."""
    loop = asyncio.get_running_loop()
    body = aiohttp.StreamReader(Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
    response: Any = SimpleNamespace(content=body, connection=None)
    pieces = TimedPieceReader(response, TIMEOUT)
    try:
        body.feed_data(b"first piece")
        assert await pieces.read_piece() == b"first piece"
        await asyncio.sleep(start_after)
        started = loop.time()
        with pytest.raises(aiohttp.ServerTimeoutError, match="no data from the store for 1 s"):
            await pieces.read_piece()
        return loop.time() - started
    finally:
        pieces.stop()


@pytest.mark.parametrize("start_after", [0.0, TIMEOUT * 0.55, TIMEOUT * 0.95])
def test_a_stalled_read_fails_within_the_read_timeout(start_after: float) -> None:
    """A read that begins just after one of the watchdog's looks is the worst case of a timer
    that only looks every half timeout: it would fail nearly 1.5 timeouts later."""
    waited = asyncio.run(time_to_fail(start_after))
    # The bound is the feature: one timeout, not the 1.5 of a timer that only looks every half
    # timeout; a quarter of a timeout is the loaded machine's margin.
    assert TIMEOUT * 0.99 <= waited < TIMEOUT * 1.25, f"failed {waited:.3f} s after the read began to wait"


def test_a_read_that_gets_data_in_time_is_not_failed() -> None:
    async def trickle() -> list[bytes]:
        loop = asyncio.get_running_loop()
        body = aiohttp.StreamReader(Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
        response: Any = SimpleNamespace(content=body, connection=None)
        pieces = TimedPieceReader(response, TIMEOUT)
        try:
            got = []
            for number in range(6):  # each piece comes 0.7 timeouts after the read began
                loop.call_later(TIMEOUT * 0.7, body.feed_data, b"%d" % number)
                got.append(await pieces.read_piece())
            return got
        finally:
            pieces.stop()

    assert asyncio.run(trickle()) == [b"0", b"1", b"2", b"3", b"4", b"5"]
