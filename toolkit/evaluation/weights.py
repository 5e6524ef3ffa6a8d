"""Locate and load the pretrained weights files that FID/KID and LPIPS need, without downloading.

A file comes from a path the user passes or from torch.hub's checkpoint folder
(``torch.hub.get_dir()/checkpoints``, which follows TORCH_HOME), where torchvision stores
the files it downloads. Nothing here downloads: a missing file raises MissingWeightsError
with the command that fetches it on purpose.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from toolkit.errors import ToolkitError

# torchvision's file for Inception_V3_Weights.IMAGENET1K_V1, its port of the Inception-v3 paper's weights.
INCEPTION_WEIGHTS = "inception_v3_google-0cc3c7bd.pth"
# torchvision's file for AlexNet_Weights.IMAGENET1K_V1, the LPIPS backbone.
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
# The LPIPS v0.1 linear layers for AlexNet, shipped in the lpips package as lpips/weights/v0.1/alex.pth.
LPIPS_WEIGHTS = "alex.pth"

_HOW_TO_GET = {
    INCEPTION_WEIGHTS: (
        "torchvision downloads it into that folder when you run once: python -c "
        '"from torchvision.models import inception_v3, Inception_V3_Weights; '
        'inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1)"'
    ),
    ALEXNET_WEIGHTS: (
        "torchvision downloads it into that folder when you run once: python -c "
        '"from torchvision.models import alexnet, AlexNet_Weights; alexnet(weights=AlexNet_Weights.IMAGENET1K_V1)"'
    ),
    LPIPS_WEIGHTS: (
        "the lpips package (pip install lpips) ships it as lpips/weights/v0.1/alex.pth; "
        "copy that file into that folder"
    ),
}


class MissingWeightsError(ToolkitError):
    """A pretrained weights file was not found at the given path or in torch.hub's checkpoint folder."""


class InvalidWeightsError(ToolkitError):
    """A weights file could not be read or does not match the network it is loaded into."""


def checkpoint_folder() -> Path:
    """Return torch.hub's checkpoint folder, where torchvision stores downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(path: str | Path | None, file_name: str, what: str, *, option: str | None = None) -> Path:
    """Return the path of a weights file: ``path`` when given, else ``file_name`` in torch.hub's checkpoint folder.

    ``what`` names the weights in messages ("Inception-v3 weights"), and ``option`` names
    the command-line option or argument that passes a path. Raises MissingWeightsError
    when the file does not exist. Never downloads.
    """
    pass_it = f"pass its path with {option}" if option else "pass its path"

    if path is not None:
        requested = Path(path).expanduser()
        if requested.is_file():
            return requested
        reason = "is a folder, not a file" if requested.is_dir() else "does not exist"
        raise MissingWeightsError(f"{what} file {requested} {reason}; {pass_it} to the file {file_name}")

    folder = checkpoint_folder()
    candidate = folder / file_name
    if candidate.is_file():
        return candidate

    how_to_get = _HOW_TO_GET.get(file_name, "download it yourself and put it in that folder")
    raise MissingWeightsError(
        f"{what} file {file_name} not found in torch.hub's checkpoint folder {folder} "
        f"(set TORCH_HOME to search another folder). The toolkit never downloads weights. "
        f"To get the file, {how_to_get}. Or {pass_it}."
    )


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict saved with torch.save from ``path`` with ``weights_only=True``, on the CPU.

    Raises InvalidWeightsError naming the file when it cannot be unpickled safely or is
    not a mapping of names to tensors.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # A damaged file can fail inside the unpickler with almost any exception (a KeyError
    # for a text file), so every failure to load is reported as an invalid file.
    except Exception as error:
        raise InvalidWeightsError(
            f"{what} file {path} could not be read as a PyTorch state dict ({error}); "
            f"pass a file saved with torch.save(model.state_dict(), path)"
        ) from error

    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise InvalidWeightsError(
            f"{what} file {path} contains a {type(state).__name__}, not a state dict of tensors; "
            f"pass a file saved with torch.save(model.state_dict(), path)"
        )
    return state


def _first(keys: list[str], count: int = 5) -> str:
    """Join the first ``count`` keys with commas and add how many more there are."""
    listed = ", ".join(keys[:count])
    if len(keys) > count:
        listed += f" and {len(keys) - count} more"
    return listed


def load_weights(module: nn.Module, path: str | Path, what: str) -> None:
    """Load the state dict in ``path`` into ``module``, requiring exactly the module's keys and shapes.

    The file's CPU tensors replace the module's tensors (``assign=True``), so the module may
    be built on the meta device to skip its random initialisation, provided it has no
    non-persistent buffers (Inception-v3 and AlexNet have none). Afterwards it is on the CPU.
    Raises InvalidWeightsError naming the file and the first missing, unexpected or
    mis-shaped keys.
    """
    state = read_state_dict(path, what)
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing keys {_first(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_first(unexpected)}")
        raise InvalidWeightsError(
            f"{what} file {path} does not match the network: {'; '.join(problems)}. Pass the right file for {what}"
        )

    mismatched = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if state[key].shape != value.shape
    ]
    if mismatched:
        raise InvalidWeightsError(
            f"{what} file {path} has tensors of the wrong shape: {_first(mismatched)}. Pass the right file for {what}"
        )

    module.load_state_dict(state, assign=True)
