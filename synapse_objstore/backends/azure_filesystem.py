"""adlfs's filesystem on a client built elsewhere. Imported only when an `azure` store is first
used, since adlfs is an optional extra.

adlfs builds its BlobServiceClient from a fixed set of options, so the Azure SDK's retry
policy (up to 3 retries, the first after 15 s, then 18 s, 24 s) and its 64 MiB single-PUT
size would apply whatever the config says. This filesystem takes a client made with the
configured retries, timeouts and sizes instead.

fsspec drops the `loop` an asynchronous filesystem is given (its `loop` is then None), and
adlfs's finalizer, which closes the client at exit on that loop, fails with "Loop is not
running" and a traceback: this filesystem keeps the loop it runs on.

This module is the one place the azure backend relies on adlfs beyond its public API (the
Azure SDK calls it makes are all public): it overrides `AzureBlobFileSystem.do_connect`,
which adlfs's constructor calls to build `service_client` (nothing public takes a client),
and fsspec's `loop` property, and passes `anon=True` so that adlfs builds no credential of
its own. The backend calls the Azure SDK on `client`, the client it gave, rather than on
adlfs's `service_client`. Checked against adlfs 2026.8.0 (azure-storage-blob 12.31.1,
fsspec 2026.9.0). pyproject.toml bounds adlfs above at the release tested: re-check these
before raising that bound (tests/test_azure_backend.py exercises them against Azurite).
"""

from __future__ import annotations

import asyncio
from typing import Any

from adlfs import AzureBlobFileSystem
from azure.storage.blob.aio import BlobServiceClient


class ClientAzureBlobFileSystem(AzureBlobFileSystem):  # adlfs has no type hints: see [tool.mypy] overrides
    def __init__(self, *, service_client: BlobServiceClient, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        self._given_client, self._given_loop = service_client, loop
        # anon: the client carries the credentials; adlfs must not build a credential of its own
        super().__init__(anon=True, loop=loop, **kwargs)

    @property
    def client(self) -> BlobServiceClient:
        """The Azure SDK's client this filesystem was given, for the calls adlfs does not make."""
        return self._given_client

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._given_loop

    def do_connect(self) -> None:
        self.service_client = self._given_client
