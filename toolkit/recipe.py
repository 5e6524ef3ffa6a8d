"""Recipes: immutable descriptions of an experiment, written as short Python files.

A recipe file assigns a :class:`Recipe` to the module-level name ``recipe``. A variant
loads its base with :func:`load_recipe` and changes one field with ``evolve``.
"""

from __future__ import annotations

import contextvars
import importlib.util
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from toolkit.errors import RecipeError, UnknownComponentError
from toolkit.registry import KINDS, Registry


def _freeze(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


@attrs.frozen
class Component:
    """A choice of registered component: its kind, its name and the parameters the recipe sets."""

    kind: str
    name: str
    params: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=lambda p: _freeze(dict(p)))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def with_params(self, **params: Any) -> Component:
        """Return a copy with ``params`` added or replaced."""
        return Component(self.kind, self.name, {**self.kwargs, **params})

    def __repr__(self) -> str:
        args = "".join(f", {key}={value!r}" for key, value in self.params)
        return f"{self.kind}({self.name!r}{args})"


def content_encoder(name: str, **params: Any) -> Component:
    return Component("content_encoder", name, params)


def attribute_encoder(name: str, **params: Any) -> Component:
    return Component("attribute_encoder", name, params)


def prior(name: str, **params: Any) -> Component:
    return Component("prior", name, params)


def generator(name: str, **params: Any) -> Component:
    return Component("generator", name, params)


def discriminator(name: str, **params: Any) -> Component:
    return Component("discriminator", name, params)


def loss(name: str, **params: Any) -> Component:
    return Component("loss", name, params)


def optimizer(name: str, **params: Any) -> Component:
    return Component("optimizer", name, params)


def adam(**params: Any) -> Component:
    """Adam with per-network learning rates (TTUR) and linear decay; see ``toolkit list adam``."""
    return Component("optimizer", "adam", params)


def dataset(name: str, **params: Any) -> Component:
    return Component("dataset", name, params)


ImageSize = int | tuple[int, int]


def _image_size(value: Any) -> ImageSize:
    if isinstance(value, list):
        value = tuple(value)
    return value


