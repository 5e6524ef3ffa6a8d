"""Image grids that show what a model does with one batch."""

from __future__ import annotations

from pathlib import Path

import torch

from toolkit.engine.context import Translations

GRID_COLUMNS = ("input", "cross translation", "random attribute", "self reconstruction", "cross-cycle")


def translation_grid(real: torch.Tensor, out: Translations) -> torch.Tensor:
    """Stack a 2x5 grid: one row per domain of the batch (its first image), columns as ``GRID_COLUMNS``.

    The cross and random-attribute translations of input i are stored at its partner's
    position (i + n) mod 2n, because they are aligned with the domain they translate into.
    """
    n = real.shape[0] // 2
    rows = []
    for index in (0, n):
        partner = (index + n) % (2 * n)
        rows += [real[index], out.cross[partner], out.random[partner], out.self_recon[index], out.cycle[index]]
    return torch.stack([image.detach().float().cpu() for image in rows])


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Write images in [-1, 1] as a PNG grid with five columns."""
    import torchvision.utils  # imported here: torchvision adds seconds to every command's start-up

    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image((images.clamp(-1, 1) + 1) / 2, path, nrow=len(GRID_COLUMNS), padding=2)
