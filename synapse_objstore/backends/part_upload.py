"""Uploading a local file in parts: the loop that S3's multipart upload, GCS's resumable upload
and Azure's staged blocks share, and the reader of a file's byte ranges they all use.

A backend subclasses `PartUpload` with its service's few calls (`start`, `send_part`,
`finish`, `abandon`) and calls `run`. The loop reads the parts in order, in a worker thread
of the filesystem, and sends up to `concurrency` of them at once: a part holds its slot (and
its room in the store's `UploadMemory`, if given) from before it is read until its reply, so
at most `concurrency` parts are in memory. A failed or cancelled upload stops sending, waits
for the parts in flight to end, and is abandoned (`abandon`, shielded) before the error goes on;
so is one whose file changed size while its parts were sent.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
from typing import Any, Generic, Protocol, TypeVar

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.errors import LocalFileChangedError
from synapse_objstore.upload_memory import UploadMemory

logger = logging.getLogger(__name__)

# The longest a failed or stopped multipart upload waits for its abort. A silent store would
# hold it for the read timeout once per retry (9 minutes with a batch command's retries), and
# keep a run that must stop from stopping; an upload left unaborted costs only storage until
# `reconcile --apply` (or a lifecycle rule) aborts it.
ABANDON_DEADLINE = 30.0

Receipt = TypeVar("Receipt")  # what the store answers to one part
Result = TypeVar("Result")  # what the finished upload returns


class Digest(Protocol):
    """A running hash (`hashlib.md5()`) of the whole file, fed each part in order."""

    def update(self, data: bytes, /) -> None: ...


def read_range(path: str, offset: int, length: int, digest: Digest | None = None) -> bytes:
    """Up to `length` bytes of the file at `path` from `offset` (blocking: run it in a thread),
    added to `digest` when one is given."""
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read(length)
    if digest is not None:
        digest.update(data)
    return data


class PartUpload(abc.ABC, Generic[Receipt, Result]):
    """One upload of a local file of `size` bytes in parts of `part_size` (the last shorter)."""

    def __init__(
        self,
        fs: AsyncFs,
        local_path: str,
        size: int,
        part_size: int,
        *,
        concurrency: int = 1,
        memory: UploadMemory | None = None,
        digest: Digest | None = None,
    ) -> None:
        self.fs, self.local_path, self.size, self.part_size = fs, local_path, size, part_size
        self.concurrency, self.memory, self.digest = concurrency, memory, digest

    async def start(self) -> None:
        """Begin the upload at the store (an upload id, a session URL), before any part."""

    @abc.abstractmethod
    async def send_part(self, number: int, offset: int, data: bytes) -> Receipt:
        """Send part `number` (from 1), the bytes at `offset` of the file."""

    @abc.abstractmethod
    async def finish(self, receipts: list[Receipt]) -> Result:
        """Complete the upload once every part is sent; `receipts` are in part order."""

    async def abandon(self) -> None:
        """Give up an upload that failed after `start`, so the store keeps none of its parts.
        Runs shielded from cancellation; an error here is logged, not raised."""

    async def run(self) -> Result:
        await self.start()
        slots = asyncio.Semaphore(self.concurrency)
        sending: list[asyncio.Task[Receipt]] = []
        try:
            for number, offset in enumerate(range(0, self.size, self.part_size), start=1):
                _raise_first_failure(sending)
                read: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                sending.append(asyncio.ensure_future(self._part(slots, number, offset, read)))
                # the next part waits for this one's read: parts are read (and hashed) in order
                either: set[asyncio.Future[Any]] = {read, sending[-1]}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            receipts = list(await asyncio.gather(*sending))
            await self.check_unchanged()
            return await self.finish(receipts)
        except BaseException:
            for task in sending:
                task.cancel()
            try:
                await asyncio.shield(asyncio.wait_for(self._abandon_after(sending), ABANDON_DEADLINE))
            except asyncio.TimeoutError:  # the built-in TimeoutError from Python 3.11
                logger.warning("gave up aborting a multipart upload after %.0f s (the store does not answer); "
                               "`objstore-offload reconcile --apply` aborts what is left", ABANDON_DEADLINE)
            raise

    async def _part(self, slots: asyncio.Semaphore, number: int, offset: int, read: asyncio.Future[None]) -> Receipt:
        length = min(self.part_size, self.size - offset)
        room: contextlib.AbstractAsyncContextManager[None] = (
            self.memory.hold(length) if self.memory is not None else contextlib.nullcontext()
        )
        try:
            async with slots, room:
                data = await self.read_part(offset, length)
                if offset + length == self.size:  # before the last part: on GCS, sending it commits
                    await self.check_unchanged()
                read.set_result(None)
                receipt = await self.send_part(number, offset, data)
                self.fs.step_answers()  # a long upload answered part by part is no silent store
                return receipt
        finally:
            if not read.done():
                read.cancel()

    async def read_part(self, offset: int, length: int) -> bytes:
        """The part's bytes, read from the local file in a worker thread (parts are read in order,
        one at a time: a subclass may read them from a stream instead)."""
        data: bytes = await self.fs.in_thread(read_range, self.local_path, offset, length, self.digest)
        return data

    async def check_unchanged(self) -> None:
        """The parts hold the first `size` bytes: a file that grew or shrank meanwhile is not what
        was sent, and completing the upload would make a copy that looks whole."""
        now = await self.fs.in_thread(os.path.getsize, self.local_path)
        if now != self.size:
            raise LocalFileChangedError(
                f"local file {self.local_path} changed during its upload ({self.size} bytes when it began, "
                f"{now} now): the upload is abandoned")

    async def _abandon_after(self, sending: list[asyncio.Task[Receipt]]) -> None:
        if sending:  # no part reaches the store after it is told to drop them
            await asyncio.wait(sending)
        for task in sending:  # their errors are the one raised or its consequences
            if not task.cancelled():
                task.exception()
        await self.abandon()


def _raise_first_failure(tasks: list[asyncio.Task[Receipt]]) -> None:
    """Stop reading more parts once one has failed."""
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
