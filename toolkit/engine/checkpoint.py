"""Checkpoints: model weights in safetensors, training state in a ``weights_only`` torch file.

Each checkpoint is a folder ``checkpoints/<iteration>/`` written under a temporary name
and renamed into place, so a crash mid-write never leaves a checkpoint that looks complete.
The state stores rank 0's RNG states under ``rng``. A run of several processes also
stores every rank's under ``rank_rng``, a list indexed by rank.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from toolkit.errors import CheckpointWriteError, ToolkitError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Capture every random number generator the training step draws from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(item) for item in value)
    return value


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and path.name.isdigit() and (path / STATE_FILE).is_file()]
    return sorted(found, key=lambda path: int(path.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    """Return the folder of the checkpoint written after ``iteration`` completed iterations."""
    return run_dir / "checkpoints" / f"{iteration:08d}"


def save_checkpoint(run_dir: Path, model: nn.Module, state: dict[str, Any], iteration: int, keep: int) -> Path:
    """Write the model weights and ``state`` for ``iteration``, then delete all but the last ``keep`` checkpoints."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(run_dir, iteration)
    temporary = folder / f".{iteration:08d}.tmp"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()

    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    try:
        safetensors.torch.save_file(weights, temporary / WEIGHTS_FILE)
        # safetensors creates the file readable by its owner only; match the state file's mode.
        os.chmod(temporary / WEIGHTS_FILE, 0o666 & ~_umask())
        torch.save({**state, "iteration": iteration}, temporary / STATE_FILE)
        _fsync_dir(temporary)
    except (OSError, RuntimeError, safetensors.SafetensorError) as error:
        shutil.rmtree(temporary, ignore_errors=True)
        latest = latest_checkpoint(run_dir)
        previous = f"last complete checkpoint, {latest}, is untouched" if latest else "run has no earlier checkpoint"
        raise CheckpointWriteError(
            f"failed to write the checkpoint for iteration {iteration} in {folder}: {error}. The {previous}. "
            "Free disk space there, or lower keep_checkpoints in the recipe, then resume the run"
        ) from error

    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    _fsync_dir(folder)

    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def load_weights(checkpoint: Path, model: nn.Module, device: torch.device | str = "cpu") -> None:
    """Load safetensors weights into ``model``; a missing or mismatched tensor is an error naming it."""
    path = checkpoint / WEIGHTS_FILE
    if not path.is_file():
        raise ToolkitError(f"checkpoint weights {path} not found; the checkpoint folder is incomplete")
    weights = safetensors.torch.load_file(path, device=str(device))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ToolkitError(
            f"checkpoint {checkpoint} does not match the recipe's model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}; resume with the recipe that made the run"
        )


def load_state(checkpoint: Path) -> dict[str, Any]:
    """Load the optimizer, scheduler and RNG state (``torch.load`` with ``weights_only=True``)."""
    path = checkpoint / STATE_FILE
    if not path.is_file():
        raise ToolkitError(f"checkpoint state {path} not found; the checkpoint folder is incomplete")
    return torch.load(path, map_location="cpu", weights_only=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
