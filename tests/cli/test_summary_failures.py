"""A run where everything fails (a forgotten SSE-C key on a bucket of millions of objects, a
dead disk) keeps bounded memory: the summary counts every failure and keeps the first
MAX_KEPT_FAILURES, with their paths and errors, for --json."""

from __future__ import annotations

from synapse_objstore.cli.report import MAX_KEPT_FAILURES, Summary


def test_failures_beyond_the_kept_ones_are_counted_not_kept() -> None:
    summary = Summary("verify")
    for n in range(MAX_KEPT_FAILURES + 50):
        summary.fail(f"local_content/aa/bb/{n:08d}", "no configured key reads it")
    data = summary.as_dict()
    assert data["files_failed"] == MAX_KEPT_FAILURES + 50
    assert len(data["failed"]) == MAX_KEPT_FAILURES
    assert data["failed"][0]["path"] == "local_content/aa/bb/00000000"
    lines = summary.lines()
    assert f"Failed {MAX_KEPT_FAILURES + 50} files" in lines
    assert lines[-1].endswith(f"more (--json lists the first {MAX_KEPT_FAILURES})")
    assert not summary.ok


def test_merged_summaries_keep_the_bound_and_the_count() -> None:
    first, second = Summary("upload"), Summary("upload")
    for n in range(MAX_KEPT_FAILURES):
        first.fail(f"a/{n}", "store down")
    second.fail("b/1", "store down")
    first.merge(second)
    assert first.failures == MAX_KEPT_FAILURES + 1 and len(first.failed) == MAX_KEPT_FAILURES
