"""Loads plugins from entry points and keeps the registry of backends they register."""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field

import pluggy

from synapse_objstore import hookspecs
from synapse_objstore.backends.base import Backend
from synapse_objstore.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME


@dataclass
class BackendRegistry:
    """Backend classes by name, and which plugin registered each."""

    backends: dict[str, type[Backend]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def add(self, backend_class: type, origin: str) -> None:
        if not (isinstance(backend_class, type) and issubclass(backend_class, Backend)):
            raise PluginError(f"plugin '{origin}' registered {backend_class!r}, which is not a Backend subclass")
        name = getattr(backend_class, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{origin}' registered {backend_class.__qualname__} without a name")
        if name in self.backends and self.backends[name] is not backend_class:
            raise PluginError(
                f"plugin '{origin}' registers backend '{name}', which plugin '{self.origins[name]}' registered already"
            )
        self.backends[name] = backend_class
        self.origins[name] = origin

    def get(self, name: str) -> type[Backend]:
        """The backend class registered as `name`; an error listing the known ones if none."""
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise ConfigError(f"unknown backend '{name}'; registered backends: {known}") from None

    def names(self) -> list[str]:
        return sorted(self.backends)


def make_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def load_entry_point_plugins(manager: pluggy.PluginManager) -> None:
    """Register every module of the `synapse_objstore` entry point group.

    pluggy's own loader lets an ImportError escape without saying which plugin raised it;
    this one names the plugin and the distribution that ships it.
    """
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.has_plugin(entry_point.name):
            continue
        dist = entry_point.dist.name if entry_point.dist else "unknown distribution"
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=entry_point.name)
        except Exception as error:
            raise PluginError(
                f"plugin '{entry_point.name}' ({entry_point.value}, from {dist}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from error


def collect_backends(manager: pluggy.PluginManager) -> BackendRegistry:
    """Call every plugin's `register_backends` hook and gather what they register."""
    registry = BackendRegistry()
    for impl in manager.hook.register_backends.get_hookimpls():
        origin = impl.plugin_name
        try:
            impl.function(register=functools.partial(registry.add, origin=origin))
        except PluginError:
            raise
        except Exception as error:
            raise PluginError(
                f"plugin '{origin}' failed in register_backends: {type(error).__name__}: {error}") from error
    return registry


@functools.cache
def default_registry() -> BackendRegistry:
    """The registry built from every installed plugin, loaded once per process."""
    manager = make_plugin_manager()
    load_entry_point_plugins(manager)
    return collect_backends(manager)
