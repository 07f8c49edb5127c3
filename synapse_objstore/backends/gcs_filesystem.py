"""gcsfs's filesystem, made fit for a shared I/O loop. Imported only when a `gcs` store is
first used, since gcsfs is an optional extra.

gcsfs finds and refreshes Google credentials with blocking HTTP calls (the token endpoint,
the metadata server) inside its coroutines, and retries a failed request six times with
backoff (over 30 s before a store that is down gives an error). This filesystem does the
credential work in a worker thread, so the loop every download shares never waits on it,
and retries as often as configured.

This module is also the one place the gcs backend uses gcsfs outside its public API. gcsfs's
public calls gather every page of a listing first and upload through a file object that
buffers a whole block; the backend needs a listing page by page and an upload that reads the
local file itself. Used, each where noted below:
- `GCSFileSystem._request` (overridden; `__wrapped__`, its body without gcsfs's fixed retry
  loop, which `gcsfs.retry.retry_request` wraps again with the configured retries) and
  `GCSFileSystem._call` (one JSON API request, with gcsfs's error translation);
- `gcsfs.credentials.GoogleCredentials` (with `maybe_refresh` and its `credentials`),
  `GCSFileSystem.credentials` and `on_google`: the credential lookup moved to a thread;
- `gcsfs.core.simple_upload`, `initiate_upload` and `upload_chunk` (module functions, no
  underscore, undocumented): the single-request and resumable uploads;
- `GCSFileSystem._location` (the endpoint) and `_call` with a URL and query parameters: the
  ranged media GET pinned to a generation (`ifGenerationMatch`), which `cat_file` cannot send;
- `GCSFileSystem._session`, the aiohttp session, which the backend contract's default
  `close_filesystem` (backends/base.py) closes.
Checked against gcsfs 2026.10.0 (aiohttp 3.14.5). pyproject.toml bounds gcsfs above at the
release tested: re-check each of these before raising that bound (tests/test_gcs_backend.py
exercises them against the GCS emulator).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from gcsfs.core import GCSFileSystem, initiate_upload, simple_upload, upload_chunk
from gcsfs.credentials import GoogleCredentials
from gcsfs.retry import retry_request

# gcsfs's request without its fixed retry loop (`retry_request` is built with `decorator`,
# which keeps the undecorated function as __wrapped__).
_SEND_ONCE = GCSFileSystem._request.__wrapped__

# Refresh a token this long before it expires (gcsfs itself refreshes at 60 s before).
REFRESH_AHEAD = timedelta(minutes=5)


class ThreadedAuthGCSFileSystem(GCSFileSystem):  # gcsfs has no type hints: see [tool.mypy] overrides
    """`token` is what gcsfs takes: "google_default", "cloud", "anon" or a credentials file."""

    credentials: Any  # gcsfs's GoogleCredentials

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

    async def list_page(self, bucket: str, prefix: str, max_results: int, page_token: str | None) -> dict[str, Any]:
        """One page of the JSON API's object listing (`objects.list`), as it comes."""
        page: dict[str, Any] = await self._call("GET", "b/{}/o", bucket, prefix=prefix, maxResults=max_results,
                                                pageToken=page_token, json_out=True)
        return page

    async def upload_in_one(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        """A single-request (multipart/related) upload of a whole object."""
        await simple_upload(self, bucket, key, data, content_type=content_type)

    async def start_resumable_upload(self, bucket: str, key: str, content_type: str) -> str:
        """Begin a resumable upload; returns its session URL."""
        location: str = await initiate_upload(self, bucket, key, content_type)
        return location

    async def upload_resumable_chunk(
        self, location: str, data: bytes, offset: int, size: int, content_type: str
    ) -> None:
        """Send the chunk at `offset` of a resumable upload of `size` bytes (the last one
        completes it)."""
        await upload_chunk(self, location, data, offset, size, content_type)

    async def read_generation(self, bucket: str, key: str, generation: str, start: int, end: int) -> bytes:
        """Bytes `start` to `end` (exclusive) of an object, only while it is still generation
        `generation`: gcsfs raises FileExistsError for GCS's 412 (another generation now),
        FileNotFoundError when it is gone."""
        url = self._location + "/download/storage/v1/b/{}/o/{}"
        _, data = await self._call("GET", url, bucket, key, alt="media", ifGenerationMatch=generation,
                                   headers={"Range": f"bytes={start}-{end - 1}"})
        return bytes(data)

    async def cancel_resumable_upload(self, location: str) -> None:
        await self._call("DELETE", location)
