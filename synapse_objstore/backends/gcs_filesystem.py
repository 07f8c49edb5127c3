"""gcsfs's filesystem, made fit for a shared I/O loop. Imported only when a `gcs` store is
first used, since gcsfs is an optional extra.

gcsfs finds and refreshes Google credentials with blocking HTTP calls (the token endpoint,
the metadata server) inside its coroutines, and retries a failed request six times with
backoff (over 30 s before a store that is down gives an error). This filesystem does the
credential work in a worker thread, so the loop every download shares never waits on it,
and retries as often as configured.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from gcsfs.core import GCSFileSystem
from gcsfs.credentials import GoogleCredentials
from gcsfs.retry import retry_request

# gcsfs's request without its fixed retry loop (`retry_request` is built with `decorator`,
# which keeps the undecorated function as __wrapped__).
_SEND_ONCE = GCSFileSystem._request.__wrapped__  # type: ignore[attr-defined]

# Refresh a token this long before it expires (gcsfs itself refreshes at 60 s before).
REFRESH_AHEAD = timedelta(minutes=5)


class ThreadedAuthGCSFileSystem(GCSFileSystem):
    """`token` is what gcsfs takes: "google_default", "cloud", "anon" or a credentials file."""

    def __init__(self, *, token: str, attempts: int, **kwargs: Any) -> None:
        super().__init__(token="anon", **kwargs)  # nothing to look up yet
        self._token_method = token
        self._authenticated = token == "anon"
        self._auth_lock = asyncio.Lock()
        self._send = retry_request(retries=attempts)(_SEND_ONCE)

    async def _request(self, *args: Any, **kwargs: Any) -> Any:
        await self._authenticate()
        return await self._send(self, *args, **kwargs)

    async def _authenticate(self) -> None:
        if self._authenticated and not self._token_expiring():
            return
        async with self._auth_lock:
            if not self._authenticated:
                self.credentials = await asyncio.to_thread(
                    GoogleCredentials, self.credentials.project, self.credentials.access, self._token_method,
                    on_google=self.on_google,
                )
                self._authenticated = True
            if self._token_expiring():
                await asyncio.to_thread(self.credentials.maybe_refresh, REFRESH_AHEAD.total_seconds())

    def _token_expiring(self) -> bool:
        credentials = self.credentials.credentials
        if credentials is None:  # anonymous
            return False
        if not credentials.token:
            return True
        expiry: datetime | None = credentials.expiry
        return expiry is not None and expiry.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc) < REFRESH_AHEAD
