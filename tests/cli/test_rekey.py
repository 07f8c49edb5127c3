"""objstore-offload rekey on Ceph RGW, which enforces SSE-C: a bucket whose objects are under the
current key, two previous keys and none ends with every object under the current key alone,
byte-identical, with its Content-Type and metadata; a dry run changes nothing; the command turns
SSE-C on and off; a run killed with SIGKILL loses nothing and a rerun finishes; two runs at once
are harmless; an object no configured key reads is named and left as it is."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from servers.ceph_rgw import CephRGW
from tests.support.offload import MAIN, REPO, MiB, Offload
from tests.support.s3 import OTHER_KEY, SSE_KEY, rgw_client

pytestmark = pytest.mark.ceph

CURRENT = SSE_KEY
PREVIOUS_1 = OTHER_KEY
PREVIOUS_2 = "third-key-for-rotation-tests-012"
UNKNOWN = "a-key-no-config-knows-0123456789"
PREFIX = "media/"
MARKER = "synapse-objstore-owner.json"


def block(rgw: CephRGW, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint_url": rgw.endpoint_url, "access_key_id": rgw.access_key,
            "secret_access_key": rgw.secret_key, "addressing_style": "path", "prefix": PREFIX,
            "multipart_threshold": "5MiB", "multipart_chunksize": "5MiB", **extra}


def rotated(rgw: CephRGW, bucket: str) -> dict[str, Any]:
    """The config of a store rotated twice, that was written without SSE-C at first."""
    return block(rgw, bucket, sse_customer_key=CURRENT, previous_sse_customer_keys=[PREVIOUS_1, PREVIOUS_2],
                 previously_unencrypted=True)


def write_config(workdir: Path, config: dict[str, Any], name: str = "store.yaml") -> str:
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


def sse(key: str | None) -> dict[str, str]:
    return {} if key is None else {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def metadata_of(body: bytes) -> dict[str, str]:
    """The sha256 metadata Synapse's uploads carry: a rewrite through this host checks the bytes it read against it."""
    return {"sha256": hashlib.sha256(body).hexdigest()}


def put(s3: Any, bucket: str, objects: dict[str, bytes], key: str | None) -> None:
    for name, body in objects.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=body, ContentType="image/png",
                      Metadata=metadata_of(body), **sse(key))


def media(tag: str, count: int, size: int = 3000) -> dict[str, bytes]:
    return {f"local_content/{tag[:2]}/{tag[2:4]}/{tag}{n:04d}": os.urandom(size + n) for n in range(count)}


def read_with(s3: Any, bucket: str, name: str, key: str | None) -> tuple[bytes, str, dict[str, str]]:
    reply = s3.get_object(Bucket=bucket, Key=PREFIX + name, **sse(key))
    return reply["Body"].read(), reply["ContentType"], reply["Metadata"]


def assert_under(s3: Any, bucket: str, objects: dict[str, bytes], key: str | None) -> None:
    """Each object reads with `key` alone, byte-identical, with its Content-Type and metadata;
    an encrypted one does not read without a key."""
    for name, body in objects.items():
        assert read_with(s3, bucket, name, key) == (body, "image/png", metadata_of(body)), name
        head = s3.head_object(Bucket=bucket, Key=PREFIX + name, **sse(key))
        if key is None:
            assert "SSECustomerKeyMD5" not in head, name
        else:
            assert head.get("SSECustomerKeyMD5") is not None, name
            with pytest.raises(botocore.exceptions.ClientError):
                s3.head_object(Bucket=bucket, Key=PREFIX + name)


def listed_keys(s3: Any, bucket: str) -> set[str]:
    return {item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])}


