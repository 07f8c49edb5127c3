"""restore, verify and migrate begin with one listing of the store (listing_index.py). A store
that fails in the middle of that listing (503 after the retries) ends the run as a store that
becomes unusable ends the other commands: the failure named, exit code 2, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from servers.moto import MotoServer
from synapse_objstore.testing.fault_proxy import FaultProxy
from tests.support.listing import on_listing_pages
from tests.support.offload import Dataset, Offload, store_block
from tests.support.s3 import s3_client

PAGE = 2


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url, seed=7) as server:
        yield server


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize("command", [["verify"], ["restore"], ["migrate", "--to", "target.yaml"]])
def test_a_listing_that_fails_midway_ends_the_run_with_exit_2(
    offload: Offload, homeserver_yaml: Path, moto: MotoServer, bucket: str, workdir: Path, proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch, dataset: Dataset, command: list[str], engine: str,
) -> None:
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    offload(*config, "upload", "--delete")
    target = f"{bucket}-target"
    s3_client(moto.endpoint_url).create_bucket(Bucket=target)
    (workdir / "proxied.yaml").write_text(yaml.safe_dump(store_block(moto, bucket, endpoint_url=proxy.endpoint_url)))
    (workdir / "target.yaml").write_text(yaml.safe_dump(store_block(moto, target, endpoint_url=proxy.endpoint_url)))
    for n in range(6):  # enough objects in the target too for pages
        s3_client(moto.endpoint_url).put_object(Bucket=target, Key=f"media/local_content/xx/yy/pad{n}", Body=b"p")

    # the listing's later pages: every request about a bucket itself fails
    on_listing_pages(monkeypatch, PAGE, after_page=lambda _: proxy.set(rate_503=1.0, match=r"^/[^/]+/?$"))
    result = offload("--json", "--retries", "0", *config, *command, "--store-config", "proxied.yaml", expect=None)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, result.output
    assert "the listing of the store failed after 2 objects" in result.output
