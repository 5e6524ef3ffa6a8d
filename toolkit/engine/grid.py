"""Image grids that show what a model does with one batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from toolkit.engine.context import Translations

GRID_COLUMNS = ("input", "cross translation", "random attribute", "self reconstruction", "cross-cycle")
# Column headings drawn above the grid, short enough for 64-pixel tiles.
GRID_HEADINGS = ("input", "cross", "random", "self", "cycle")
HEADING_HEIGHT = 14


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
    """Write a training grid (rows of ``GRID_COLUMNS``, images in [-1, 1]) as a PNG under its column headings."""
    save_image_grid(images, path, columns=len(GRID_COLUMNS), headings=GRID_HEADINGS)


def save_image_grid(images: torch.Tensor, path: Path, columns: int, headings: Sequence[str] = ()) -> None:
    """Write images (N, 3, H, W) in [-1, 1] as a PNG grid of ``columns`` columns, under optional column headings."""
    import torchvision.utils  # imported here: torchvision adds seconds to every command's start-up
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    padding = 2
    grid = torchvision.utils.make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=columns, padding=padding)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    body = Image.fromarray(pixels)
    if not headings:
        body.save(path)
        return

    canvas = Image.new("RGB", (body.width, body.height + HEADING_HEIGHT), "white")
    canvas.paste(body, (0, HEADING_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    tile = images.shape[-1] + padding
    for column, heading in enumerate(headings):
        width = draw.textlength(heading)
        draw.text((padding + column * tile + (tile - padding - width) / 2, 1), heading, fill="black")
    canvas.save(path)


def save_image(image: torch.Tensor, path: Path) -> None:
    """Write one image (3, H, W) in [-1, 1] as a PNG (or the format of the file suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).add_(0.5).clamp_(0, 255).to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path)
