"""What migrate does with each object it copies: reads it from the source once, computing its
digests as it arrives; a small object goes through memory (one GET, one PUT of the bytes read,
no scratch file), a large one through one scratch file that is not read again to be digested.
The copy is verified all the same, keeps its metadata, and is not copied again by the next run;
with SSE-C on either side (whose ETags are no MD5s) the copy is verified by its sha256; and a
source whose sha256 metadata is not its content's is refused."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.moto import MotoServer
from servers.synapse_media import SynapseMedia
from synapse_objstore import checksums
from synapse_objstore.cli import migrate
from synapse_objstore.cli.restore import HASH_IN_LINE
from synapse_objstore.owner_marker import OWNER_MARKER
from synapse_objstore.store import ObjectStore
from tests.support.moto_log import log_offset, requests_to
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client

pytestmark = pytest.mark.parametrize("engine", ["sqlite"])

KEY_A = "0123456789abcdef0123456789ABCDEF"
KEY_B = "fedcba9876543210FEDCBA9876543210"


def _offloaded(offload: Offload, homeserver_yaml: Path) -> list[str]:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    return config


def _target(moto: MotoServer, bucket: str, workdir: Path, **extra: Any) -> str:
    target = f"{bucket}-target"
    s3_client(moto.endpoint_url).create_bucket(Bucket=target)
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, target, **extra)))
    return target


def test_each_object_is_read_once_and_a_small_one_never_touches_the_disk(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    config = _offloaded(offload, homeserver_yaml)
    target = _target(moto, bucket, workdir)
    # one of the megabytes most originals weigh: digested in a worker thread, still in memory
    middle, body = "local_content/Mi/dd/leSizedMedia01", os.urandom(3 * 1024 * 1024 // 2)
    assert HASH_IN_LINE < len(body) <= migrate.IN_MEMORY
    s3_client(moto.endpoint_url).put_object(Bucket=bucket, Key=f"media/{middle}", Body=body, ContentType="image/png",
                                            Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    files = {**{path: synapse.files[path] for path in dataset.old}, middle: body}
    opened: Counter[str] = Counter()
    scratch_files: list[str] = []
    open_read, mkstemp, read_and_digest = ObjectStore.open_read, tempfile.mkstemp, checksums.read_and_digest

    async def counted_open_read(self: ObjectStore, media_path: str) -> Any:
        opened[media_path] += 1
        return await open_read(self, media_path)

    def counted_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made = mkstemp(*args, **kwargs)
        scratch_files.append(made[1])
        return made

    def no_second_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a scratch copy was read again to be digested: {args}")

    monkeypatch.setattr(ObjectStore, "open_read", counted_open_read)
    monkeypatch.setattr(tempfile, "mkstemp", counted_mkstemp)
    monkeypatch.setattr(checksums, "read_and_digest", no_second_read)
    offset = log_offset(moto)
    copied = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml").stdout)
    monkeypatch.setattr(checksums, "read_and_digest", read_and_digest)

    assert copied["files_copied"] == copied["files_verified"] == len(files) and copied["files_failed"] == 0
    opened.pop(OWNER_MARKER)  # read by the ownership check
    assert opened == Counter(list(files)), opened
    large = [p for p in files if len(files[p]) > migrate.IN_MEMORY]
    assert large and len(scratch_files) == len(large), scratch_files
    source, copies = requests_to(moto, bucket, since=offset), requests_to(moto, target, since=offset)
    assert source["GET object"] == len(files), source
    assert copies["PUT object"] == len(files) - len(large), copies  # the large one went up in parts
    client = s3_client(moto.endpoint_url)
    for path in files:
        copy = client.get_object(Bucket=target, Key=f"media/{path}")
        was = client.head_object(Bucket=bucket, Key=f"media/{path}")
        assert copy["Body"].read() == files[path], path
        assert (copy["ContentType"], copy["Metadata"]) == (was["ContentType"], was["Metadata"]), path

    again = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml").stdout)
    assert again["files_copied"] == 0 and again["files_verified"] == len(files), again


def test_sse_c_on_both_sides_copies_verified_by_sha256(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, engine: str,
) -> None:
    """moto ignores SSE-C, but with a key configured neither store's ETag is taken for an MD5:
    the source's content is checked against its sha256 metadata, the copy by the sha256 its
    HEAD gives (with the target's key)."""
    offload("--config", str(homeserver_yaml), "update", "30d")
    (workdir / "source.yaml").write_text(yaml.safe_dump(store_block(moto, bucket, sse_customer_key=KEY_A)))
    offload("--config", str(homeserver_yaml), "upload", "--delete", "--store-config", "source.yaml")
    target = _target(moto, bucket, workdir, sse_customer_key=KEY_B)

    offset = log_offset(moto)
    copied = json.loads(offload("--json", "migrate", "--store-config", "source.yaml", "--to", "target.yaml").stdout)
    assert copied["files_copied"] == copied["files_verified"] == len(dataset.old) and copied["files_failed"] == 0
    assert requests_to(moto, target, since=offset)["HEAD object"] >= len(dataset.old)  # each copy looked at
    client = s3_client(moto.endpoint_url)
    for path in dataset.old:
        head = client.head_object(Bucket=target, Key=f"media/{path}")
        assert head["Metadata"] == {"sha256": hashlib.sha256(synapse.files[path]).hexdigest()}, path


def test_a_source_whose_sha256_metadata_is_not_its_content_is_not_copied(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, engine: str,
) -> None:
    config = _offloaded(offload, homeserver_yaml)
    target = _target(moto, bucket, workdir)
    client = s3_client(moto.endpoint_url)
    small = next(p for p in dataset.old if 0 < len(synapse.files[p]) <= migrate.IN_MEMORY)
    client.put_object(Bucket=bucket, Key=f"media/{small}", Body=synapse.files[small],
                      Metadata={"sha256": hashlib.sha256(b"other bytes").hexdigest()})

    report = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml", expect=1).stdout)
    assert [f["path"] for f in report["failed"]] == [small]
    assert "corrupted, not copied" in report["failed"][0]["error"]
    assert "Contents" not in client.list_objects_v2(Bucket=target, Prefix=f"media/{small}")
    assert report["files_verified"] == len(dataset.old) - 1


def test_the_objects_copied_through_memory_hold_at_most_the_limit_at_once(
    offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia, dataset: Dataset, moto: MotoServer, bucket: str,
    workdir: Path, monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    """With room for one object at a time, the jobs copy one at a time through memory: at most
    the largest small object's bytes are held at once."""
    config = _offloaded(offload, homeserver_yaml)
    _target(moto, bucket, workdir)
    fetch, held, most = migrate.fetch, [0], [0]

    async def counted_fetch(*args: Any) -> Any:
        size = args[1].size  # an empty object holds no room
        held[0] += size
        most[0] = max(most[0], held[0])
        try:
            return await fetch(*args)
        finally:
            held[0] -= size

    monkeypatch.setattr(migrate, "fetch", counted_fetch)
    monkeypatch.setattr(migrate, "IN_MEMORY_LIMIT", 1)
    copied = json.loads(offload("--json", *config, "migrate", "--to", "target.yaml", "--jobs", "8").stdout)
    assert copied["files_verified"] == len(dataset.old) and copied["files_failed"] == 0
    assert most[0] == max(len(synapse.files[p]) for p in dataset.old if len(synapse.files[p]) <= migrate.IN_MEMORY)
