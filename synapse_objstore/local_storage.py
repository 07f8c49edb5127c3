"""Whether Synapse keeps media on its local disk (`enable_local_media_storage`), and whether this
Synapse can run without it.

Synapse 1.146 added `enable_local_media_storage: false`. An older Synapse ignores the key and
keeps writing every file to media_store_path, so a homeserver.yaml that sets it false on such a
version asks for something it does not get: the provider refuses to start rather than let the
operator believe the disk stays empty.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from synapse.config._base import ConfigError, read_config_files

FIRST_SYNAPSE_WITHOUT_LOCAL_STORAGE = "1.146"


def synapse_version() -> str:
    try:
        return version("matrix-synapse")
    except PackageNotFoundError:
        return "unknown"


def local_media_storage_enabled(hs: Any) -> bool:
    """`enable_local_media_storage` of this homeserver. On a Synapse without the option,
    ConfigError if its config files set it false anyway."""
    media_config = hs.config.media
    if hasattr(media_config, "enable_local_media_storage"):
        return bool(media_config.enable_local_media_storage)
    config_files = getattr(hs.config, "config_files", None) or []
    raw = read_config_files(config_files) if config_files else {}
    if not raw.get("enable_local_media_storage", True):  # Synapse takes it as a truth value
        raise ConfigError(
            f"enable_local_media_storage is false, but Synapse {synapse_version()} does not support it (it was added "
            f"in Synapse {FIRST_SYNAPSE_WITHOUT_LOCAL_STORAGE}) and would keep writing every upload to "
            f"{media_config.media_store_path}. Upgrade Synapse to {FIRST_SYNAPSE_WITHOUT_LOCAL_STORAGE} or later, or "
            "remove enable_local_media_storage and free the disk with 'objstore-offload upload --delete'."
        )
    return True

