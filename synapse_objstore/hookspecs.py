"""The plugin surface: the hooks a package implements to add to synapse-objstore.

A plugin is a module named by an entry point in the `synapse_objstore` group. It marks its
functions with `hookimpl`:

    from synapse_objstore import hookimpl

    @hookimpl
    def register_backends(register):
        register(MyBackend)

The built-in `s3` and `fsspec` backends register through this same hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from synapse_objstore.backends.base import Backend

PROJECT_NAME = "synapse_objstore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backends(register: Callable[[type[Backend]], None]) -> None:
    """Register backend classes by calling `register(BackendClass)` once for each.

    A backend class subclasses `synapse_objstore.backends.base.Backend`, sets `name` (the
    value of `backend:` in the config) and `Settings` (its pydantic settings model), and
    builds an fsspec filesystem from those settings.
    """
