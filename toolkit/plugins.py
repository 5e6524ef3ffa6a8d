"""Plugin loading: pluggy manager, the ``toolkit.plugins`` entry-point group and the registry it fills."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from types import ModuleType
from typing import Any

import attrs
import pluggy

from toolkit import hookspecs
from toolkit.errors import PluginError
from toolkit.registry import Registry

ENTRY_POINT_GROUP = "toolkit.plugins"

log = logging.getLogger(__name__)


@attrs.frozen
class PluginInfo:
    """One loaded plugin module and the package that ships it."""

    name: str
    package: str
    version: str
    hooks: tuple[str, ...]


class Plugins:
    """The plugin manager, the registry its ``register_components`` hooks filled, and load failures."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("toolkit")
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()
        self._origins: dict[str, tuple[str, str]] = {}

    def add(self, plugin: ModuleType | object, *, name: str, package: str, version: str) -> None:
        """Register a plugin object and its components.

        A plugin that pluggy rejects (a misspelled hook or hook argument) is unregistered
        and recorded in ``registry.failures``, and so is a hook that raises. A component
        name clash raises PluginError.
        """
        try:
            self.manager.register(plugin, name=name)
            self.manager.check_pending()
        except (ValueError, pluggy.PluginValidationError) as error:
            self._drop(name)
            self.registry.failures.append((package, f"{name}: {error}"))
            return
        self._origins[name] = (package, version)
        hook_caller = self.manager.hook.register_components
        for implementation in hook_caller.get_hookimpls():
            if implementation.plugin_name != name:
                continue
            register = functools.partial(self.registry.register, package=package, version=version)
            try:
                implementation.function(register=register)
            except PluginError:
                raise
            except Exception as error:  # noqa: BLE001 - a broken plugin must not break the toolkit
                log.debug("plugin '%s' from package '%s' failed to register components: %s", name, package, error)
                self.registry.failures.append((package, f"{type(error).__name__}: {error}"))

    def _drop(self, name: str) -> None:
        if self.manager.get_plugin(name) is not None:
            self.manager.unregister(name=name)

    def load_entry_points(self) -> None:
        """Import every module of the ``toolkit.plugins`` entry-point group, first-party ones included."""
        for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_entry_key):
            package = entry_point.dist.name if entry_point.dist else "unknown"
            version = entry_point.dist.version if entry_point.dist else "unknown"
            try:
                module = entry_point.load()
            except Exception as error:  # noqa: BLE001 - report the plugin, keep the others usable
                log.debug("plugin package '%s' (entry point '%s') failed to load: %s", package, entry_point.value, error)
                self.registry.failures.append((package, f"{type(error).__name__}: {error}"))
                continue
            self.add(module, name=f"{package}:{entry_point.name}", package=package, version=version)

    def info(self) -> list[PluginInfo]:
        """Describe each loaded plugin with the hooks it implements."""
        found = []
        for name, plugin in self.manager.list_name_plugin():
            package, version = self._origins.get(name, ("unknown", "unknown"))
            callers = self.manager.get_hookcallers(plugin) or []
            hooks = tuple(sorted(caller.name for caller in callers))
            found.append(PluginInfo(name, package, version, hooks))
        return sorted(found, key=lambda info: (info.package, info.name))

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add click commands to ``cli``."""
        for implementation in self.manager.hook.register_commands.get_hookimpls():
            try:
                implementation.function(cli=cli)
            except Exception as error:  # noqa: BLE001 - a broken plugin must not break the CLI
                package = self._origins.get(implementation.plugin_name, ("unknown", ""))[0]
                log.warning("plugin package '%s' failed to add commands: %s", package, error)
                self.registry.failures.append((package, f"{type(error).__name__}: {error}"))


def _entry_key(entry_point: importlib.metadata.EntryPoint) -> tuple[str, str]:
    return (entry_point.dist.name if entry_point.dist else "", entry_point.name)


@functools.cache
def default_plugins() -> Plugins:
    """Load the installed plugins once per process."""
    plugins = Plugins()
    plugins.load_entry_points()
    return plugins


def get_registry() -> Registry:
    return default_plugins().registry
