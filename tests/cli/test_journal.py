"""Journal.record_files with `then`: the deletes of an upload ride in their commit's worker-thread turn."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import pytest

from synapse_objstore.cli.cache_db import CacheDb, FileRecord
from synapse_objstore.cli.journal import Journal


def record(path: str) -> FileRecord:
    return FileRecord(path, "", path.rsplit("/", 1)[-1], 1, "0" * 32, "s3://bucket")


def test_then_runs_after_the_commit_in_its_turn_once_for_every_caller_of_it(tmp_path: Path) -> None:
    cache = CacheDb(str(tmp_path / "cache.db"))
    commits: list[threading.Thread] = []
    commit = cache.commit

    def counted(*args: object) -> None:
        commits.append(threading.current_thread())
        commit(*args)  # type: ignore[arg-type]

    cache.commit = counted  # type: ignore[method-assign]
    ran: list[tuple[str, threading.Thread, bool]] = []

    def then(path: str) -> str:
        ran.append((path, threading.current_thread(), cache.file_record(path) is not None))
        return f"deleted {path}"

    async def main() -> list[str | None]:
        journal = Journal(cache, max_delay=0.05)
        results = await asyncio.gather(*(journal.record_files([record(p)], functools.partial(then, p))
                                         for p in ("local_content/a/b/c", "local_content/d/e/f")))
        await journal.close()
        return results

    assert asyncio.run(main()) == ["deleted local_content/a/b/c", "deleted local_content/d/e/f"]
    # one commit for both; each `then` in that commit's thread, its row already committed
    assert len(commits) == 1
    assert ran == [("local_content/a/b/c", commits[0], True), ("local_content/d/e/f", commits[0], True)]
    cache.close()


def test_then_never_runs_when_the_commit_fails(tmp_path: Path) -> None:
    cache = CacheDb(str(tmp_path / "cache.db"))

    def fail(*args: object) -> None:
        raise OSError("disk full")

    cache.commit = fail  # type: ignore[method-assign]
    ran: list[str] = []

    async def main() -> None:
        journal = Journal(cache, max_delay=0.01)
        try:
            await journal.record_files([record("local_content/a/b/c")], lambda: ran.append("deleted"))
        finally:
            await journal.close()

    with pytest.raises(OSError, match="disk full"):
        asyncio.run(main())
    assert ran == []
    cache.close()


def test_an_error_of_then_is_its_callers_alone(tmp_path: Path) -> None:
    cache = CacheDb(str(tmp_path / "cache.db"))

    def broken() -> None:
        raise ValueError("not a directory")

    async def main() -> list[object]:
        journal = Journal(cache, max_delay=0.05)
        results = await asyncio.gather(journal.record_files([record("local_content/a/b/c")], broken),
                                       journal.record_files([record("local_content/d/e/f")], lambda: "fine"),
                                       return_exceptions=True)
        await journal.close()
        return results

    failed, fine = asyncio.run(main())
    assert isinstance(failed, ValueError) and fine == "fine"
    assert cache.file_record("local_content/a/b/c") is not None
    cache.close()


def test_then_of_a_caller_cancelled_before_the_commit_is_skipped(tmp_path: Path) -> None:
    cache = CacheDb(str(tmp_path / "cache.db"))
    ran: list[str] = []

    async def main() -> None:
        journal = Journal(cache, max_delay=0.05)
        task = asyncio.ensure_future(journal.record_files([record("local_content/a/b/c")], lambda: ran.append("x")))
        await asyncio.sleep(0.01)
        task.cancel()
        await journal.close()

    asyncio.run(main())
    assert ran == []  # its row is committed all the same: the next run finds the file verified
    assert cache.file_record("local_content/a/b/c") is not None
    cache.close()
