"""objstore-localdisk passes synapse-objstore's backend conformance suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from synapse_objstore.config import parse_store_config
from synapse_objstore.io_loop import run
from synapse_objstore.store import ObjectStore
from synapse_objstore.testing import BackendConformance


class TestLocalDisk(BackendConformance):
    @pytest.fixture
    def store_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"backend": "localdisk", "directory": str(tmp_path / "archive"), "prefix": "hs/"}


def test_an_upload_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    store = ObjectStore(parse_store_config({"backend": "localdisk", "directory": str(tmp_path / "archive")}))
    source = tmp_path / "media"
    source.write_bytes(b"media bytes")
    run(store.put_file(str(source), "local_content/ab/cd/ef"))

    assert (tmp_path / "archive/objects/local_content/ab/cd/ef").read_bytes() == b"media bytes"
    assert list((tmp_path / "archive/incoming").iterdir()) == []
