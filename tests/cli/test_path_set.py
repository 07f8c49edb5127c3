"""PathSet: the set of listed paths reconcile keeps in 8 bytes each."""

from __future__ import annotations

from typing import Any

import pytest

from synapse_objstore.cli import path_set
from synapse_objstore.cli.path_set import PathSet


def test_paths_added_over_many_runs_are_found_and_others_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(path_set, "RUN_SIZE", 50)
    paths = PathSet()
    added = [f"local_content/ab/cd/media{index:05d}" for index in range(1000)]
    for path in added[:500]:
        paths.add(path)
    assert all(path in paths for path in added[:500])
    for path in added[500:]:  # added after lookups: found as well
        paths.add(path)
    assert all(path in paths for path in added)
    assert not any(f"local_content/ab/cd/other{index:05d}" in paths for index in range(1000))
    assert 42 not in paths
    assert len(paths) == 1000


def test_a_lookup_is_one_binary_search_however_many_runs_were_sealed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a list of sorted runs, each lookup searched every run: at 100 million objects,
    100 runs of RUN_SIZE, reconcile's lookups cost a hundred times what they cost at one million."""
    monkeypatch.setattr(path_set, "RUN_SIZE", 100)
    paths = PathSet()
    for index in range(5000):  # 50 runs
        paths.add(f"local_thumbnails/ab/cd/media{index:05d}/32-32-image-png-crop")
    assert "warm" not in paths  # the first lookup seals and merges
    searches: list[Any] = []
    real_bisect = path_set.bisect_left

    def counting_bisect(*args: Any, **kwargs: Any) -> int:
        searches.append(args)
        return real_bisect(*args, **kwargs)

    monkeypatch.setattr(path_set, "bisect_left", counting_bisect)
    found = sum(f"local_thumbnails/ab/cd/media{index:05d}/32-32-image-png-crop" in paths for index in range(0, 5000, 7))
    assert found == len(range(0, 5000, 7))
    assert len(searches) <= found
