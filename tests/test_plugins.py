"""Backends from installed distributions' entry points, and plugins that go wrong."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from synapse_objstore.config import parse_store_config
from synapse_objstore.errors import ConfigError, PluginError
from synapse_objstore.io_loop import run
from synapse_objstore.plugins import (
    BackendRegistry,
    collect_backends,
    default_registry,
    load_entry_point_plugins,
    make_plugin_manager,
)
from synapse_objstore.store import ObjectStore

MEMORY_BACKEND = '''
import fsspec
from synapse_objstore.backends import Backend, BackendSettings, hookimpl


class MemorySettings(BackendSettings):
    area: str = "media"


class MemoryBackend(Backend):
    name = "{name}"
    Settings = MemorySettings

    @property
    def root(self):
        return "/" + self.settings.area

    def create_filesystem(self, loop):
        return fsspec.filesystem("memory")


@hookimpl
def register_backends(register):
    register(MemoryBackend)
'''


def install_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """Lay out an installed distribution (module + dist-info with an entry point), as pip would."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[synapse_objstore]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    default_registry.cache_clear()
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("objstore_test_")]:
        del sys.modules[name]
    default_registry.cache_clear()


def registry() -> BackendRegistry:
    manager = make_plugin_manager()
    load_entry_point_plugins(manager)
    return collect_backends(manager)


def test_a_third_party_backend_is_found_and_works_end_to_end(site: Path, tmp_path: Path) -> None:
    install_distribution(site, "objstore-memory", "objstore_test_memory", MEMORY_BACKEND.format(name="memtest"))
    backend = parse_store_config({"backend": "memtest", "area": "m1", "prefix": "p/"})
    store = ObjectStore(backend)
    local = tmp_path / "file"
    local.write_bytes(b"through a plugin")
    run(store.put_file(str(local), "local_content/aa/bb/cc"))
    info = run(store.info("local_content/aa/bb/cc"))
    assert info is not None and info.size == len(b"through a plugin")
    assert default_registry().origins["memtest"] == "objstore_test_memory"


def test_built_in_backends_register_through_entry_points_too() -> None:
    found = registry()
    assert {"s3", "fsspec"} <= set(found.names())
    assert found.origins["s3"] == "s3" and found.origins["fsspec"] == "fsspec"


def test_a_plugin_that_fails_to_import_is_named(site: Path) -> None:
    install_distribution(site, "objstore-broken", "objstore_test_broken", "import no_such_module_anywhere\n")
    with pytest.raises(PluginError, match=r"plugin 'objstore_test_broken' \(objstore_test_broken, "
                                          r"from objstore-broken\) failed to load: ModuleNotFoundError"):
        registry()


def test_a_plugin_taking_a_name_already_registered_is_named(site: Path) -> None:
    install_distribution(site, "objstore-impostor", "objstore_test_impostor", MEMORY_BACKEND.format(name="s3"))
    with pytest.raises(PluginError, match=r"backend 's3', which plugin '.*' registered already"):
        registry()


def test_registering_something_that_is_not_a_backend_is_named(site: Path) -> None:
    install_distribution(site, "objstore-junk", "objstore_test_junk", """
        from synapse_objstore import hookimpl

        @hookimpl
        def register_backends(register):
            register(dict)
        """)
    with pytest.raises(PluginError,
                       match="plugin 'objstore_test_junk' registered <class 'dict'>, which is not a Backend"):
        registry()


def test_unknown_backend_lists_the_registered_ones() -> None:
    known = ", ".join(default_registry().names())
    assert "fsspec, " in known and "s3" in known
    with pytest.raises(ConfigError, match=f"unknown backend 'nosuch'; registered backends: {known}$"):
        parse_store_config({"backend": "nosuch"})


def test_a_broken_plugin_stops_synapse_naming_it(site: Path) -> None:
    from synapse.config._base import ConfigError as SynapseConfigError

    from synapse_objstore.provider import ObjectStorageProvider

    install_distribution(site, "objstore-broken", "objstore_test_broken", "raise RuntimeError('boom at import')\n")
    with pytest.raises(SynapseConfigError,
                       match=r"synapse_objstore: plugin 'objstore_test_broken' .*from objstore-broken"
                             r"\) failed to load: RuntimeError: boom at import"):
        ObjectStorageProvider.parse_config({"bucket": "media"})


def test_a_plugin_taking_a_taken_name_stops_objstore_offload_naming_it(site: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from synapse_objstore.cli.main import cli

    install_distribution(site, "objstore-impostor", "objstore_test_impostor", MEMORY_BACKEND.format(name="fsspec"))
    store_config = tmp_path / "store.yaml"
    store_config.write_text(f"backend: fsspec\nurl: file://{tmp_path}/objects\n")
    result = CliRunner().invoke(cli, ["--no-progress", "verify", "--store-config", str(store_config)])
    assert result.exit_code == 2, result.output
    # pluggy calls the newest plugin first, so either may be the one found second
    assert re.search(r"store config from .*store\.yaml: plugin '(fsspec|objstore_test_impostor)' registers backend "
                     r"'fsspec', which plugin '(fsspec|objstore_test_impostor)' registered already", result.output)
    assert "objstore_test_impostor" in result.output
