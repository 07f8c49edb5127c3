"""Is the store still there? Watched during a batch run (health.py's `preflight` asks before it).

`StoreWatch` tells a failure of the whole store from one object's, and a store gone
silent from one that is only slow; `is_retryable` says which failures deserve another try
before the run ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from typing import Any, NoReturn, TypeVar

from synapse_objstore.errors import (
    BucketMissingError,
    FailureKind,
    ObjectStoreError,
    StoreDeniedError,
    StoreUnusableError,
)
from synapse_objstore.failures import classify, is_outage
from synapse_objstore.health import check_store
from synapse_objstore.store import ObjectStore

T = TypeVar("T")

# How long the store may answer none of a run's calls before the run asks it whether it is
# still there. A healthy store answers something every few seconds while a run sends it work;
# a call that takes longer (a multipart upload of gigabytes) only costs one question a minute.
QUIET_BEFORE_CHECK = 60.0
# How long the store may hold every call of a run unanswered while it still answers the check:
# a store that takes requests and never finishes them (storage nodes down behind a gateway that
# still answers about the bucket, a proxy holding bodies). Longer than any one healthy call: a
# part, a page, a chunk of a body each count as an answer, and a single PUT of the largest
# file below the multipart threshold has ten minutes.
STUCK_AFTER = 600.0


def is_retryable(error: BaseException) -> bool:
    """Whether a file that failed with `error` may succeed when tried again later in the run:
    the store failed (no answer in time, a dropped connection, an error status such as 503
    after the client's own retries) rather than refused us. Failures of the local file, of
    verification and denials are final for the run."""
    return isinstance(error, ObjectStoreError) and classify(error) is not FailureKind.DENIED


def _store_wide_suspect(error: BaseException) -> bool:
    """A failure that may be the whole store's: a denial, or a missing bucket."""
    return isinstance(error, (StoreDeniedError, BucketMissingError))


class StoreWatch:
    """Tells a failure of the whole store from one object's, and a silent store from a slow
    one, during a run.

    A single denied object proves nothing (a bucket policy may deny that key alone), and a
    count of denials in a row would stop a run over a policy on one prefix, or miss a store
    gone while some uploads still succeed. So a failure that may be store-wide (a denial, a
    missing bucket) is put to the startup check (`preflight`'s question about the bucket
    itself): when the store answers that the bucket does not exist or refuses the
    credentials, the run stops (StoreUnusableError); when it answers, or cannot be reached,
    the failure stays that file's. Concurrent suspicions share one check.

    A store that stops answering mid-run fails no call quickly: each waits out its read
    timeout once per retry (a batch run gives the store 8 retries of 60 s: 9 minutes a call),
    and a run of thousands of media would go on for days. So `silence` watches when the store
    last answered anything (`ObjectStore.last_heard`) and asks the same question once it has
    been quiet for QUIET_BEFORE_CHECK; no answer to that either stops the run. A store that
    answers the question but has held all of the run's calls for STUCK_AFTER stops it too.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._check: asyncio.Future[None] | None = None

    async def failed(self, errors: Iterable[BaseException]) -> None:
        """Look at the errors a media failed with; raises StoreUnusableError if the store is unusable."""
        if not any(_store_wide_suspect(error) for error in errors):
            return
        check = self._check
        if check is None or (check.done() and (check.cancelled() or check.exception() is None)):
            check = self._check = asyncio.ensure_future(self._ask())
        await asyncio.shield(check)

    async def _ask(self) -> None:
        try:
            await check_store(self.store)
        except (StoreDeniedError, BucketMissingError) as error:
            raise StoreUnusableError(f"{error}. Stopped the run") from error
        except ObjectStoreError:
            pass  # the store answered otherwise, or could not be reached: the failure stays the file's

    async def silence(self) -> NoReturn:
        """Run beside a run's work until cancelled. Each time the store has answered none of
        its calls (nor the last check) for QUIET_BEFORE_CHECK seconds, ask it the startup
        check's question; raise StoreUnusableError when that is not answered either (a
        timeout, a connection that fails), or is answered with a missing bucket or refused
        credentials, or when it is answered while the store has held every call of the run
        unanswered for STUCK_AFTER.

        The question goes through a client of its own (another ObjectStore on the same
        backend, made the first time it is needed): through the run's, it could wait for a
        connection behind slow uploads holding all of a small pool (`max_pool_connections`),
        and a store that is only slow would be taken for silent."""
        probe: ObjectStore | None = None
        checked = 0.0  # when the store last answered the question
        try:
            while True:
                quiet = time.monotonic() - max(self.store.last_heard, checked)
                if quiet < QUIET_BEFORE_CHECK:
                    await asyncio.sleep(QUIET_BEFORE_CHECK - quiet)
                    continue
                quiet = time.monotonic() - self.store.last_heard
                probe = probe or ObjectStore(self.store.backend)
                asked = time.monotonic()
                try:
                    await check_store(probe)
                except ObjectStoreError as error:
                    answered_meanwhile = self.store.last_heard >= asked
                    if (is_outage(error) or _store_wide_suspect(error)) and not answered_meanwhile:
                        raise StoreUnusableError(
                            f"{error}, and it had answered none of this run's requests for {quiet:.0f} s. "
                            "Stopped the run"
                        ) from error
                checked = time.monotonic()  # it answered (the check, or one of the run's requests meanwhile)
                if (held := self.store.unanswered_for()) >= STUCK_AFTER:
                    raise StoreUnusableError(
                        f"{self.store.backend.describe()} answers about its bucket, but has held all of this run's "
                        f"{self.store.in_flight} requests unanswered for {held:.0f} s: it takes requests and does "
                        "not finish them (storage nodes down behind a gateway that still answers? a proxy holding "
                        "bodies?). Stopped the run; a rerun goes on from where it stopped"
                    )
        finally:
            if probe is not None:
                await probe.close()


async def watched(work: Coroutine[Any, Any, T], *stores: ObjectStore) -> T:
    """Run `work`, a command's run over `stores`, with `StoreWatch(store).silence()` beside it
    for each: when one goes silent, `work` is cancelled (it must cancel what it started: a
    batch command is safe to stop anywhere, as it is to kill) and StoreUnusableError is raised."""
    task = asyncio.ensure_future(work)
    silences = {asyncio.ensure_future(StoreWatch(store).silence()) for store in stores}
    try:
        await asyncio.wait({task, *silences}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for silence in silences:
            silence.cancel()
        await asyncio.gather(*silences, return_exceptions=True)  # each closes its own client
    stopped = [silence.exception() for silence in silences if silence.done() and not silence.cancelled()]
    if stopped and stopped[0] is not None and task.cancelled():
        raise stopped[0]
    return task.result()
