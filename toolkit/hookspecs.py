"""The plugin contract: two hooks, called once per plugin when the toolkit starts."""

import pluggy

hookspec = pluggy.HookspecMarker("toolkit")
hookimpl = pluggy.HookimplMarker("toolkit")


@hookspec
def register_components(register):
    """Register components by calling ``register(kind, name, factory)`` once per component."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``toolkit`` command group ``cli``."""
