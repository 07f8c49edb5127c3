"""Imports go one way: errors and settings (the leaves) -> the backend contract -> the backends
-> the store and what works on it (verification, the startup check) -> the provider side ->
the apps (the CLI, the shipped test kit). Every module under synapse_objstore has a layer
here, and an import of a module of a higher layer (at module level, in a function, or for
type checking only) fails, naming the import. Neither app imports the other, and no modules
import each other in a cycle, however late the import runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "synapse_objstore"
SOURCE = Path(__file__).resolve().parent.parent / PACKAGE

# Each module's layer: by its name, or else by the longest prefix ending in "." that it starts
# with. A module imports only modules of its own layer or lower ones.
LAYERS: dict[str, int] = {
    # 0: what every layer may raise
    "synapse_objstore.errors": 0,
    # 1: leaves: settings, and helpers that know nothing of a store
    "synapse_objstore.settings": 1,
    "synapse_objstore.asyncfs": 1,
    "synapse_objstore.io_loop": 1,
    "synapse_objstore.reactor_bridge": 1,
    "synapse_objstore.redaction": 1,
    "synapse_objstore.failures": 1,
    "synapse_objstore.media": 1,
    "synapse_objstore.upload_memory": 1,
    "synapse_objstore.uploads_in_flight": 1,
    "synapse_objstore.held_uploads": 1,
    "synapse_objstore.local_storage": 1,
    "synapse_objstore.synapse_compat": 1,
    # 2: the backend contract, and the public module plugin authors import
    "synapse_objstore.hookspecs": 2,
    "synapse_objstore.backends": 2,
    "synapse_objstore.backends.base": 2,
    # 3: the backends
    "synapse_objstore.backends.": 3,
    # 4: the store, the registry of backends, a config block made into a backend
    "synapse_objstore.store": 4,
    "synapse_objstore.plugins": 4,
    "synapse_objstore.config": 4,
    "synapse_objstore.deadline": 4,
    # 5: what works on a store
    "synapse_objstore.verification": 5,
    "synapse_objstore.checksums": 5,
    "synapse_objstore.health": 5,
    "synapse_objstore.owner_marker": 5,
    "synapse_objstore.breaker": 5,
    "synapse_objstore.metrics": 5,
    # 6: Synapse's side; the package itself is Synapse's entry point (synapse_objstore.ObjectStorageProvider)
    "synapse_objstore": 6,
    "synapse_objstore.provider": 6,
    "synapse_objstore.responder": 6,
    # 7: the apps
    "synapse_objstore.cli": 7,
    "synapse_objstore.cli.": 7,
    "synapse_objstore.testing": 7,
    "synapse_objstore.testing.": 7,
}
# Apps of the top layer, which must not import each other.
APPS = ("synapse_objstore.cli", "synapse_objstore.testing")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`: never runs
    implicit: bool = False  # the parent package of the module imported, which Python imports first

    def __str__(self) -> str:
        how = "imports (as the parent package of what it imports)" if self.implicit else "imports"
        return f"{self.importer} (line {self.line}) {how} {self.imported}"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer(module: str) -> int:
    if module in LAYERS:
        return LAYERS[module]
    for prefix in sorted((name for name in LAYERS if name.endswith(".")), key=len, reverse=True):
        if module.startswith(prefix):
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer in tests/test_layers.py: give it one")


def app(module: str) -> str | None:
    return next((name for name in APPS if module == name or module.startswith(name + ".")), None)


def imports_of(module: str, source: str, known: set[str], is_package: bool = False) -> Iterator[Import]:
    """Every import of a package module in `source`, wherever it stands in the module."""
    tree = ast.parse(source)
    type_only_lines = {
        node.lineno
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in dict.fromkeys(targets):
            if target in known and target != module:
                type_only = node.lineno in type_only_lines
                yield Import(module, target, node.lineno, type_only)
                # Importing a.b.c from outside a.b runs a/b/__init__.py first (the root package
                # aside: every import starts there, and it is Synapse's entry point).
                parts = target.split(".")
                for end in range(2, len(parts)):
                    parent = ".".join(parts[:end])
                    if parent in known and not (module == parent or module.startswith(parent + ".")):
                        yield Import(module, parent, node.lineno, type_only, implicit=True)


def all_imports() -> list[Import]:
    found = modules()
    known = set(found)
    return [
        found_import
        for module, path in found.items()
        for found_import in imports_of(module, path.read_text(), known, path.name == "__init__.py")
    ]


def wrong_way(imports: list[Import]) -> list[str]:
    problems = []
    for found in imports:
        if layer(found.imported) > layer(found.importer):
            problems.append(f"{found}: layer {layer(found.importer)} imports layer {layer(found.imported)}")
        elif app(found.importer) and app(found.imported) and app(found.importer) != app(found.imported):
            problems.append(f"{found}: one app imports another")
    return problems


def cycles(imports: list[Import]) -> list[list[str]]:
    """The import cycles among the modules, each once (type-only imports never run)."""
    graph: dict[str, set[str]] = {}
    for found in imports:
        if not found.type_only:
            graph.setdefault(found.importer, set()).add(found.imported)
    found_cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                cycle = [*path[path.index(imported):], imported]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found_cycles.append(cycle)
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found_cycles


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer(module)


def test_imports_go_from_higher_layers_to_lower_ones() -> None:
    imports = all_imports()
    assert len(imports) > 100, "found few imports: the test is looking in the wrong place"
    problems = wrong_way(imports)
    assert not problems, "imports that go the wrong way:\n" + "\n".join(problems)


def test_no_modules_import_each_other_in_a_cycle() -> None:
    found = cycles(all_imports())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("synapse_objstore.settings", "def f():\n    from synapse_objstore.plugins import default_registry\n",
         "synapse_objstore.settings (line 2) imports synapse_objstore.plugins: layer 1 imports layer 4"),
        ("synapse_objstore.backends.base", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from synapse_objstore.store import ObjectStore\n",
         "synapse_objstore.backends.base (line 3) imports synapse_objstore.store: layer 2 imports layer 4"),
        ("synapse_objstore.testing.suite", "from synapse_objstore.cli import verification\n",
         "synapse_objstore.testing.suite (line 1) imports synapse_objstore.cli: one app imports another"),
        ("synapse_objstore.store", "from synapse_objstore import provider\n",
         "synapse_objstore.store (line 1) imports synapse_objstore.provider: layer 4 imports layer 6"),
    ],
)
def test_a_wrong_way_import_is_named(module: str, source: str, expected: str) -> None:
    known = set(modules())
    assert wrong_way(list(imports_of(module, source, known))) == [expected]


def test_a_cycle_held_apart_by_a_late_import_is_found() -> None:
    known = {"synapse_objstore.a", "synapse_objstore.b"}
    imports = [
        *imports_of("synapse_objstore.a", "from synapse_objstore.b import x\n", known),
        *imports_of("synapse_objstore.b", "def f():\n    from synapse_objstore.a import y\n", known),
    ]
    assert cycles(imports) == [["synapse_objstore.a", "synapse_objstore.b", "synapse_objstore.a"]]
