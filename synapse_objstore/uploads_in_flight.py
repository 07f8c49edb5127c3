"""Uploads that run now, by media path, so that a fetch of the same file waits for its upload.

Without local media storage (`enable_local_media_storage: false`), Synapse reads a file it has
just written back from the providers: it makes an upload's thumbnails from a download of it.
With `store_synchronous: false` that upload may still run in the background, and the fetch
would find nothing. A fetch of a path that this provider is uploading waits until the upload
ends, then reads the object. Used on the reactor thread only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from twisted.internet.defer import Deferred


class UploadsInFlight:
    def __init__(self) -> None:
        self._waiting: dict[str, list[Deferred[None]]] = {}

    @contextlib.contextmanager
    def uploading(self, path: str) -> Iterator[None]:
        """Mark `path` as being uploaded for the block; when it ends, however, the waiters go on."""
        self._waiting.setdefault(path, [])
        try:
            yield
        finally:
            for waiter in self._waiting.pop(path, []):
                waiter.callback(None)

    def finished(self, path: str) -> Deferred[None] | None:
        """A Deferred that fires when the upload of `path` ends; None when none runs."""
        if path not in self._waiting:
            return None
        waiter: Deferred[None] = Deferred()
        self._waiting[path].append(waiter)
        return waiter