def _check_image_size(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    sizes = value if isinstance(value, tuple) else (value,)
    if len(sizes) not in (1, 2) or not all(isinstance(size, int) for size in sizes):
        raise RecipeError(f"{attribute.name} must be an int or a (height, width) pair, got {value!r}")
    for size in sizes:
        if size < 64 or size % 4:
            raise RecipeError(
                f"{attribute.name} {value!r} is not supported: each side must be a multiple of 4 and at least 64"
            )


def _check_positive(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise RecipeError(f"{attribute.name} must be a positive integer, got {value!r}")


def _check_batch_size(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 2 or value % 2:
        raise RecipeError(
            f"batch_size must be an even integer of at least 2 (half from each of two domains), got {value!r}"
        )


def _check_bool(instance: Any, attribute: attrs.Attribute, value: bool) -> None:
    if not isinstance(value, bool):
        raise RecipeError(f"{attribute.name} must be True or False, got {value!r}")


def _check_precision(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in ("auto", "fp32", "bf16"):
        raise RecipeError(f"precision must be 'auto', 'fp32' or 'bf16', got {value!r}")


def _check_kind(kind: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, Component) or value.kind != kind:
            raise RecipeError(f"recipe field '{attribute.name}' must be a {kind} component, got {value!r}")

    return check


def _check_losses(instance: Any, attribute: attrs.Attribute, value: tuple[Component, ...]) -> None:
    names = []
    for item in value:
        if not isinstance(item, Component) or item.kind != "loss":
            raise RecipeError(f"recipe field 'losses' must contain loss components, got {item!r}")
        if item.name in names:
            raise RecipeError(f"loss '{item.name}' appears twice in the recipe; list each loss term once")
        names.append(item.name)


# Recipe fields that trade speed for memory without changing the math, with the labels
# that logs and benchmark tables give them.
MEMORY_OPTIONS = {"activation_checkpointing": "activation checkpointing", "channels_last": "channels-last"}


@attrs.frozen(kw_only=True)
class Recipe:
    """An experiment: the components of a DRIT-family model, its losses, data and training schedule.

    ``image_size`` is the training crop S (an int, or (height, width)); the dataset
    component resizes images to a larger load size first (R=256 for S=216, R=128 for
    S=108). ``batch_size`` counts the images of both domains: half come from each.
    ``precision`` is ``fp32``, ``bf16`` (autocast) or ``auto``: bf16 on a CUDA GPU that
    supports it or a CPU with bf16 instructions, else fp32. ``activation_checkpointing``
    recomputes the encoders' and the generator's activations in backward instead of
    keeping them, for less memory and more time (see docs/benchmarks.md).
    ``channels_last`` stores the convolution weights and the image batches in
    channels-last (NHWC) memory format.
    ``content_discriminator_every`` spaces the content discriminator's updates, and
    ``max_nonfinite_updates`` is how many updates in a row may be skipped for a NaN
    or infinite loss before training stops.
    """

    content_encoder: Component = attrs.field(validator=_check_kind("content_encoder"))
    attribute_encoder: Component = attrs.field(validator=_check_kind("attribute_encoder"))
    prior: Component = attrs.field(validator=_check_kind("prior"))
    generator: Component = attrs.field(validator=_check_kind("generator"))
    discriminator: Component = attrs.field(validator=_check_kind("discriminator"))
    content_discriminator: Component = attrs.field(validator=_check_kind("discriminator"))
    losses: tuple[Component, ...] = attrs.field(converter=tuple, validator=_check_losses)
    optimizer: Component = attrs.field(validator=_check_kind("optimizer"))
    data: Component = attrs.field(default=Component("dataset", "apple2orange"), validator=_check_kind("dataset"))
    image_size: ImageSize = attrs.field(default=216, converter=_image_size, validator=_check_image_size)
    batch_size: int = attrs.field(default=2, validator=_check_batch_size)
    iterations: int = attrs.field(default=6000, validator=_check_positive)
    content_discriminator_every: int = attrs.field(default=3, validator=_check_positive)
    max_nonfinite_updates: int = attrs.field(default=10, validator=_check_positive)
    seed: int = 0
    precision: str = attrs.field(default="auto", validator=_check_precision)
    activation_checkpointing: bool = attrs.field(default=False, validator=_check_bool)
    channels_last: bool = attrs.field(default=False, validator=_check_bool)
    num_workers: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    log_every: int = attrs.field(default=50, validator=_check_positive)
    grid_every: int = attrs.field(default=500, validator=_check_positive)
    plot_every: int = attrs.field(default=500, validator=_check_positive)
    checkpoint_every: int = attrs.field(default=500, validator=_check_positive)
    keep_checkpoints: int = attrs.field(default=3, validator=_check_positive)
    name: str | None = None

    def evolve(self, **changes: Any) -> Recipe:
        """Return a copy with ``changes`` applied; every validator runs again."""
        try:
            return attrs.evolve(self, **changes)
        except TypeError as error:
            fields = ", ".join(field.name for field in attrs.fields(Recipe))
            raise RecipeError(f"invalid recipe change: {error}; recipe fields are: {fields}") from None

    def with_loss(self, item: Component) -> Recipe:
        """Return a copy with the loss term ``item`` appended."""
        return self.evolve(losses=self.losses + (item,))

    @property
    def components(self) -> dict[str, Component]:
        """Every single-component field by field name (losses excluded)."""
        return {
            field.name: getattr(self, field.name)
            for field in attrs.fields(Recipe)
            if isinstance(getattr(self, field.name), Component)
        }

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of a training crop."""
        if isinstance(self.image_size, tuple):
            return self.image_size
        return (self.image_size, self.image_size)

    def validate(self, registry: Registry) -> None:
        """Check every component name and parameter against the registry before any work starts."""
        for field_name, item in self.components.items():
            try:
                registry.check_parameters(item.kind, item.name, item.kwargs)
            except UnknownComponentError as error:
                raise RecipeError(f"recipe field '{field_name}': {error}") from None
        prior_entry = registry.get("prior", self.prior.name)
        has_categorical = getattr(prior_entry.factory, "has_categorical", False)
        for item in self.losses:
            entry = registry.check_parameters("loss", item.name, item.kwargs)
            needs = getattr(entry.factory, "requires", frozenset())
            if "categorical" in needs and not has_categorical:
                raise RecipeError(
                    f"loss '{item.name}' needs a prior with a categorical variable q(y|x), "
                    f"but prior '{self.prior.name}' has none; use prior('gmvae', ...) or remove the loss"
                )

    def resolved(self, registry: Registry) -> dict[str, Any]:
        """Describe the recipe with every parameter, defaults included, as JSON-ready data."""
        described: dict[str, Any] = {}
        for field in attrs.fields(Recipe):
            value = getattr(self, field.name)
            if isinstance(value, Component):
                described[field.name] = _describe(registry, value)
            elif field.name == "losses":
                described[field.name] = [_describe(registry, item) for item in value]
            else:
                described[field.name] = list(value) if isinstance(value, tuple) else value
        return described


def _describe(registry: Registry, item: Component) -> dict[str, Any]:
    entry = registry.get(item.kind, item.name)
    params = {p.name: _jsonable(p.default) for p in entry.parameters if not p.required}
    params.update({key: _jsonable(value) for key, value in item.params})
    return {"kind": item.kind, "name": item.name, "plugin": entry.package, "params": params}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


# Folders of the recipe files being loaded, innermost last, so a variant can load its base by name.
_loading: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("toolkit_recipe_loading", default=())


def find_recipe_file(reference: str | Path) -> Path:
    """Resolve a recipe path or bare name (``gmdrit``) to an existing file.

    A relative reference is looked up beside the recipe files being loaded (innermost
    first), then in the current folder, then in ``./recipes``. The ``.py`` may be left out.
    """
    reference = Path(reference)
    names = [reference] if reference.suffix == ".py" else [reference, reference.with_suffix(".py")]
    if reference.is_absolute():
        folders = [Path("/")]
    else:
        folders = [*reversed(_loading.get()), Path.cwd(), Path.cwd() / "recipes"]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate.resolve()
    searched = ", ".join(dict.fromkeys(str(folder) for folder in folders))
    if _loading.get():
        hint = "a recipe that loads another one names it relative to its own folder or the current folder"
    else:
        hint = "pass the path of a .py file that defines `recipe`, e.g. recipes/gmdrit.py"
    raise RecipeError(f"recipe file '{reference}' not found (looked in {searched}); {hint}")


def load_recipe(reference: str | Path) -> Recipe:
    """Execute a recipe file and return its ``recipe``, named after the file.

    A bare name is looked up beside the recipe file that is loading it, then in ``./recipes``.
    """
    path = find_recipe_file(reference)
    module_name = f"toolkit_recipes.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RecipeError(f"recipe file '{path}' cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    token = _loading.set(_loading.get() + (path.parent,))
    try:
        spec.loader.exec_module(module)
    except RecipeError as error:
        raise RecipeError(f"recipe file '{path}': {error}") from None
    except SyntaxError as error:
        raise RecipeError(
            f"recipe file '{path}' has a syntax error at line {error.lineno}: {error.msg.rstrip('.')}. "
            "Fix the file and run again"
        ) from None
    except Exception as error:
        line = _failing_line(error, path)
        raise RecipeError(
            f"recipe file '{path}' failed to load{line}: {type(error).__name__}: {error}"
        ) from None
    finally:
        _loading.reset(token)
    if not hasattr(module, "recipe"):
        raise RecipeError(f"recipe file '{path}' must assign a toolkit.recipe.Recipe to the name `recipe`")
    recipe = module.recipe
    if not isinstance(recipe, Recipe):
        raise RecipeError(
            f"recipe file '{path}' must assign a toolkit.recipe.Recipe to the name `recipe`, "
            f"found a {type(recipe).__name__}"
        )
    return recipe.evolve(name=path.stem)


def _failing_line(error: BaseException, path: Path) -> str:
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if Path(frame.filename).resolve() == path:
            return f" at line {frame.lineno}"
    return ""


__all__ = [
    "KINDS",
    "Component",
    "Recipe",
    "adam",
    "attribute_encoder",
    "content_encoder",
    "dataset",
    "discriminator",
    "generator",
    "load_recipe",
    "loss",
    "optimizer",
    "prior",
]
