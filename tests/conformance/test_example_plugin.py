"""The third-party example, examples/objstore-localdisk, installed for real with pip: it
passes the conformance suite (ours, and its own test run as its author would run it), and
Synapse's provider and objstore-offload both use it through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.synapse_media import SynapseMedia
from synapse_objstore.plugins import default_registry
from synapse_objstore.testing import BackendConformance
from tests.support.offload import Dataset, Offload

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "objstore-localdisk"


@pytest.fixture(scope="module")
def example_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example, so that building it leaves nothing in the repository."""
    copy = tmp_path_factory.mktemp("example") / EXAMPLE.name
    shutil.copytree(EXAMPLE, copy)
    return copy


@pytest.fixture(scope="module")
def localdisk_site(example_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """objstore-localdisk installed by pip into a directory of its own, put on sys.path for
    this module only, so the plugin registry of the other tests stays as it was."""
    site = tmp_path_factory.mktemp("site")
    # pip builds it in an isolated environment with the setuptools its pyproject.toml asks for,
    # as it would for any user; the test environment's own setuptools may be too old or absent.
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(example_source)],
        capture_output=True, text=True, timeout=600,
    )
    assert installed.returncode == 0, f"pip could not install the example:\n{installed.stdout}{installed.stderr}"
    sys.path.insert(0, str(site))
    default_registry.cache_clear()
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("objstore_localdisk", None)
    default_registry.cache_clear()


def test_pip_installed_the_entry_point(localdisk_site: Path) -> None:
    registry = default_registry()
    assert registry.origins["localdisk"] == "localdisk"
    assert registry.get("localdisk").__module__ == "objstore_localdisk"
    assert str(localdisk_site) in sys.modules["objstore_localdisk"].__file__


class TestLocalDiskPlugin(BackendConformance):
    @pytest.fixture
    def store_config(self, localdisk_site: Path, tmp_path: Path) -> dict[str, Any]:
        return {"backend": "localdisk", "directory": str(tmp_path / "archive"), "prefix": "hs/"}


def test_the_examples_own_conformance_test_passes_as_its_author_runs_it(localdisk_site: Path,
                                                                       example_source: Path) -> None:
    """pytest in the example's directory, outside this repository's tests: the suite's
    fixtures come from synapse-objstore's pytest plugin alone."""
    env = {**os.environ, "PYTHONPATH": str(localdisk_site)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(example_source),
         "tests"],
        cwd=example_source, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 20, summary


@pytest.mark.parametrize("engine", ["sqlite"])
def test_objstore_offload_uploads_verifies_and_restores_through_the_plugin(
    localdisk_site: Path, offload: Offload, homeserver_yaml: Path, synapse: SynapseMedia,
    dataset: Dataset, workdir: Path, tmp_path: Path, engine: str,
) -> None:
    archive = tmp_path / "archive"
    (workdir / "disk.yaml").write_text(yaml.safe_dump({
        "module": "synapse_objstore.ObjectStorageProvider",
        "config": {"backend": "localdisk", "directory": str(archive), "prefix": "media/"},
    }))
    config = ["--config", str(homeserver_yaml)]
    offload(*config, "update", "30d")
    summary = json.loads(offload("--json", *config, "upload", "--store-config", "disk.yaml", "--delete").stdout)
    assert summary["files_deleted"] == summary["files_verified"] == len(dataset.old)
    assert summary["files_failed"] == 0
    assert {p: (archive / "objects/media" / p).read_bytes() for p in dataset.old} == {
        p: synapse.files[p] for p in dataset.old}
    assert not any((synapse.media_store / p).exists() for p in dataset.old)

    verified = json.loads(offload("--json", "verify", "--store-config", "disk.yaml").stdout)
    assert verified["files_verified"] == len(dataset.old) and verified["files_failed"] == 0

    restored = json.loads(offload("--json", *config, "restore", "--store-config", "disk.yaml").stdout)
    assert restored["files_restored"] == len(dataset.old)
    assert {p: (synapse.media_store / p).read_bytes() for p in dataset.old} == {
        p: synapse.files[p] for p in dataset.old}


def test_a_bad_plugin_config_is_refused_naming_the_key(localdisk_site: Path) -> None:
    from synapse_objstore.config import parse_store_config
    from synapse_objstore.errors import ConfigError

    with pytest.raises(ConfigError, match="'directory': must be an absolute path"):
        parse_store_config({"backend": "localdisk", "directory": "relative/archive"})
