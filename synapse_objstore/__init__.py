"""synapse-objstore: Synapse media in object storage.

`synapse_objstore.ObjectStorageProvider` is the Synapse media storage provider; it is
imported on first access so that the CLI and plugins load without Synapse installed.
"""

from __future__ import annotations

from typing import Any

from synapse_objstore.hookspecs import hookimpl

__all__ = ["ObjectStorageProvider", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "ObjectStorageProvider":
        from synapse_objstore.provider import ObjectStorageProvider

        return ObjectStorageProvider
    raise AttributeError(f"module 'synapse_objstore' has no attribute {name!r}")
