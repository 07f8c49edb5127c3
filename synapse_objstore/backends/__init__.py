"""What a backend plugin imports: the backend contract, and the built-in backends' modules.

A plugin author needs nothing else from synapse-objstore than this module:

    from synapse_objstore.backends import AsyncFs, Backend, BackendSettings, hookimpl

    class MySettings(BackendSettings): ...

    class MyBackend(Backend):
        name = "mine"
        Settings = MySettings
        ...

    @hookimpl
    def register_backends(register):
        register(MyBackend)

The built-in backends (`s3`, `gcs`, `azure`, `fsspec`) are one module each beside this one
and register through the same hook; docs/plugins.md has the contract in full.
"""

from synapse_objstore.asyncfs import AsyncFs
from synapse_objstore.backends.base import (
    LIST_PAGE_SIZE,
    Backend,
    BlockingFileStream,
    ChecksumScheme,
    IncompleteUpload,
    ObjectStream,
    RangedReadStream,
)
from synapse_objstore.errors import ConfigError
from synapse_objstore.hookspecs import hookimpl
from synapse_objstore.settings import BackendSettings

__all__ = [
    "LIST_PAGE_SIZE",
    "AsyncFs",
    "Backend",
    "BackendSettings",
    "BlockingFileStream",
    "ChecksumScheme",
    "ConfigError",
    "IncompleteUpload",
    "ObjectStream",
    "RangedReadStream",
    "hookimpl",
]
