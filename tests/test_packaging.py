"""The sdist and wheel build, and the wheel installs into a clean virtual environment and works."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.metadata, importlib.util, sys
import synapse_objstore
assert synapse_objstore.__file__.startswith(sys.prefix), synapse_objstore.__file__  # the wheel's, not a checkout's
from synapse_objstore.config import parse_store_config
from synapse_objstore.plugins import default_registry
from synapse_objstore.store import ObjectStore
from synapse_objstore.io_loop import run
assert default_registry().names() == ["azure", "fsspec", "gcs", "s3"], default_registry().names()
backend = parse_store_config({"bucket": "media", "prefix": "p/"})
assert backend.describe() == "s3://media/p/ at AWS", backend.describe()
# gcs and azure are extras: without them the backend names the extra to install
for config, extra in (({"backend": "gcs", "bucket": "media", "token": "anon"}, "synapse-objstore[gcs]"),
                      ({"backend": "azure", "container": "media", "account_name": "account"},
                       "synapse-objstore[azure]")):
    try:
        run(ObjectStore(parse_store_config(config)).connect())
    except Exception as error:
        assert extra in str(error), str(error)
    else:
        raise AssertionError(f"{config} worked without its extra")
assert importlib.util.find_spec("synapse") is None  # the store and CLI need no Synapse
print("ok")
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel that `python -m build` builds from that sdist (not from the
    checkout): whatever the wheel holds, the sdist was enough to build."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    return out


def package_files() -> set[str]:
    """The files of the package in the checkout (modules of every subpackage, and any data
    such as a py.typed marker), relative to the project root."""
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / "synapse_objstore").rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def test_the_sdist_carries_what_a_build_needs_and_its_wheel_the_whole_package(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        top, *_ = archive.getnames()[0].split("/")
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    package = package_files()
    assert {"synapse_objstore/provider.py", "synapse_objstore/backends/s3/__init__.py", "synapse_objstore/cli/main.py",
            "synapse_objstore/testing/suite.py"} <= package  # the walk above found the subpackages
    needed = package | {"pyproject.toml", "README.md", "PKG-INFO"}
    needed |= {name for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE") if (ROOT / name).exists()}
    assert needed - in_sdist == set(), f"missing from {sdist.name}"
    assert not {name for name in in_sdist if name.startswith("tests/")}, "tests that cannot run from the sdist"

    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        metadata = archive.read(next(n for n in in_wheel if n.endswith(".dist-info/METADATA"))).decode()
    assert {n for n in in_wheel if ".dist-info/" not in n} == package, "the wheel holds other files than the package"
    # the README is the project's description on the index
    assert "Description-Content-Type: text/markdown" in metadata and "objstore-offload" in metadata.split("\n\n", 1)[1]
    assert top == sdist.name.removesuffix(".tar.gz")


def test_wheel_installs_into_a_clean_venv_and_works(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        declared = archive.read(entry_points).decode()
    assert "[synapse_objstore]" in declared and "objstore-offload" in declared

    venv = tmp_path / "venv"
    # Clean: no PYTHONPATH leading to a checkout (pip would take its egg-info for the package
    # installed already and skip the wheel), and not run from the checkout (`-c` imports from
    # the working directory).
    clean = {"env": {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}, "cwd": tmp_path}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, **clean)
    subprocess.run([str(venv / "bin/pip"), "install", "--quiet", str(wheel)], check=True, capture_output=True,
                   timeout=600, **clean)
    result = subprocess.run([str(venv / "bin/python"), "-c", CHECK], capture_output=True, text=True, timeout=120,
                            **clean)
    assert result.stdout.strip() == "ok", result.stderr
    cli = subprocess.run([str(venv / "bin/objstore-offload"), "--help"], capture_output=True, text=True, timeout=120,
                         **clean)
    assert cli.returncode == 0, cli.stderr
    for command in ("update-db", "check-deleted", "update", "write", "upload", "restore", "verify", "migrate"):
        assert command in cli.stdout


def test_the_oldest_synapse_ci_runs_is_the_oldest_one_we_accept_and_the_readme_names() -> None:
    """tox -e oldest (`make test-oldest`, run by CI) pins matrix-synapse to the lower bound of both
    extras, so no version is claimed that the tests did not run on."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lower_bounds = {
        name: [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
        for name in ("synapse", "test")
        for requirement in map(Requirement, extras[name]) if requirement.name == "matrix-synapse"
    }
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    pins = [Requirement(line) for line in tox["testenv:oldest"]["deps"].splitlines()
            if line.strip().startswith("matrix-synapse")]
    assert len(pins) == 1 and [spec.operator for spec in pins[0].specifier] == ["=="], pins
    oldest = Version(next(iter(pins[0].specifier)).version)
    assert lower_bounds == {"synapse": [oldest], "test": [oldest]}
    assert f"Synapse {oldest.major}.{oldest.minor} or newer" in (ROOT / "README.md").read_text()
