"""Run folders: recipe overrides from the command line, the run record, device choice and resume."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from pathlib import Path
from typing import Any

import attrs
import torch

from toolkit import __version__
from toolkit.data import resolve_data
from toolkit.engine import distributed
from toolkit.engine.checkpoint import latest_checkpoint
from toolkit.engine.trainer import Trainer
from toolkit.errors import RecipeError, ToolkitError
from toolkit.recipe import MEMORY_OPTIONS, Component, Recipe, load_recipe
from toolkit.registry import Registry

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
# Recipe fields that may change when a run is resumed: they set its length, arithmetic and
# logging, not the model.
RESUMABLE_CHANGES = frozenset(
    {
        "name",
        "iterations",
        "precision",
        "activation_checkpointing",
        "channels_last",
        "log_every",
        "grid_every",
        "plot_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
    }
)


@attrs.frozen
class Overrides:
    """Command-line options that replace recipe fields (None: keep the recipe's value)."""

    data: str | None = None
    iterations: int | None = None
    batch_size: int | None = None
    image_size: int | tuple[int, int] | None = None
    seed: int | None = None
    precision: str | None = None
    activation_checkpointing: bool | None = None
    channels_last: bool | None = None

    def to_json(self) -> dict[str, Any]:
        values = attrs.asdict(self)
        if isinstance(values["image_size"], tuple):
            values["image_size"] = list(values["image_size"])
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Overrides:
        values = dict(values)
        if isinstance(values.get("image_size"), list):
            values["image_size"] = tuple(values["image_size"])
        return cls(**{key: values.get(key) for key in attrs.fields_dict(cls)})

    def merged_over(self, earlier: Overrides) -> Overrides:
        """Return these overrides, with ``earlier`` filling the options not given now."""
        changes = {key: value for key, value in attrs.asdict(self).items() if value is not None}
        return attrs.evolve(earlier, **changes)

    def apply(self, recipe: Recipe, registry: Registry) -> Recipe:
        changes: dict[str, Any] = {}
        for key, value in attrs.asdict(self).items():
            if key != "data" and value is not None:
                changes[key] = value
        if self.data is not None:
            changes["data"] = data_component(self.data, recipe.data, registry)
        return recipe.evolve(**changes)


def data_component(value: str, current: Component, registry: Registry) -> Component:
    """Turn ``--data`` (a folder or a registered dataset name) into a dataset component.

    Parameters of the recipe's dataset that the new one also accepts (e.g. ``flip``) carry over.
    """
    names = registry.names("dataset")
    if value in names and not Path(value).is_dir():
        name, params = value, {}
    else:
        if not Path(value).expanduser().is_dir():
            resolve_data(value)  # raises DataError, suggesting the closest dataset names
        name, params = "folders", {"root": str(Path(value).expanduser().resolve())}
    accepted = {parameter.name for parameter in registry.get("dataset", name).parameters}
    carried = {key: item for key, item in current.params if key in accepted and key != "root"}
    return Component("dataset", name, {**carried, **params})


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device that exists here."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ToolkitError(f"invalid device '{spec}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ToolkitError(
                f"device '{spec}' requested but PyTorch {torch.__version__} sees no CUDA GPU; "
                "use --device cpu or --device auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ToolkitError(
                f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif device.type != "cpu":
        raise ToolkitError(f"device '{spec}' is not supported; use auto, cpu, cuda or cuda:N")
    return device


def claim_run_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    """Create and return a new folder ``root/<recipe>/<timestamp>``, adding a suffix if another run has that name.

    The folder is created here, with ``exist_ok=False``, so two runs started in the same
    second cannot share it.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (root / recipe_name).mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        candidate = root / recipe_name / (stamp if suffix == 1 else f"{stamp}-{suffix}")
        try:
            candidate.mkdir()
        except FileExistsError:
            suffix += 1
            continue
        return candidate


def _check_new_run_folder(run_dir: Path) -> None:
    if latest_checkpoint(run_dir) is not None:
        raise ToolkitError(
            f"output folder {run_dir} already contains a run with checkpoints; "
            f"pass --resume {run_dir} to continue it, or choose another --out"
        )
    leftovers = [name for name in (RUN_RECORD, "losses.csv", "run.log") if (run_dir / name).exists()]
    if leftovers:
        raise ToolkitError(
            f"output folder {run_dir} contains files of an earlier run that stopped before its first checkpoint "
            f"({', '.join(leftovers)}); delete the folder or choose another --out"
        )


@attrs.define
class PreparedRun:
    """A validated recipe with its run folder and trainer, ready to ``train()``."""

    recipe: Recipe
    run_dir: Path
    trainer: Trainer
    record: dict[str, Any]
    resumed: bool

    def write_record(self) -> None:
        """Write ``run.json`` into the run folder (on rank 0 only under torchrun)."""
        if not distributed.is_main():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / RUN_RECORD
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.record, indent=2) + "\n")
        temporary.replace(path)


def prepare_run(
    recipe_file: str | Path,
    registry: Registry,
    overrides: Overrides = Overrides(),
    device: str = "auto",
    out: Path | None = None,
    resume: Path | None = None,
    command: list[str] | None = None,
) -> PreparedRun:
    """Load and validate a recipe, apply overrides, build the trainer and, for ``resume``, load its checkpoint.

    Nothing is written until :meth:`PreparedRun.write_record` or training starts, except
    the new run folder when neither ``out`` nor ``resume`` is given. Under torchrun this
    also joins the process group (see :func:`toolkit.engine.distributed.setup`); every
    rank calls it with the same arguments and rank 0 claims the run folder for all.
    """
    command = list(sys.argv) if command is None else command
    recipe = load_recipe(recipe_file)
    # Under torchrun every rank reads the run folder here. That is safe because rank 0
    # writes to it only after the collectives in Trainer, which every rank reaches later.
    previous: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        previous = read_run_record(run_dir)
        overrides = overrides.merged_over(Overrides.from_json(previous.get("overrides", {})))
    elif out is not None:
        run_dir = Path(out)
        _check_new_run_folder(run_dir)
    else:
        run_dir = None

    recipe = overrides.apply(recipe, registry)
    recipe.validate(registry)
    resolved = recipe.resolved(registry)
    if previous is not None:
        _check_same_model(previous.get("recipe", {}), resolved, run_dir)
    torch_device = distributed.setup(resolve_device(device))

    claimed = run_dir is None
    if claimed:
        run_dir = distributed.share_from_main(lambda: claim_run_dir(recipe.name or Path(recipe_file).stem))
    try:
        trainer = Trainer(recipe, registry, run_dir, torch_device)
        if previous is not None:
            trainer.resume()
            _check_resumable(trainer, previous, recipe)
    except BaseException:
        if claimed and distributed.is_main() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise

    record = {
        "name": recipe.name,
        "recipe_file": str(Path(recipe_file).resolve()),
        "toolkit_version": __version__,
        "torch_version": torch.__version__,
        "seed": recipe.seed,
        "device": str(torch_device),
        "precision": trainer.precision,
        "world_size": trainer.world_size,
        "command": (previous or {}).get("command", command),
        "commands": (previous or {}).get("commands", []) + [command],
        "overrides": overrides.to_json(),
        "domains": list(trainer.data.domains),
        "data_root": str(trainer.data.root),
        "recipe": resolved,
        "created": (previous or {}).get("created", datetime.datetime.now().isoformat(timespec="seconds")),
    }
    return PreparedRun(recipe, run_dir, trainer, record, resumed=previous is not None)


def _check_resumable(trainer: Trainer, previous: dict[str, Any], recipe: Recipe) -> None:
    if trainer.iteration >= recipe.iterations:
        raise ToolkitError(
            f"run {trainer.run_dir} is already at iteration {trainer.iteration}; "
            f"pass --iterations greater than {trainer.iteration} to train further"
        )
    if not distributed.is_main():
        return  # the warnings below are the same on every rank
    earlier_world_size = previous.get("world_size", 1)
    if earlier_world_size != trainer.world_size:
        log.warning(
            "the run was trained with %d process(es) and now continues with %d: an iteration now trains on "
            "%d images instead of %d, and ranks that the checkpoint holds no random state for start new random "
            "streams, so the run differs from one that kept its number of processes",
            earlier_world_size,
            trainer.world_size,
            trainer.world_size * recipe.batch_size,
            earlier_world_size * recipe.batch_size,
        )
    earlier_recipe = previous.get("recipe", {})
    for field in ("precision", *MEMORY_OPTIONS):
        if field in earlier_recipe and earlier_recipe[field] != getattr(recipe, field):
            log.info("%s changes from %s to %s on resume", field, earlier_recipe[field], getattr(recipe, field))
    earlier_total = earlier_recipe.get("iterations")
    if earlier_total is not None and earlier_total != recipe.iterations:
        log.warning(
            "the run was planned for %d iterations and now continues to %d: the learning-rate schedule "
            "is recomputed for %d iterations from here on, so it is not the schedule of an uninterrupted run",
            earlier_total,
            recipe.iterations,
            recipe.iterations,
        )


def read_run_record(run_dir: Path, action: str = "resume") -> dict[str, Any]:
    """Read ``run.json`` of a run folder; a missing folder or record raises an error naming the folder to pass.

    ``action`` names what the caller does with the run ("resume", "load"), for the messages.
    """
    if not run_dir.is_dir():
        raise ToolkitError(f"cannot {action} {run_dir}: folder not found; pass the folder that `toolkit run` printed")
    path = run_dir / RUN_RECORD
    if not path.is_file():
        raise ToolkitError(
            f"cannot {action} {run_dir}: {RUN_RECORD} not found, so it is not a run folder; "
            "pass the folder that `toolkit run` printed"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ToolkitError(f"cannot {action} {run_dir}: {path} is not valid JSON ({error})") from None


def _check_same_model(previous: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    changes = []
    for key in sorted(set(previous) | set(current)):
        if key not in RESUMABLE_CHANGES:
            changes += _differences(previous.get(key), current.get(key), key)
    if changes:
        shown = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
        raise RecipeError(
            f"cannot resume {run_dir} with a different recipe ({shown}); only the number of iterations, the "
            "precision and the logging intervals may change. Drop the options that change these fields (the run's "
            "own settings are in its run.json), or start a new run"
        )


def _differences(before: Any, after: Any, path: str) -> list[str]:
    """List ``path: before -> after`` for each leaf that differs between two JSON-like values."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            found += _differences(before.get(key), after.get(key), f"{path}.{key}")
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        if all(isinstance(item, dict) for item in before + after):
            found = []
            for index, (old, new) in enumerate(zip(before, after)):
                found += _differences(old, new, f"{path}[{index}]")
            return found
    if isinstance(before, list) and isinstance(after, list) and all(isinstance(i, dict) for i in before + after):
        return [f"{path}: {[i.get('name') for i in before]} -> {[i.get('name') for i in after]}"]
    if before != after:
        return [f"{path}: {before!r} -> {after!r}"]
    return []
