"""Failures name what failed; the run goes on with the other files where that is safe; exit codes tell."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore.verification import LocalRead, RemoteChecker
from tests.support.offload import Dataset, Offload
from tests.support.s3 import bucket_objects

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])


def test_unreadable_config_is_named(offload: Offload, workdir: Path, engine: str) -> None:
    broken = workdir / "homeserver.yaml"
    broken.write_text("database: [unclosed\n")
    result = offload("--config", str(broken), "update-db", "1d", expect=2)
    assert f"{broken} is not valid yaml" in result.output


def test_missing_database_is_named(offload: Offload, workdir: Path, engine: str) -> None:
    result = offload("update-db", "1d", expect=2)
    assert "Could not find homeserver.yaml" in result.output
    (workdir / "database.yaml").write_text(yaml.safe_dump(
        {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "no_such_synapse_db",
         "connect_timeout": 5}))
    result = offload("update-db", "1d", expect=2)
    assert "no_such_synapse_db" in result.output and "database.yaml" in result.output
    (workdir / "database.yaml").write_text(yaml.safe_dump({"sqlite": {"database": "missing.db"}}))
    assert "'missing.db' (from database.yaml) does not exist" in offload("update-db", "1d", expect=2).output
    assert not (workdir / "missing.db").exists()


def test_missing_bucket_stops_before_touching_anything(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, workdir: Path,
    engine: str,
) -> None:
    offload("--config", str(homeserver_yaml), "update", "30d")
    before = synapse.local_files()
    # (with --delete, a BUCKET other than homeserver.yaml's is refused before it is asked about:
    # tests/cli/test_upload_store_synapse_reads.py)
    result = offload("--config", str(homeserver_yaml), "upload", str(synapse.media_store), "no-such-bucket-here",
                     expect=2)
    assert "cannot use s3://no-such-bucket-here/media/ at " in result.output
    assert "the bucket or directory 'no-such-bucket-here' does not exist" in result.output
    assert synapse.local_files() == before


def test_bad_store_config_names_the_key(offload: Offload, synapse: SynapseMedia, workdir: Path, engine: str) -> None:
    (workdir / "store.yaml").write_text(yaml.safe_dump({"bucket": "b", "sse_customer_key": "short", "colour": "red"}))
    result = offload("upload", str(synapse.media_store), "--store-config", "store.yaml", expect=2)
    assert "store.yaml" in result.output and "unknown key 'colour'" in result.output
    assert "short" not in result.output  # a secret is never echoed


def test_wrong_credentials_are_reported(
    offload: Offload, synapse: SynapseMedia, dataset: Dataset, workdir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    # a moto server that checks credentials: no access key is known to it
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with MotoServer(tmp_path) as strict:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        (workdir / "database.yaml").write_text(yaml.safe_dump({"sqlite": synapse.db_config["args"]}))
        offload("update", str(synapse.media_store), "30d")
        result = offload("upload", str(synapse.media_store), "media", "--endpoint-url", strict.endpoint_url,
                         "--delete", expect=2)
    assert f"cannot use s3://media/ at {strict.endpoint_url}: the store refused the credentials" in result.output
    assert synapse.local_files() == set(synapse.files)


def test_file_vanishing_mid_run_fails_alone(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    offload("--config", str(homeserver_yaml), "update", "30d")
    vanishing = "local_thumbnails/Ab/Cd/EfGhIjKlMnOp/32-32-image-png-crop"
    read_local = RemoteChecker.read_local

    def read_after_vanishing(self: RemoteChecker, local_path: str, keep: bool) -> LocalRead:
        if local_path.endswith(vanishing):  # Synapse (or an admin) removes it after the run listed it
            os.remove(local_path)
        return read_local(self, local_path, keep)

    monkeypatch.setattr(RemoteChecker, "read_local", read_after_vanishing)
    result = offload("--json", "--config", str(homeserver_yaml), "upload", "--delete", expect=1)
    summary: dict[str, Any] = json.loads(result.stdout)
    assert [f["path"] for f in summary["failed"]] == [vanishing]
    assert "vanished during the run" in summary["failed"][0]["error"]
    others = [p for p in dataset.old if p != vanishing]
    assert summary["files_deleted"] == len(others)
    assert set(bucket_objects(moto, bucket)) == {f"media/{p}" for p in others}
    with sqlite3.connect(workdir / "cache.db") as conn:
        # that media is not called deleted: the next run looks at it again
        assert conn.execute("SELECT known_deleted FROM media WHERE media_id = 'AbCdEfGhIjKlMnOp'").fetchone() == (0,)
    monkeypatch.setattr(RemoteChecker, "read_local", read_local)
    assert json.loads(offload("--json", "--config", str(homeserver_yaml), "upload", "--delete").stdout)["media"] == 1


def test_file_written_to_after_its_verified_upload_is_kept(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    offload("--config", str(homeserver_yaml), "update", "30d")
    growing = "local_thumbnails/Ab/Cd/EfGhIjKlMnOp/32-32-image-png-crop"
    check_upload = RemoteChecker.check_upload

    async def check_then_grow(self: RemoteChecker, media_path: str, *args: Any) -> Any:
        check = await check_upload(self, media_path, *args)
        if media_path == growing:  # verified; then Synapse (still downloading into place) writes more
            with open(synapse.media_store / growing, "ab") as file:  # noqa: ASYNC230 - a test's one small write
                file.write(b"more bytes, in no copy")
        return check

    monkeypatch.setattr(RemoteChecker, "check_upload", check_then_grow)
    result = offload("--json", "--config", str(homeserver_yaml), "upload", "--delete", expect=1)
    summary: dict[str, Any] = json.loads(result.stdout)
    assert [f["path"] for f in summary["failed"]] == [growing]
    assert "changed since its upload was verified" in summary["failed"][0]["error"]
    assert (synapse.media_store / growing).read_bytes().endswith(b"more bytes, in no copy")
    with sqlite3.connect(workdir / "cache.db") as conn:
        assert conn.execute("SELECT known_deleted FROM media WHERE media_id = 'AbCdEfGhIjKlMnOp'").fetchone() == (0,)
    # the next run neither deletes it nor uploads it over the verified copy: an admin decides
    monkeypatch.setattr(RemoteChecker, "check_upload", check_upload)
    again: dict[str, Any] = json.loads(
        offload("--json", "--config", str(homeserver_yaml), "upload", "--delete", expect=1).stdout)
    assert [f["path"] for f in again["failed"]] == [growing]
    assert "differs from the remote copy" in again["failed"][0]["error"]
    assert (synapse.media_store / growing).read_bytes().endswith(b"more bytes, in no copy")


def test_file_rewritten_same_size_with_its_mtime_put_back_is_kept(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    """Other bytes of the same size written in place after the verified upload, the mtime then
    put back as it was (`cp -p`, `rsync -t --inplace`, `touch -r` by an admin restoring files):
    device, inode, size and mtime are as read, but the file's new bytes are in no copy. The
    inode's change time (which no one can set back) tells."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    rewritten = "local_thumbnails/Ab/Cd/EfGhIjKlMnOp/32-32-image-png-crop"
    check_upload = RemoteChecker.check_upload

    async def check_then_rewrite(self: RemoteChecker, media_path: str, *args: Any) -> Any:
        check = await check_upload(self, media_path, *args)
        if media_path == rewritten:
            path = synapse.media_store / rewritten
            before = path.stat()
            with open(path, "r+b") as file:  # noqa: ASYNC230 - a test's one small write
                inverted = bytes(255 - b for b in file.read())
                file.seek(0)
                file.write(inverted)
            assert path.stat().st_size == before.st_size
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return check

    monkeypatch.setattr(RemoteChecker, "check_upload", check_then_rewrite)
    result = offload("--json", "--config", str(homeserver_yaml), "upload", "--delete", expect=1)
    summary: dict[str, Any] = json.loads(result.stdout)
    assert [f["path"] for f in summary["failed"]] == [rewritten]
    assert "changed since its upload was verified" in summary["failed"][0]["error"]
    assert (synapse.media_store / rewritten).exists()
