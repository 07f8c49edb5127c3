"""A provider `config:` block, turned into a backend.

The provider and the offload CLI parse the same block through `parse_store_config`, so a
block that Synapse accepts is one the CLI accepts, and the other way round. `backend:` picks a
backend registered by a plugin (synapse_objstore.plugins); the backend's settings model
(synapse_objstore.settings) checks the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synapse_objstore.backends.base import Backend
from synapse_objstore.errors import ConfigError
from synapse_objstore.plugins import BackendRegistry, default_registry
from synapse_objstore.settings import parse_settings

DEFAULT_BACKEND = "s3"


def parse_store_config(raw: Mapping[str, Any] | None, registry: BackendRegistry | None = None) -> Backend:
    """Turn a provider `config:` block into a ready (not yet connected) backend.

    `backend:` picks the backend by its registered name (default `s3`); every other key
    belongs to that backend's settings.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the provider config must be a mapping of keys, not {type(raw).__name__}")
    data = dict(raw)
    name = data.pop("backend", DEFAULT_BACKEND)
    if not isinstance(name, str):
        raise ConfigError("'backend': expected the name of a backend, as a string")
    backend_class = (registry or default_registry()).get(name)
    settings = parse_settings(backend_class.Settings, data)
    try:
        return backend_class(settings)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"backend '{name}': {error}") from None