@pytest.fixture
def mixed(rgw: CephRGW, rgw_bucket: str) -> dict[str | None, dict[str, bytes]]:
    """Objects under the current key, the two previous ones and none; the owner marker under
    previous-1; one object of 11 MiB (multipart) under previous-2."""
    s3 = rgw_client(rgw)
    groups: dict[str | None, dict[str, bytes]] = {
        CURRENT: media("cucu", 3), PREVIOUS_1: media("p1p1", 4), PREVIOUS_2: media("p2p2", 2), None: media("unun", 3),
    }
    groups[PREVIOUS_1][MARKER] = json.dumps({"format": 1}).encode()
    groups[PREVIOUS_2]["local_content/bi/gg/big"] = os.urandom(11 * MiB)
    for key, objects in groups.items():
        put(s3, rgw_bucket, objects, key)
    return groups


def test_dry_run_reports_objects_under_each_key_and_changes_nothing(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path, mixed: dict[str | None, dict[str, bytes]],
) -> None:
    config = write_config(workdir, rotated(rgw, rgw_bucket))
    s3 = rgw_client(rgw)
    before = {item["Key"]: (item["ETag"], item["LastModified"])
              for item in s3.list_objects_v2(Bucket=rgw_bucket)["Contents"]}

    summary = json.loads(offload("--json", "rekey", "--store-config", config).stdout)
    sizes = {key: sum(map(len, objects.values())) for key, objects in mixed.items()}
    assert summary["by_key"] == {
        "current": [3, sizes[CURRENT]], "previous-1": [5, sizes[PREVIOUS_1]], "previous-2": [3, sizes[PREVIOUS_2]],
        "unencrypted": [3, sizes[None]],
    }
    assert summary["dry_run"] and summary["objects_rekeyed"] == 11 and summary["files_failed"] == 0

    human = offload("rekey", "--store-config", config).stdout
    # each key named by the start of its MD5 (what S3 stores with the object), so swapped keys show
    previous_1 = hashlib.md5(PREVIOUS_1.encode()).hexdigest()[:8]
    assert f"under previous-1 (key md5 {previous_1}): 5 objects" in human
    assert "Would have rewritten 11 objects under the current key" in human
    assert all(key not in human for key in (CURRENT, PREVIOUS_1, PREVIOUS_2))
    assert {item["Key"]: (item["ETag"], item["LastModified"])
            for item in s3.list_objects_v2(Bucket=rgw_bucket)["Contents"]} == before
    for key, objects in mixed.items():
        assert_under(s3, rgw_bucket, objects, key)


def test_apply_moves_every_object_under_the_current_key(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path, mixed: dict[str | None, dict[str, bytes]],
) -> None:
    config = write_config(workdir, rotated(rgw, rgw_bucket))
    result = offload("--json", "--metrics-file", "rekey.prom", "rekey", "--apply", "--jobs", "3",
                     "--store-config", config)
    summary = json.loads(result.stdout)
    assert summary["objects_rekeyed"] == 11 and summary["objects_current"] == 3 and summary["files_failed"] == 0
    # RGW 16.2 cannot copy into SSE-C (501 from an SSE-C source, an unencrypted copy from a plain one): streamed
    assert summary["objects_copied"] + summary["objects_streamed"] == 11
    assert all(key not in result.output for key in (CURRENT, PREVIOUS_1, PREVIOUS_2))

    s3 = rgw_client(rgw)
    everything = {name: body for objects in mixed.values() for name, body in objects.items()}
    assert listed_keys(s3, rgw_bucket) == {PREFIX + name for name in everything}
    assert_under(s3, rgw_bucket, everything, CURRENT)
    for old in (PREVIOUS_1, PREVIOUS_2):
        with pytest.raises(botocore.exceptions.ClientError):
            s3.head_object(Bucket=rgw_bucket, Key=PREFIX + next(iter(mixed[old])), **sse(old))

    prom = (workdir / "rekey.prom").read_text()
    assert 'objstore_offload_last_run_objects{action="rekeyed",command="rekey",shard="0/1"} 11.0' in prom

    # nothing is left: a second run finds every object under the current key, rewrites none
    again = json.loads(offload("--json", "rekey", "--apply", "--store-config", config).stdout)
    assert again["by_key"] == {"current": [14, sum(map(len, everything.values()))]}
    assert again["objects_rekeyed"] == 0

    # the old keys can leave the config: every object still reads through the store
    plain = write_config(workdir, block(rgw, rgw_bucket, sse_customer_key=CURRENT), "current-only.yaml")
    final = json.loads(offload("--json", "rekey", "--store-config", plain).stdout)
    assert final["by_key"] == again["by_key"] and final["files_failed"] == 0


