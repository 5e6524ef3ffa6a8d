"""Diverse unpaired image-to-image translation (DRIT++, MDMM, GM-DRIT) from registered components."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drit-toolkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from toolkit.recipe import Recipe, load_recipe  # noqa: E402

__all__ = ["Recipe", "__version__", "load_recipe"]
