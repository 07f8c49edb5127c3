"""Listings in small pages, with something done as each page is handed out: how a test makes
a store fail (through the fault proxy) partway through a listing, or once it is over."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

from synapse_objstore.backends.s3.backend import S3Backend


def on_listing_pages(monkeypatch: pytest.MonkeyPatch, page_size: int, after_page: Callable[[int], None] | None = None,
                     after_listing: Callable[[], None] | None = None) -> Callable[[], None]:
    """Every S3 listing goes in pages of `page_size` objects; `after_page(n)` runs once the
    n-th page (from 1) is handed out, `after_listing()` once the last one was. Returns what
    puts listings back as they were."""
    original = S3Backend.list_pages

    async def list_pages(self: S3Backend, fs: Any, path: str, page_size_asked: int = page_size
                         ) -> AsyncGenerator[Any, None]:
        pages = original(self, fs, path, page_size)
        async with contextlib.aclosing(pages):
            number = 0
            async for page in pages:
                yield page
                number += 1
                if after_page is not None:
                    after_page(number)
        if after_listing is not None:
            after_listing()

    monkeypatch.setattr(S3Backend, "list_pages", list_pages)
    return lambda: monkeypatch.setattr(S3Backend, "list_pages", original)