def test_turns_sse_c_on_for_a_plain_bucket_and_off_again(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path,
) -> None:
    s3 = rgw_client(rgw)
    objects = {**media("plpl", 5), "local_content/bi/gg/big": os.urandom(6 * MiB)}
    put(s3, rgw_bucket, objects, None)

    on = write_config(workdir, block(rgw, rgw_bucket, sse_customer_key=CURRENT, previously_unencrypted=True))
    summary = json.loads(offload("--json", "rekey", "--apply", "--store-config", on).stdout)
    assert summary["by_key"] == {"unencrypted": [6, sum(map(len, objects.values()))]}
    assert summary["objects_rekeyed"] == 6 and summary["files_failed"] == 0
    assert_under(s3, rgw_bucket, objects, CURRENT)

    off = write_config(workdir, block(rgw, rgw_bucket, previous_sse_customer_keys=[CURRENT]), "off.yaml")
    # a config without sse_customer_key decrypts only when told to: it may have lost that line
    refused = offload("rekey", "--apply", "--store-config", off, expect=2)
    assert "no sse_customer_key" in refused.output and "--decrypt" in refused.output
    assert_under(s3, rgw_bucket, objects, CURRENT)
    summary = json.loads(offload("--json", "rekey", "--apply", "--decrypt", "--store-config", off).stdout)
    assert summary["by_key"] == {"previous-1": [6, sum(map(len, objects.values()))]}
    assert summary["objects_rekeyed"] == 6 and summary["files_failed"] == 0
    assert_under(s3, rgw_bucket, objects, None)


def test_an_object_no_configured_key_reads_is_named_and_left_as_it_is(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path,
) -> None:
    s3 = rgw_client(rgw)
    known, unknown = media("knkn", 3), {"local_content/un/kn/own": b"under a key nobody configured"}
    put(s3, rgw_bucket, known, PREVIOUS_1)
    put(s3, rgw_bucket, unknown, UNKNOWN)
    config = write_config(workdir, block(rgw, rgw_bucket, sse_customer_key=CURRENT,
                                         previous_sse_customer_keys=[PREVIOUS_1]))

    result = offload("--json", "rekey", "--apply", "--store-config", config, expect=1)
    summary = json.loads(result.stdout)
    assert summary["objects_rekeyed"] == 3 and summary["objects_unreadable"] == 1
    assert [failure["path"] for failure in summary["failed"]] == ["local_content/un/kn/own"]
    assert "no configured key reads it" in summary["failed"][0]["error"]
    assert UNKNOWN not in result.output and CURRENT not in result.output
    assert_under(s3, rgw_bucket, known, CURRENT)
    assert_under(s3, rgw_bucket, unknown, UNKNOWN)


def test_refuses_a_store_without_sse_c_config_and_a_backend_that_is_not_s3(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path, tmp_path: Path,
) -> None:
    s3 = rgw_client(rgw)
    put(s3, rgw_bucket, media("nono", 2), None)
    plain = write_config(workdir, block(rgw, rgw_bucket))
    result = offload("rekey", "--apply", "--store-config", plain, expect=2)
    assert "no sse_customer_key, no previous_sse_customer_keys" in result.output

    archive = tmp_path / "archive"
    archive.mkdir()
    local = write_config(workdir, {"backend": "fsspec", "url": f"file://{archive}"}, "local.yaml")
    result = offload("rekey", "--store-config", local, expect=2)
    assert "rekey works on S3 stores only" in result.output and "fsspec backend" in result.output


def rekey_process(workdir: Path, config: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", MAIN, "--no-progress", "--json", "rekey", "--apply",
                             "--store-config", config, *args],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rewritten_since(s3: Any, bucket: str, since: float) -> int:
    """Objects whose LastModified is after `since` (RGW gives whole seconds): those rewritten."""
    return sum(1 for key in listed_keys_with_times(s3, bucket).values() if key >= since)


