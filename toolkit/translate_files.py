"""Translate image files with a trained run and write the outputs and one grid per input (``toolkit translate``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch

from toolkit.data.folders import IMAGE_EXTENSIONS
from toolkit.engine.grid import save_image, save_image_grid
from toolkit.errors import DataError, ToolkitError
from toolkit.translation import TrainedRun

log = logging.getLogger(__name__)


@attrs.frozen
class TranslationRequest:
    """The outputs to make for each input: prior samples, a reference's attribute, or an interpolation strip.

    ``samples`` outputs with attributes from the prior (the default); with ``references``
    and no ``interpolate``, one output with the first reference's attribute; with
    ``interpolate`` = N, a strip of N outputs between two attributes: the references'
    (one or two), with the prior drawing the missing end points.
    """

    to: str | int
    samples: int | None = None
    references: tuple[Path, ...] = ()
    interpolate: int | None = None
    seed: int = 0
    image_size: int | tuple[int, int] | None = None

    def check(self) -> None:
        if len(self.references) > 2:
            raise ToolkitError(f"got {len(self.references)} --reference images; pass one, or two with --interpolate")
        if len(self.references) == 2 and self.interpolate is None:
            raise ToolkitError("two --reference images need --interpolate N (the strip runs from the first to the second)")
        if self.samples is not None and (self.references or self.interpolate is not None):
            raise ToolkitError(
                "--samples draws attributes from the prior; it does not combine with --reference or --interpolate "
                "(leave --samples out there)"
            )


def list_inputs(path: Path) -> list[Path]:
    """Return the image file ``path``, or the image files of the folder ``path`` in name order."""
    path = path.expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(item for item in path.iterdir() if item.is_file() and item.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"input folder '{path}' contains no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return files
    raise DataError(f"input '{path}' not found; pass an image file or a folder of images")


def translate_files(run: TrainedRun, inputs: Sequence[Path], request: TranslationRequest, out: Path) -> list[Path]:
    """Translate each input file as ``request`` specifies; write ``out/<stem>/<k>.png`` and ``out/<stem>_grid.png``.

    A file that cannot be read is skipped with a warning, unless it is the only input.
    Returns the grid paths.
    """
    request.check()
    target = run.domain_index(request.to)
    references = run.load_images(request.references, request.image_size) if request.references else None
    grids = []
    stems: set[str] = set()
    for path in inputs:
        try:
            image = run.load_images([path], request.image_size)
        except DataError as error:
            if len(inputs) == 1:
                raise
            log.warning("skipping an unreadable input: %s", error)
            continue
        outputs, mode, headings = _translate_one(run, image, target, references, request)
        stem = _unique(path.stem, stems)
        for index, output in enumerate(outputs):
            save_image(output, out / stem / f"{run.domains[target]}_{index:02d}.png")
        tiles = [image[0]] + ([references[0]] if mode == "reference" else []) + list(outputs)
        grid = out / f"{stem}_grid.png"
        save_image_grid(torch.stack(tiles).cpu(), grid, columns=len(tiles), headings=headings)
        grids.append(grid)
    if not grids:
        raise DataError(f"none of the {len(inputs)} input images could be read")
    log.info("wrote %d grid(s) and their images to %s", len(grids), out)
    return grids


def _translate_one(
    run: TrainedRun, image: torch.Tensor, target: int, references: torch.Tensor | None, request: TranslationRequest
) -> tuple[torch.Tensor, str, list[str]]:
    domain = run.domains[target]
    if request.interpolate is not None:
        ends = [run.reference_attributes(references[k : k + 1], target) for k in range(len(references))] if references is not None else []
        start, end = (ends + [None, None])[:2]
        strip = run.interpolate(image, target, request.interpolate, start=start, end=end, seed=request.seed)[0]
        headings = ["input"] + [f"{domain}_{k:02d}" for k in range(request.interpolate)]
        headings[1] = "reference 1" if start is not None else "prior"
        headings[-1] = f"reference {len(ends)}" if end is not None else "prior"
        return strip, "strip", headings
    if references is not None:
        output = run.translate_like(image, references[:1], target, seed=request.seed)
        return output, "reference", ["input", "reference", f"to {domain}"]
    samples = request.samples or 1
    outputs = run.translate(image, target, samples=samples, seed=request.seed)[0]
    return outputs, "samples", ["input"] + [f"{domain}_{k:02d}" for k in range(samples)]


def _unique(stem: str, used: set[str]) -> str:
    name, suffix = stem, 2
    while name in used:
        name = f"{stem}-{suffix}"
        suffix += 1
    used.add(name)
    return name

