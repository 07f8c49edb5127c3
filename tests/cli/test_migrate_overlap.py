"""migrate refuses a target that is the source under an overlapping prefix: the source's
listing would find the copies the run writes and copy them again, without end (a review's run
into prefix zz/ of its own bucket grew 2,500 objects to 19,734 in 5 minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from tests.support.offload import Offload, store_block
from tests.support.s3 import s3_client


@pytest.mark.parametrize("source_prefix, target_prefix, refused", [
    ("media/", "media/zz/", True),  # the target inside the source
    ("media/zz/", "media/", True),  # the source inside the target
    ("media/", "media/", True),
    ("media/", "copy/", False),  # apart: the copy goes ahead
])
def test_a_target_overlapping_the_source_is_refused_before_anything_is_copied(
    offload: Offload, moto: MotoServer, bucket: str, workdir: Path, source_prefix: str, target_prefix: str,
    refused: bool,
) -> None:
    s3 = s3_client(moto.endpoint_url)
    for n in range(5):
        s3.put_object(Bucket=bucket, Key=f"{source_prefix}local_content/ab/cd/media{n}", Body=b"x" * (n + 1))
    before = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    (workdir / "source.yaml").write_text(yaml.safe_dump(store_block(moto, bucket, prefix=source_prefix)))
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, bucket, prefix=target_prefix)))

    result = offload("migrate", "--store-config", "source.yaml", "--to", "target.yaml", expect=2 if refused else 0)
    after = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    if refused:
        assert "overlap, so the run would copy its own copies" in " ".join(result.output.split())
        assert after == before
    else:
        assert len(after) == 2 * len(before)
