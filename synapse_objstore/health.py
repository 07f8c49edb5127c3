"""The startup check (`check_on_startup`): does the store answer, with these credentials?

It asks the store about its root (for S3, a HEAD of the bucket): a request that needs the
credentials and reaches the service, but touches no object, so it needs no SSE-C key and
costs nothing per object. At startup it also reads the owner marker (owner_marker.py), if the
store has one, and fails when it names another homeserver. It runs on the I/O loop and gives up
after CHECK_TIMEOUT, so a store that never answers is reported instead of waited for.

Why the default (`true`) only logs, and stopping Synapse is the opt-in `"required"`: the
check cannot tell a typo in the bucket name from an outage of the store. An admin who just
changed the config wants the first kind reported at once, and the ERROR line does that; an
admin whose Synapse restarts during a store outage would rather have it up (serving
messages, local media, and media again as soon as the store is back) than down. Who wants
"no store, no Synapse" (say, because media uploads must never stay only on local disk) sets
`"required"`: a failed check then stops the process as Synapse stops itself when its own
startup fails, with exit status 1, so a supervisor sees a failure. Synapse may serve requests
for the moment the check takes: holding its startup until the store answers would mean
blocking the reactor thread, which nothing here does.
"""

from __future__ import annotations

import asyncio

from synapse_objstore.errors import (
    KIND_ERRORS,
    BucketMissingError,
    FailureKind,
    ObjectStoreError,
    OwnershipError,
    StoreUnusableError,
)
from synapse_objstore.failures import classify
from synapse_objstore.media import printable
from synapse_objstore.owner_marker import read_owner
from synapse_objstore.redaction import redact
from synapse_objstore.store import ObjectStore

# Longest the check waits for the store, whatever its own timeouts and retries add up to.
CHECK_TIMEOUT = 30.0

_REASONS = {
    FailureKind.TIMEOUT: "the store did not answer in time",
    FailureKind.CONNECTION: "the store cannot be reached (check the endpoint and the network)",
    FailureKind.DENIED: (
        "the store refused the credentials (wrong or expired keys, or no permission on this bucket)"
    ),
    FailureKind.OTHER: "the store answered with an error",
}


async def check_store(store: ObjectStore, server_name: str | None = None) -> None:
    """Return when the store answers, within CHECK_TIMEOUT. Otherwise raise a store error of
    the failure's kind (BucketMissingError for a missing bucket) whose message names the store
    and the reason, and whose cause is the error the store gave.

    With `server_name` (the provider's startup check), a store whose owner marker names
    another homeserver fails the check too, with OwnershipError: two homeservers sharing a
    bucket and prefix would each take the other's media for orphans (owner_marker.py)."""
    where = store.backend.describe()
    try:
        await asyncio.wait_for(_ask_for_root(store), CHECK_TIMEOUT)
        if server_name is not None:
            await asyncio.wait_for(_check_owner(store, server_name), CHECK_TIMEOUT)
    except OwnershipError:
        raise
    except FileNotFoundError as error:
        raise BucketMissingError(
            f"cannot use {where}: the bucket or directory {store.backend.root!r} does not exist"
        ) from error
    except Exception as error:
        raise store_failure(store, error) from error


def store_failure(store: ObjectStore, error: Exception) -> ObjectStoreError:
    """A store error of `error`'s kind whose message names the store, the reason and what the
    store said: "cannot use <store>: <reason> (<what it said>)", secrets redacted."""
    kind = classify(error)
    # what the store said: the client library's error that the store error wraps
    said = error.__cause__ if isinstance(error, ObjectStoreError) and error.__cause__ is not None else error
    detail = redact(f"{type(said).__name__}: {said}".rstrip(": "))
    return KIND_ERRORS[kind](f"cannot use {store.backend.describe()}: {_REASONS[kind]} ({detail})")


async def _check_owner(store: ObjectStore, server_name: str) -> None:
    try:
        recorded = await read_owner(store)
    except OwnershipError as error:
        raise type(error)(f"cannot use {store.backend.describe()}: {error}") from error
    if recorded is not None and recorded.owner.server_name != server_name:
        raise OwnershipError(
            f"{store.backend.describe()} belongs to homeserver {recorded.describe()}, and this homeserver is "
            f"{printable(server_name)}: two homeservers must never share a bucket and prefix (each one's "
            "objstore-offload reconcile would delete the other's media). Give this one a prefix of its own."
        )


async def _ask_for_root(store: ObjectStore) -> None:
    """Ask about the root. A backend that makes its root on the first upload (a directory
    tree) may not have it yet; a bucket or container must exist."""
    await store.connect()
    try:
        await store.ask_about_root()
    except FileNotFoundError:
        if not store.backend.creates_root:
            raise


async def preflight(store: ObjectStore) -> None:
    """Fail once, naming the store and the reason, when the bucket (or root directory) is
    missing, the credentials are refused or the store is unreachable, instead of once per file.
    The provider's startup check, asked before a batch run."""
    try:
        await check_store(store)
    except ObjectStoreError as error:
        raise StoreUnusableError(str(error)) from error
