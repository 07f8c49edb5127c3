"""Bad input fails one media, clearly: hostile ids in Synapse's database or in cache.db, files
that are not regular files, symlinks out of the media store, a damaged cache.db, durations."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from servers.moto import MotoServer
from servers.synapse_media import DAY_MS, SynapseMedia
from synapse_objstore.cli.localfs import remove_media_file
from tests.support.offload import Dataset, Offload, cache_rows
from tests.support.s3 import bucket_objects

LONG_ID = "Ab" * 150  # 300 characters: no file system takes a name that long


def add_local_row(synapse: SynapseMedia, media_id: str, age_days: float = 60) -> None:
    """A row of local_media_repository with no file: what a bug, an import or a hand edit leaves."""
    ts = synapse.now_ms - int(age_days * DAY_MS)
    synapse.conn.cursor().execute(
        synapse._sql("""INSERT INTO local_media_repository
            (media_id, media_type, media_length, created_ts, upload_name, user_id, last_access_ts)
            VALUES (%s, 'image/png', 3, %s, 'x.png', '@u:test', %s)"""),
        (media_id, ts, ts),
    )
    synapse.conn.commit()


def add_cache_rows(workdir: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(workdir / "cache.db") as conn:
        conn.executemany(
            "INSERT INTO media (origin, media_id, filesystem_id, type, known_deleted) VALUES (?, ?, ?, ?, ?)", rows)


def failures(output: str) -> dict[str, str]:
    report = json.loads(output)
    return {failure["path"]: failure["error"] for failure in report["failed"]}


def assert_printable(names: Any) -> None:
    for name in names:
        assert name.isprintable(), f"{name!r} is not printable"


def test_hostile_ids_in_synapses_database_fail_one_media_each(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    hostile = [LONG_ID, "ab..cdefgh", "abcd..", "ab/cdefgh", "abc\ndefgh", "\x1b[2Jabcdef"]
    if synapse.engine == "sqlite":  # PostgreSQL's text holds no NUL
        hostile.append("abcd\x00efgh")
    for media_id in hostile:
        add_local_row(synapse, media_id)
    # a remote media's own id is no path: only its filesystem_id is; a hostile server may pick any id
    synapse.add_remote("evil.example", "id\nwith\x1b[31mnewline", "FsIdOfEvilMedia1", b"remote bytes", 40)
    config = ["--json", "--config", str(homeserver_yaml)]

    result = offload(*config, "update", "30d", expect=1)
    failed = failures(result.stdout)
    assert set(failed) == {repr(media_id) if not media_id.isprintable() else media_id for media_id in hostile}
    assert_printable(failed)
    assert "longer than a file name can be" in failed[LONG_ID]
    assert "'..'" in failed["ab..cdefgh"] and "'..'" in failed["abcd.."]
    assert json.loads(result.stdout)["synced"] == 6  # the dataset's five, and the evil server's media

    summary = json.loads(offload(*config, "upload", "--delete").stdout)
    assert summary["media"] == 6 and summary["files_failed"] == 0
    assert "media/remote_content/evil.example/Fs/Id/OfEvilMedia1" in bucket_objects(moto, bucket)
    assert not (synapse.media_store / "remote_content/evil.example").exists()


def test_hostile_rows_in_cache_db_fail_one_media_each(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    """cache.db written by s3_media_upload, or by hand: every command names the bad row and goes on."""
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    bad = [("", LONG_ID, LONG_ID, "local"), ("", "ab..cdefgh", "ab..cdefgh", "local"),
           ("", "abc\ndefgh", "abc\ndefgh", "local"), ("", "abcd\x00efgh", "abcd\x00efgh", "local"),
           ("", "AbCdEfGhIjKl", "AbCdEfGhIjKl", "bogus"), ("", b"abcdefgh", b"abcdefgh", "local"),
           ("../..", "remoteId", "FsIdRemote000", "remote")]
    add_cache_rows(workdir, [(*row, False) for row in bad])
    names = {"abc\ndefgh": repr("abc\ndefgh"), "abcd\x00efgh": repr("abcd\x00efgh"), b"abcdefgh": repr(b"abcdefgh"),
             "remoteId": "../../remoteId"}
    expected = {names.get(row[1], row[1]) for row in bad}

    failed = failures(offload("--json", *config, "check-deleted", expect=1).stdout)
    assert set(failed) == expected
    assert_printable(failed)

    written = offload("write", "out.txt", expect=1)
    assert sum(line.startswith("skipped ") for line in written.stderr.splitlines()) == len(bad)
    assert len((workdir / "out.txt").read_text().splitlines()) == 10  # the five good media, twice each

    summary = json.loads(offload("--json", *config, "upload", "--delete", expect=1).stdout)
    assert {f["path"] for f in summary["failed"]} == expected
    assert summary["media_deleted"] == 5
    assert synapse.local_files() == set(dataset.recent + dataset.url_cache)

    # the same rows marked offloaded: verify and restore name them too
    with sqlite3.connect(workdir / "cache.db") as conn:
        conn.execute("UPDATE media SET known_deleted = 1")
    for command in ("verify", "restore"):
        report = json.loads(offload("--json", *config, command, expect=1).stdout)
        assert {f["path"] for f in report["failed"]} == expected, command


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "fifo"])
def test_original_that_is_not_a_regular_file_fails_and_is_never_called_offloaded(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, kind: str,
) -> None:
    original = synapse.media_store / "remote_content/example.com:8448/Fs/Id/RemoteTwo456"
    original.unlink()
    if kind == "directory":
        original.mkdir()
    elif kind == "fifo":
        os.mkfifo(original)
    else:
        original.symlink_to(synapse.media_store / "no-such-file")
    config = ["--json", "--config", str(homeserver_yaml)]
    failed = failures(offload(*config, "update", "30d", expect=1).stdout)
    what = {"directory": "a directory", "dangling symlink": "a symbolic link", "fifo": "a FIFO"}[kind]
    assert failed == {"example.com:8448/remoteMediaId2": f"{original.relative_to(synapse.media_store)}: "
                                                         f"not a regular file ({what})"}
    summary = json.loads(offload(*config, "upload", "--delete", expect=1).stdout)
    assert [f["path"] for f in summary["failed"]] == ["example.com:8448/remoteMediaId2"]
    assert "not a regular file" in summary["failed"][0]["error"]
    assert cache_rows(workdir)[("example.com:8448", "remoteMediaId2")] == 0  # never "offloaded"
    assert not any("RemoteTwo456" in key for key in bucket_objects(moto, bucket))
    assert os.path.lexists(original)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_symlinks_are_never_followed_out_of_the_media_store(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, tmp_path: Path,
) -> None:
    """An original that links to a file elsewhere, a thumbnail directory that links to a directory
    elsewhere: nothing there is uploaded or deleted, and both media fail."""
    outside = tmp_path / "outside"
    (outside / "thumbs").mkdir(parents=True)
    secret = outside / "secret.txt"
    secret.write_bytes(b"not media")
    (outside / "thumbs/32-32-image-png-crop").write_bytes(b"somebody else's file")
    original = synapse.media_store / "local_content/Ab/Cd/EfGhIjKlMnOp"
    original.unlink()
    original.symlink_to(secret)
    thumbs = synapse.media_store / "remote_thumbnail/matrix.org/Fs/Id/RemoteOne123"
    for path in thumbs.iterdir():
        path.unlink()
    thumbs.rmdir()
    thumbs.symlink_to(outside / "thumbs")
    thumb = synapse.media_store / "local_thumbnails/Zy/Xw/VuTsRqPoNmLk/32-32-image-png-crop"
    thumb.parent.mkdir(parents=True)
    thumb.symlink_to(secret)

    config = ["--json", "--config", str(homeserver_yaml)]
    offload(*config, "update", "30d", expect=1)
    summary = json.loads(offload(*config, "upload", "--delete", expect=1).stdout)
    assert {f["path"]: f["error"] for f in summary["failed"]} == {
        "AbCdEfGhIjKlMnOp": "local_content/Ab/Cd/EfGhIjKlMnOp: not a regular file (a symbolic link)",
        "matrix.org/remoteMediaId1":
            "remote_thumbnail/matrix.org/Fs/Id/RemoteOne123 is a symbolic link, not a directory",
        "ZyXwVuTsRqPoNmLk": f"{thumb.relative_to(synapse.media_store)}: not a regular file (a symbolic link)",
    }
    assert secret.read_bytes() == b"not media" and original.is_symlink()
    assert (outside / "thumbs/32-32-image-png-crop").read_bytes() == b"somebody else's file" and thumbs.is_symlink()
    stored = bucket_objects(moto, bucket)
    assert not any("EfGhIjKlMnOp" in key or "RemoteOne123" in key or "VuTsRqPoNmLk" in key for key in stored)
    assert b"not media" not in stored.values() and b"somebody else's file" not in stored.values()
    assert summary["media_deleted"] == 2 and thumb.is_symlink()


def test_delete_does_not_follow_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    """The delete itself: a directory replaced by a link after the file was checked (a race, or
    a hostile media store) is refused; the file it leads to stays."""
    base, outside = tmp_path / "media_store", tmp_path / "outside"
    (base / "local_thumbnails/Ab").mkdir(parents=True)
    (outside / "EfGh").mkdir(parents=True)
    (outside / "EfGh/32-32-image-png-crop").write_bytes(b"keep me")
    (base / "local_thumbnails/Ab/Cd").symlink_to(outside)
    with pytest.raises(ValueError, match="local_thumbnails/Ab/Cd is a symbolic link, not a directory"):
        remove_media_file(str(base), "local_thumbnails/Ab/Cd/EfGh/32-32-image-png-crop")
    assert (outside / "EfGh/32-32-image-png-crop").read_bytes() == b"keep me"
    # a symlink in the file's own place: the link goes, never what it points to
    (base / "local_content/Ab/Cd").mkdir(parents=True)
    (base / "local_content/Ab/Cd/EfGh").symlink_to(outside / "EfGh/32-32-image-png-crop")
    remove_media_file(str(base), "local_content/Ab/Cd/EfGh")
    assert not os.path.lexists(base / "local_content") and (outside / "EfGh/32-32-image-png-crop").exists()


def damage(cache: Path, page: int) -> None:
    """Write garbage over one page of an sqlite file, as a bad disk or a torn copy does."""
    with sqlite3.connect(cache) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(cache, "r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(os.urandom(page_size))


@pytest.mark.parametrize("engine", ["sqlite"])
def test_damaged_cache_db_is_exit_2_with_what_to_do(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    cache = workdir / "cache.db"
    # enough rows that the table and its indexes have pages of their own
    add_cache_rows(cache.parent, [("", f"media{n:08d}xxxx", f"media{n:08d}xxxx", "local", False) for n in range(3000)])
    with sqlite3.connect(cache) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'media'").fetchone()
    before = synapse.local_files()
    damage(cache, root)
    for command in (["check-deleted"], ["write"], ["update", "30d"], ["upload", "--delete"]):
        result = offload(*config, *command, expect=2)
        assert f"{cache.name} is damaged (sqlite: database disk image is malformed)" in result.output, command
        assert "Restore it from a backup, or move it aside and run `objstore-offload update DURATION`" in result.output
        assert "Traceback" not in result.output
    assert synapse.local_files() == before and bucket_objects(moto, bucket) == {}

    damage(cache, 1)  # the header: not even a database any more
    result = offload(*config, "check-deleted", expect=2)
    assert "is damaged (sqlite: file is not a database)" in result.output


@pytest.mark.parametrize("engine", ["sqlite"])
def test_durations_must_be_positive(offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path) -> None:
    config = ["--config", str(homeserver_yaml)]
    for duration in ("-5y", "0d", "-0s"):
        result = offload(*config, "update-db", "--", duration, expect=2)
        assert f"duration '{duration}' must be more than zero" in result.output
    assert "duration '-1d' must be zero or more" in offload(*config, "reconcile", "--grace", "-1d", expect=2).output
    assert "is too long" in offload(*config, "update-db", "99999999999y", expect=2).output
    assert not (workdir / "cache.db").exists()


@pytest.mark.parametrize("engine", ["sqlite"])
def test_cutoff_in_the_future_from_an_older_version_is_ignored(
    offload: Offload, homeserver_yaml: Path, dataset: Dataset, workdir: Path,
) -> None:
    """An older version took `update-db -- -5y` and kept a cutoff five years ahead: every later
    run read nothing. Such a cutoff is set aside, with a warning, and every media read once."""
    config = ["--json", "--config", str(homeserver_yaml)]
    assert json.loads(offload(*config, "update-db", "1y").stdout)["synced"] == 1
    future = int((time.time() + 5 * 365 * 86400) * 1000)
    with sqlite3.connect(workdir / "cache.db") as conn:
        conn.execute("UPDATE objstore_synced SET before_ts = ?", (future,))
    result = offload(*config, "update-db", "30d")
    assert json.loads(result.stdout)["synced"] == 4
    assert "a time still to come" in result.stderr and "ignoring it" in result.stderr
    with sqlite3.connect(workdir / "cache.db") as conn:
        (cutoff,) = conn.execute("SELECT before_ts FROM objstore_synced").fetchone()
    assert cutoff < time.time() * 1000
