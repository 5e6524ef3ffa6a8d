"""Exceptions the toolkit raises for problems a user can fix."""


class ToolkitError(Exception):
    """A problem with user input: the message names the value and the fix."""


class UnknownComponentError(ToolkitError, LookupError):
    """A recipe or command named a component that no plugin registered."""


class RecipeError(ToolkitError):
    """A recipe file failed to load or named an invalid setting."""


class DataError(ToolkitError):
    """A data folder or dataset name could not be used."""


class PluginError(ToolkitError):
    """Two plugins conflict, or a plugin registered something invalid."""


class CheckpointWriteError(ToolkitError):
    """Writing a checkpoint failed. The previous complete checkpoint is kept."""
