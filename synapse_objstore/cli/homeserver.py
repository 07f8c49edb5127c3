"""Reading Synapse's homeserver.yaml, and YAML files holding a provider config block."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synapse_objstore.errors import ConfigFileError, NoProviderEntryError

# The provider modules whose `config:` block this tool understands.
PROVIDER_MODULES = (
    "synapse_objstore.ObjectStorageProvider",
    "synapse_objstore.provider.ObjectStorageProvider",
    "s3_storage_provider.S3StorageProviderBackend",
)
# Synapse's default when homeserver.yaml does not set media_store_path.
DEFAULT_MEDIA_STORE_PATH = "media_store"


def load_yaml(path: str) -> Any:
    # imported here: a run that names its store by BUCKET and options reads no YAML (about 1 MiB of RSS)
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            return yaml.safe_load(file)
    except FileNotFoundError:
        raise ConfigFileError(f"Could not find {path}") from None
    except OSError as error:
        raise ConfigFileError(f"Could not read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path} is not valid yaml: {error}") from None


def _config_files(paths: Sequence[str]) -> list[str]:
    """Files named, with a directory standing for its *.yaml files in name order, as Synapse reads `-c DIR`."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(
                os.path.join(path, name) for name in sorted(os.listdir(path)) if name.endswith((".yaml", ".yml"))
            )
        else:
            files.append(path)
    return files


@dataclass(frozen=True)
class Homeserver:
    """What the CLI takes from a homeserver config (split over several files, as Synapse allows)."""

    source: str
    raw: Mapping[str, Any]

    @classmethod
    def load(cls, paths: Sequence[str]) -> Homeserver:
        merged: dict[str, Any] = {}
        files = _config_files(paths)
        if not files:
            raise ConfigFileError(f"no homeserver config file in {', '.join(paths)}")
        for path in files:
            data = load_yaml(path)
            if data is None:
                continue
            if not isinstance(data, Mapping):
                raise ConfigFileError(f"{path} must be a mapping of config keys")
            merged.update(data)  # later files override top-level keys, as in Synapse
        return cls(source=", ".join(files), raw=merged)

    @property
    def media_store_path(self) -> str:
        return str(self.raw.get("media_store_path") or DEFAULT_MEDIA_STORE_PATH)

    @property
    def keeps_local_media(self) -> bool:
        """False when `enable_local_media_storage: false`: Synapse (1.146+) then keeps no media on
        its disk, only in the store. Synapse takes the value as a truth value: an empty one (a
        template that rendered nothing), 0 or "" turn local storage off as `false` does."""
        return bool(self.raw.get("enable_local_media_storage", True))

    @property
    def server_name(self) -> str | None:
        name = self.raw.get("server_name")
        return name if isinstance(name, str) and name else None

    @property
    def database(self) -> Mapping[str, Any]:
        database = self.raw.get("database")
        if not isinstance(database, Mapping):
            raise ConfigFileError(f"no 'database' section in {self.source}")
        return database

    def provider_entry(self) -> Mapping[str, Any]:
        """The first media storage provider entry this tool understands (module, store_*, config)."""
        providers = self.raw.get("media_storage_providers") or []
        if not isinstance(providers, list):
            raise ConfigFileError(f"'media_storage_providers' in {self.source} must be a list")
        for entry in providers:
            if isinstance(entry, Mapping) and entry.get("module") in PROVIDER_MODULES:
                return entry
        raise NoProviderEntryError(
            f"no media_storage_providers entry with module {' or '.join(PROVIDER_MODULES[::2])} in {self.source}"
        )

    def provider_config(self) -> Mapping[str, Any]:
        """The `config:` block of the first media storage provider this tool understands."""
        entry = self.provider_entry()
        config = entry.get("config") or {}
        if not isinstance(config, Mapping):
            raise ConfigFileError(f"the 'config' of provider {entry['module']} in {self.source} must be a mapping")
        return config

    def stored_media_types(self) -> frozenset[str]:
        """The media types ('local', 'remote') Synapse sends to the provider: `store_local` and
        `store_remote` of its entry, which Synapse defaults to false."""
        entry = self.provider_entry()
        flags = {"local": entry.get("store_local", False), "remote": entry.get("store_remote", False)}
        for media_type, flag in flags.items():
            if not isinstance(flag, bool):
                raise ConfigFileError(f"'store_{media_type}' of provider {entry['module']} in {self.source} must be "
                                      f"true or false, not {flag!r}")
        return frozenset(media_type for media_type, flag in flags.items() if flag)


def load_store_config_file(path: str) -> Mapping[str, Any]:
    """A provider config block from a YAML file: the block itself (`backend: s3`, `bucket: ...`),
    or a provider entry holding it under `config:`."""
    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigFileError(f"{path} must hold a provider config block (a mapping such as 'bucket: media')")
    if "module" in data or set(data) == {"config"}:
        config = data.get("config") or {}
        if not isinstance(config, Mapping):
            raise ConfigFileError(f"'config' in {path} must be a mapping")
        return config
    return data
