"""The second listing of verify and migrate (listing_index.py): a counted file is confirmed only
where that listing shows it with the size it was counted with, and the ETag where one was
recorded; every other one is handed back to be checked again, page after page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from synapse_objstore.cli import listing_index
from synapse_objstore.cli.listing_index import Counted, ListingIndex
from synapse_objstore.store import ObjectInfo


class Listed:
    """A store whose listing is whatever `objects` holds when it is listed."""

    def __init__(self, objects: list[ObjectInfo]) -> None:
        self.objects = objects

    async def list(self) -> AsyncIterator[ObjectInfo]:
        for info in self.objects:
            yield info


def test_only_files_listed_again_as_they_were_counted_are_confirmed() -> None:
    async def scenario() -> tuple[tuple[int, int], list[Counted]]:
        store: Any = Listed([ObjectInfo("a", 1, "e1"), ObjectInfo("b", 2, "e2"), ObjectInfo("c", 3, "e3"),
                             ObjectInfo("d", 4, "e4"), ObjectInfo("e", 5, None)])
        index = await ListingIndex.of(store)
        try:
            for counted in [Counted("a", 1, "e1", "note a"),  # unchanged
                            Counted("b", 2, None),  # its size alone compared (a HEAD found it good)
                            Counted("c", 3, "e3"),  # replaced by other bytes of the same size
                            Counted("d", 4, "e4"),  # replaced by a bigger object
                            Counted("e", 5, "e5"),  # listed again without an ETag
                            Counted("f", 6, None)]:  # deleted
                await index.counted(counted)
            store.objects = [ObjectInfo("a", 1, "e1"), ObjectInfo("b", 2, "other"), ObjectInfo("c", 3, "e3x"),
                             ObjectInfo("d", 40, "e4"), ObjectInfo("e", 5, None)]
            await index.relist(store)
            return index.confirmed(), [c async for c in index.unconfirmed()]
        finally:
            index.close()

    confirmed, unconfirmed = asyncio.run(scenario())
    assert confirmed == (2, 1 + 2)
    assert unconfirmed == [Counted("c", 3, "e3"), Counted("d", 4, "e4"), Counted("e", 5, "e5"), Counted("f", 6)]


def test_files_counted_and_left_unconfirmed_go_through_pages(monkeypatch: Any) -> None:
    """More files than a page: each is written (the last, short page too) and each handed back once."""
    monkeypatch.setattr(listing_index, "PAGE", 3)

    async def scenario() -> tuple[tuple[int, int], list[str]]:
        store: Any = Listed([ObjectInfo(f"k{n:02d}", n, None) for n in range(10)])
        index = await ListingIndex.of(store)
        try:
            for n in range(10):
                await index.counted(Counted(f"k{n:02d}", n))
            store.objects = [ObjectInfo(f"k{n:02d}", n, None) for n in range(0, 10, 2)]
            await index.relist(store)
            return index.confirmed(), [c.path async for c in index.unconfirmed()]
        finally:
            index.close()

    confirmed, unconfirmed = asyncio.run(scenario())
    assert confirmed == (5, 0 + 2 + 4 + 6 + 8)
    assert unconfirmed == [f"k{n:02d}" for n in range(1, 10, 2)]
