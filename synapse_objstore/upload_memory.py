"""A limit on the file content that uploads hold in memory at once, across all uploads of one
store: `--jobs 16` of large files, or many Synapse uploads at once, then wait for room rather
than each holding its own parts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class UploadMemory:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._room = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Wait until `size` more bytes fit, and count them as held until the block ends. A
        body larger than the whole limit waits for all the room and then goes alone."""
        size = min(size, self.limit)
        async with self._room:
            await self._room.wait_for(lambda: self._used + size <= self.limit)
            self._used += size
        try:
            yield
        finally:
            async with self._room:
                self._used -= size
                self._room.notify_all()
