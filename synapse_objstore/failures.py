"""What kind of failure a store error is, read from the chain of exceptions it wraps.

The kinds are few and fixed, so that a dashboard can show each one and an alert can name it:
a store that does not answer in time, one that cannot be reached, one that refuses the
credentials, and everything else. A missing object is an answer, not a failure, and never
gets here.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from typing import Any

import aiohttp
import botocore.exceptions

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


class FailureKind(str, enum.Enum):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    DENIED = "denied"
    OTHER = "other"


def classify(error: BaseException) -> FailureKind:
    """The kind of the first exception in `error`'s chain (outermost first) that has one."""
    for link in exception_chain(error):
        # Timeouts first: several libraries' timeout errors are also connection errors.
        if isinstance(link, _TIMEOUTS):
            return FailureKind.TIMEOUT
        if isinstance(link, _CONNECTION_FAILURES):
            return FailureKind.CONNECTION
        if isinstance(link, _DENIALS) or _http_status(link) in _DENIED_HTTP_STATUSES:
            return FailureKind.DENIED
    return FailureKind.OTHER


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its cause (or the exception it was raised while handling), and so on."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _http_status(error: BaseException) -> Any:
    """The HTTP status of a service's error reply: botocore's ClientError keeps it in its
    response, gcsfs's HttpError in `code`, Azure's HttpResponseError in `status_code`."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return getattr(error, "status_code", None) or getattr(error, "code", None)
