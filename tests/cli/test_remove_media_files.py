"""remove_media_files: each directory walked down to once, emptied directories removed on the way back up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synapse_objstore.checksums import FileIdentity
from synapse_objstore.cli.localfs import remove_media_files

ORIGINAL = "local_content/Ab/Cd/EfGh"
THUMBNAILS = [f"local_thumbnails/Ab/Cd/EfGh/{size}-{size}-image-png-crop" for size in (32, 96, 320)]


def test_a_media_is_removed_with_one_walk_down_per_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [ORIGINAL, *THUMBNAILS]
    for path in [*files, "local_content/Xy/Zw/Other"]:  # another media keeps local_content
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    verified = [(path, FileIdentity.of(os.stat(tmp_path / path))) for path in files]
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, *args: object, **kwargs: object) -> int:
        opened.append(path)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    assert remove_media_files(str(tmp_path), verified) == [None] * len(files)
    monkeypatch.undo()

    # local_content/Ab/Cd and local_thumbnails/Ab/Cd/EfGh, a descriptor per component each,
    # and the media store once per tree (for its top-level directory): not once per file and level
    assert len(opened) == 3 + 4 + 2
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "local_content", "local_content/Xy", "local_content/Xy/Zw", "local_content/Xy/Zw/Other"]


def test_a_file_changed_since_its_verification_stays_with_its_directories(tmp_path: Path) -> None:
    files = [ORIGINAL, *THUMBNAILS]
    for path in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    verified = [(path, FileIdentity.of(os.stat(tmp_path / path))) for path in files]
    (tmp_path / THUMBNAILS[1]).write_bytes(b"written to since")
    errors = remove_media_files(str(tmp_path), verified)
    assert [type(error).__name__ if error else None for error in errors] == [
        None, None, "LocalFileChangedError", None]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [THUMBNAILS[1]]
    assert not (tmp_path / "local_content").exists()  # emptied, up to (not including) the media store
