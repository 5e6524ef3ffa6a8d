"""The component registry: every encoder, generator, discriminator, prior, loss term,
dataset and optimizer a recipe can name, keyed by kind and name."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from toolkit.errors import PluginError, RecipeError, UnknownComponentError

KINDS: dict[str, str] = {
    "content_encoder": "maps an image to a domain-invariant content code (a feature map)",
    "attribute_encoder": "maps an image and its domain code to pooled attribute features",
    "prior": "attribute posterior q(z|x) heads, the prior p(z) and their KL terms",
    "generator": "decodes a content code, an attribute code and a domain code to an image",
    "discriminator": "judges images or content codes: real/fake and domain logits",
    "loss": "one term of the training objective, with its weight",
    "optimizer": "builds the optimizers and learning-rate schedules of a model",
    "dataset": "unpaired multi-domain image data",
}

# Arguments the engine passes to factories from the data and the other components. A
# factory declares one as keyword-only without a default (``*, num_domains``), and then
# a recipe cannot set it. The same name with a default is an ordinary parameter: the
# prior's ``latent_size`` is the recipe's choice, the generator's follows from the prior.
CONTEXT_ARGUMENTS = frozenset(
    {"num_domains", "latent_size", "code_size", "feature_size", "content_channels", "image_size"}
)


@attrs.frozen
class Parameter:
    """One user-settable argument of a component factory."""

    name: str
    default: Any
    annotation: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@attrs.frozen
class Entry:
    """A registered component: its factory and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    package: str
    version: str

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        paragraph = doc.split("\n\n", 1)[0]
        return " ".join(paragraph.split())

    @property
    def parameters(self) -> list[Parameter]:
        """User-settable parameters, in signature order (engine context arguments excluded)."""
        found = []
        context = self.context_arguments
        for parameter in _signature(self.factory).parameters.values():
            if parameter.name in context or parameter.name == "self":
                continue
            if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            annotation = parameter.annotation
            if annotation is inspect.Parameter.empty:
                annotation = ""
            elif not isinstance(annotation, str):
                annotation = getattr(annotation, "__name__", str(annotation))
            found.append(Parameter(parameter.name, parameter.default, annotation))
        return found

    @property
    def context_arguments(self) -> set[str]:
        """Keyword-only arguments without a default whose names are in ``CONTEXT_ARGUMENTS``."""
        return {
            parameter.name
            for parameter in _signature(self.factory).parameters.values()
            if parameter.name in CONTEXT_ARGUMENTS
            and parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is inspect.Parameter.empty
        }


def _signature(factory: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class Registry:
    """Components by kind and name; plugins fill it through ``register``."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        # Plugins that failed to import or to register, as (package, error) pairs.
        self.failures: list[tuple[str, str]] = []

    def register(
        self, kind: str, name: str, factory: Callable[..., Any], *, package: str, version: str
    ) -> None:
        """Add ``factory`` as component ``name`` of ``kind``; a second registration is an error."""
        if kind not in KINDS:
            raise PluginError(
                f"plugin package '{package}' registered '{name}' under unknown kind '{kind}'; "
                f"valid kinds: {', '.join(KINDS)}"
            )
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise PluginError(
                f"plugin package '{package}' registered the invalid {kind} name '{name}'; "
                "names are lower case letters, digits and underscores"
            )
        if not callable(factory):
            raise PluginError(f"plugin package '{package}' registered {kind} '{name}' with a non-callable factory")
        key = (kind, name)
        if key in self._entries:
            first = self._entries[key]
            raise PluginError(
                f"{kind} '{name}' is registered by two plugin packages: '{first.package}' and "
                f"'{package}'; uninstall one of them or ask its author to rename the component"
            )
        self._entries[key] = Entry(kind, name, factory, package, version)

    def get(self, kind: str, name: str) -> Entry:
        """Return the entry for ``kind``/``name`` or raise an error listing the closest names."""
        if kind not in KINDS:
            close = difflib.get_close_matches(kind, list(KINDS), n=3)
            hint = f"; did you mean {_quoted(close)}?" if close else ""
            raise UnknownComponentError(f"unknown component kind '{kind}'{hint} Valid kinds: {', '.join(KINDS)}")
        entry = self._entries.get((kind, name))
        if entry is not None:
            return entry
        names = self.names(kind)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        message = f"unknown {kind.replace('_', ' ')} '{name}'"
        if close:
            message += f"; did you mean {_quoted(close)}?"
        else:
            message += f"; registered: {', '.join(names) or 'none'}."
        message += f" `toolkit list --kind {kind}` shows all."
        if self.failures:
            failed = "; ".join(f"'{package}' ({error})" for package, error in self.failures)
            message += f" These plugin packages failed to load and may provide it: {failed}"
        raise UnknownComponentError(message)

    def names(self, kind: str) -> list[str]:
        return sorted((name for (k, name) in self._entries if k == kind), key=_natural_key)

    def entries(self, pattern: str = "*", kind: str | None = None) -> Iterator[Entry]:
        """Yield entries whose name matches the shell wildcard ``pattern``, grouped by kind."""
        for each_kind in KINDS:
            if kind is not None and each_kind != kind:
                continue
            for name in self.names(each_kind):
                if fnmatch.fnmatchcase(name, pattern):
                    yield self._entries[(each_kind, name)]

    def check_parameters(self, kind: str, name: str, params: dict[str, Any]) -> Entry:
        """Raise a RecipeError if ``params`` has an unknown or missing parameter of the component."""
        entry = self.get(kind, name)
        known = {parameter.name: parameter for parameter in entry.parameters}
        for key in params:
            if key in entry.context_arguments:
                raise RecipeError(
                    f"{kind} '{name}': parameter '{key}' is set by the engine from the data and the prior; "
                    "remove it from the recipe"
                )
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
                hint = f"did you mean {_quoted(close)}? " if close else ""
                raise RecipeError(
                    f"{kind} '{name}' has no parameter '{key}'; {hint}"
                    f"its parameters are: {', '.join(known) or 'none'}"
                )
        missing = [p.name for p in known.values() if p.required and p.name not in params]
        if missing:
            raise RecipeError(f"{kind} '{name}' needs the parameter(s) {', '.join(missing)}; set them in the recipe")
        return entry

    def build(self, kind: str, name: str, params: dict[str, Any], **context: Any) -> Any:
        """Call the factory with the recipe's ``params`` and the context arguments it declares."""
        entry = self.check_parameters(kind, name, params)
        declared = {key: value for key, value in context.items() if key in entry.context_arguments}
        try:
            return entry.factory(**params, **declared)
        except ValueError as error:
            raise RecipeError(f"invalid settings for {kind} '{name}': {error}") from None


def _quoted(names: list[str]) -> str:
    return " or ".join(f"'{name}'" for name in names)
