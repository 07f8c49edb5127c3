"""docs/plugins.md documents every hook, every part of the backend contract and every knob
of the conformance suite: adding one without documenting it fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from synapse_objstore import backends, hookspecs
from synapse_objstore.backends import Backend, BackendSettings, ChecksumScheme, ObjectStream
from synapse_objstore.testing import BackendConformance

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = ROOT / "docs" / "plugins.md"


def documented_entries() -> set[str]:
    """Names that have an entry of their own: a heading or a list item starting with `name`."""
    return set(re.findall(r"^(?:#+|\s*[-*])\s+`(\w+)", PLUGINS_MD.read_text(), flags=re.MULTILINE))


def public_members(cls: type) -> set[str]:
    """What a subclass may set or override: public attributes, methods and properties
    defined by the class itself, annotated class attributes included."""
    return {name for name in [*vars(cls), *vars(cls).get("__annotations__", {})] if not name.startswith("_")}


def hooks() -> set[str]:
    return {name for name, value in vars(hookspecs).items()
            if inspect.isfunction(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec")}


def suite_fixtures() -> set[str]:
    """The fixtures a backend's test class is meant to give (the suite's own ones excluded)."""
    return {name for name in vars(BackendConformance) if name.endswith("store_config")}


def suite_settings() -> set[str]:
    annotations = vars(BackendConformance).get("__annotations__", {})
    return {name for name, kind in annotations.items() if "ClassVar" in str(kind)}


@pytest.mark.parametrize(
    ("what", "names"),
    [
        ("hook", hooks()),
        ("Backend member", public_members(Backend)),
        ("ObjectStream member", public_members(ObjectStream)),
        ("ChecksumScheme field", public_members(ChecksumScheme) - {"gives_checksums"}),
        ("BackendSettings key or method", public_members(BackendSettings) - {"model_config"}),
        ("conformance fixture", suite_fixtures()),
        ("conformance setting", suite_settings()),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_every_part_of_the_plugin_surface_has_an_entry_in_the_docs(what: str, names: set[str]) -> None:
    assert names, f"found no {what}s to check: the test is looking in the wrong place"
    missing = sorted(names - documented_entries())
    assert not missing, f"docs/plugins.md has no entry for the {what}(s) {missing}"


def test_everything_the_public_backends_module_offers_is_in_the_docs() -> None:
    exported = set(backends.__all__)
    assert {"Backend", "BackendSettings", "hookimpl"} <= exported
    missing = sorted(name for name in exported if f"`{name}`" not in PLUGINS_MD.read_text())
    assert not missing, f"docs/plugins.md does not name {missing}, which synapse_objstore.backends exports"


def test_the_hook_is_registered_under_its_documented_name() -> None:
    assert "register_backends" in hooks()


def test_the_worked_example_the_docs_point_to_exists() -> None:
    for link in re.findall(r"\]\((\.\./[^)#]+)\)", PLUGINS_MD.read_text()):
        assert (PLUGINS_MD.parent / link).resolve().exists(), f"docs/plugins.md links to {link}, which is not there"
    assert (ROOT / "examples/objstore-localdisk/pyproject.toml").exists()