def listed_keys_with_times(s3: Any, bucket: str) -> dict[str, float]:
    return {item["Key"]: item["LastModified"].timestamp()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])}


def test_sigkill_mid_run_loses_nothing_and_a_rerun_finishes(
    offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path,
) -> None:
    s3 = rgw_client(rgw)
    objects = {**media("kiki", 150, 20_000), "local_content/bi/gg/big": os.urandom(11 * MiB)}
    put(s3, rgw_bucket, objects, PREVIOUS_1)
    config = write_config(workdir, block(rgw, rgw_bucket, sse_customer_key=CURRENT,
                                         previous_sse_customer_keys=[PREVIOUS_1]))
    time.sleep(1.1)  # LastModified has whole seconds: a rewritten object is newer than every written one
    started = time.time() - 0.001
    process = rekey_process(workdir, config, "--jobs", "2")
    try:
        while process.poll() is None and rewritten_since(s3, rgw_bucket, int(started)) < 20:
            time.sleep(0.02)
        assert process.poll() is None, f"the run ended before it was killed: {process.communicate()}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.communicate()
    done = rewritten_since(s3, rgw_bucket, int(started))
    assert 20 <= done < len(objects)

    # nothing lost: every object reads, whole, with the old key or the current one
    under = {}
    for name, body in objects.items():
        for key in (CURRENT, PREVIOUS_1):
            try:
                assert read_with(s3, rgw_bucket, name, key) == (body, "image/png", metadata_of(body)), name
                under[name] = key
                break
            except botocore.exceptions.ClientError:
                continue
    assert set(under) == set(objects)
    moved = sum(1 for key in under.values() if key == CURRENT)
    assert 0 < moved < len(objects)

    # the rerun finds only what is left
    summary = json.loads(offload("--json", "rekey", "--apply", "--store-config", config).stdout)
    assert summary["objects_current"] == moved and summary["objects_rekeyed"] == len(objects) - moved
    assert summary["files_failed"] == 0
    assert listed_keys(s3, rgw_bucket) == {PREFIX + name for name in objects}
    assert_under(s3, rgw_bucket, objects, CURRENT)


def test_two_runs_at_once_are_harmless(offload: Offload, rgw: CephRGW, rgw_bucket: str, workdir: Path) -> None:
    s3 = rgw_client(rgw)
    objects = {**media("twtw", 120, 20_000), **media("unen", 40, 5_000)}
    old = dict(list(objects.items())[:120])
    put(s3, rgw_bucket, old, PREVIOUS_1)
    put(s3, rgw_bucket, {name: body for name, body in objects.items() if name not in old}, None)
    config = write_config(workdir, block(rgw, rgw_bucket, sse_customer_key=CURRENT,
                                         previous_sse_customer_keys=[PREVIOUS_1], previously_unencrypted=True))

    first = rekey_process(workdir, config, "--jobs", "4")
    second = rekey_process(workdir, config, "--jobs", "4")
    outputs = [first.communicate(timeout=300), second.communicate(timeout=300)]
    for process, (stdout, stderr) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, stderr + stdout
        assert json.loads(stdout)["files_failed"] == 0
        # RGW 16.2 rewrites none in place: each run says so once per kind, not once per job
        assert stderr.count("cannot rewrite SSE-C objects") <= 1, stderr
        assert stderr.count("cannot rewrite unencrypted objects") <= 1, stderr
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    # both really ran on the same objects: each rewrote some, and together all of them
    assert all(summary["objects_rekeyed"] > 0 for summary in summaries)
    assert sum(summary["objects_rekeyed"] for summary in summaries) >= len(objects)

    assert listed_keys(s3, rgw_bucket) == {PREFIX + name for name in objects}
    assert_under(s3, rgw_bucket, objects, CURRENT)
    again = json.loads(offload("--json", "rekey", "--store-config", config).stdout)
    assert again["by_key"] == {"current": [len(objects), sum(map(len, objects.values()))]}
