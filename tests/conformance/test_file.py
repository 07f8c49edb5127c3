"""The conformance suite against the fsspec backend on a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from synapse_objstore.testing import BackendConformance


class TestLocalDirectory(BackendConformance):
    @pytest.fixture
    def store_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"backend": "fsspec", "url": f"file://{tmp_path}/objects", "prefix": "hs/"}
