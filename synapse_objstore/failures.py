"""What kind of failure an error is, and the store error that says so.

The store maps what the client libraries under fsspec's backends raise (botocore, aiohttp,
gcsfs, azure) to a store error of the class of its kind with `store_error`, once, where the
error crosses into the store (synapse_objstore.store, and the responder for a stream's reads).
From then on the class says the kind (synapse_objstore.errors); `classify` reads it. A missing
object is an answer, not a failure, and never gets here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import botocore.exceptions

from synapse_objstore.errors import (
    KIND_ERRORS,
    BucketMissingError,
    FailureKind,
    ObjectStoreError,
    exception_chain,
)

# Beyond the built-in TimeoutError, ConnectionError and PermissionError (which s3fs raises for
# a 403), what the HTTP stacks under fsspec's backends raise without a built-in cause.
_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncio.TimeoutError,  # not yet the built-in one on Python 3.10
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)
_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    ConnectionError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.ConnectionClosedError,
    aiohttp.ClientConnectionError,
)
_DENIALS: tuple[type[BaseException], ...] = (
    PermissionError,
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
)
_DENIED_HTTP_STATUSES = (401, 403)


def classify(error: BaseException) -> FailureKind:
    """The kind of `error`: its class's, for a store error of a kind; else that of what it is
    or wraps (`error` may not have crossed into the store yet)."""
    if isinstance(error, ObjectStoreError) and error.kind is not None:
        return error.kind
    return _kind_of_chain(error)


# The kinds that say the store did not answer at all (rather than answered no).
OUTAGES = (FailureKind.TIMEOUT, FailureKind.CONNECTION)


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the store did not answer at all (rather than answered no)."""
    return classify(error) in OUTAGES


def store_error(message: str, cause: BaseException) -> ObjectStoreError:
    """The store error, with `message`, for `cause` that a store call failed with: of the class
    of `cause`'s kind, a BucketMissingError where what it wraps is a missing file (s3fs and local
    filesystems report a missing bucket so), with `cause` as its `__cause__`."""
    kind = classify(cause)
    if kind is FailureKind.OTHER and any(isinstance(link, FileNotFoundError) for link in exception_chain(cause)):
        error: ObjectStoreError = BucketMissingError(message)
    else:
        error = KIND_ERRORS[kind](message)
    error.__cause__ = cause
    return error


def _kind_of_chain(error: BaseException) -> FailureKind:
    """The kind of the first exception in `error`'s chain (outermost first) that has one."""
    for link in exception_chain(error):
        if isinstance(link, ObjectStoreError) and link.kind is not None:
            return link.kind
        # Timeouts first: several libraries' timeout errors are also connection errors.
        if isinstance(link, _TIMEOUTS):
            return FailureKind.TIMEOUT
        if isinstance(link, _CONNECTION_FAILURES):
            return FailureKind.CONNECTION
        if isinstance(link, _DENIALS) or _http_status(link) in _DENIED_HTTP_STATUSES:
            return FailureKind.DENIED
    return FailureKind.OTHER


def _http_status(error: BaseException) -> Any:
    """The HTTP status of a service's error reply: botocore's ClientError keeps it in its
    response, gcsfs's HttpError in `code`, Azure's HttpResponseError in `status_code`."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return getattr(error, "status_code", None) or getattr(error, "code", None)
