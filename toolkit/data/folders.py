"""Unpaired domain folders (ROOT/trainA, ROOT/trainB, ...) and the augmented images drawn from them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from toolkit.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Errors PIL raises for a file it cannot identify or decode (a truncated JPEG raises OSError).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# Maximum unreadable files per domain folder that the log names one by one. The rest are only counted.
_MAX_NAMED_SKIPS = 10

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def image_shape(size: int | Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """Return (height, width) for an int side or a (height, width) pair."""
    if isinstance(size, int) and not isinstance(size, bool):
        sides = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(side, int) for side in size):
        sides = (size[0], size[1])
    else:
        raise DataError(f"{name} must be an int or a (height, width) pair of ints, got {size!r}")
    if min(sides) < 1:
        raise DataError(f"{name} {size!r} is invalid: each side must be a positive number of pixels")
    return sides


def default_load_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Return the resize target R for crop size S: each side S * 256 / 216, rounded to an even number.

    This keeps the CycleGAN/DRIT ratio of 256-pixel images cropped to 216 (108 -> 128).
    """
    height, width = image_shape(image_size)
    return (2 * round(height * 256 / 216 / 2), 2 * round(width * 256 / 216 / 2))


class DomainFolders:
    """The image files of one split of an unpaired multi-domain folder.

    Domain ``k`` is the folder ``ROOT/<split><domains[k]>``, in alphabetical order of the
    folder names, so ``trainA`` is label 0 and ``trainB`` label 1. ``files[k]`` lists its
    readable images, sorted by file name. Subfolders of a domain folder are not searched.
    """

    def __init__(self, root: Path, split: str, domains: list[str], files: list[list[Path]]) -> None:
        self.root = root
        self.split = split
        self.domains = domains
        self.files = files

    @classmethod
    def open(cls, root: str | Path, split: str = "train") -> DomainFolders:
        """List the domain folders ``ROOT/<split>*`` and their images.

        Only the header of each file is read here. A file PIL cannot identify is skipped
        with a warning. Raises DataError for a missing root, fewer than two domain
        folders, or a domain folder without a readable image.
        """
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(
                f"data folder '{root}' not found; expected a folder with one subfolder of images per domain "
                f"({split}A/, {split}B/, ..., the CycleGAN layout). "
                "`--data` also takes a dataset name such as 'apple2orange' (`toolkit list --kind dataset` shows all)"
            )

        folders = sorted(
            path for path in root.iterdir() if path.is_dir() and path.name.startswith(split) and path.name != split
        )
        if len(folders) < 2:
            if folders:
                found = f"only one domain folder, '{folders[0].name}/'"
            else:
                contents = sorted(path.name for path in root.iterdir())
                found = f"no '{split}*' folder (it contains: {', '.join(contents[:10]) or 'nothing'})"
            raise DataError(
                f"data folder '{root}' has {found}; unpaired translation needs at least two domain folders "
                f"such as {split}A/ and {split}B/"
            )

        domains = [folder.name[len(split) :] for folder in folders]
        files = [_list_images(folder) for folder in folders]
        return cls(root, split, domains, files)

    @property
    def domain_sizes(self) -> list[int]:
        return [len(paths) for paths in self.files]

    def folder(self, domain: int) -> Path:
        """Return the folder of domain label ``domain``."""
        return self.root / f"{self.split}{self.domains[domain]}"

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}: {size}" for name, size in zip(self.domains, self.domain_sizes))
        return f"DomainFolders('{self.root}', split={self.split!r}, {sizes})"


def _list_images(folder: Path) -> list[Path]:
    candidates = sorted(
        path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )
    readable = []
    skipped = 0
    for path in candidates:
        try:
            # Image.open reads the header only; pixels are decoded at load time.
            with Image.open(path):
                pass
        except IMAGE_ERRORS as error:
            skipped += 1
            if skipped <= _MAX_NAMED_SKIPS:
                log.warning("skipping '%s': not a readable image (%s)", path, error)
            continue
        readable.append(path)
    if skipped > _MAX_NAMED_SKIPS:
        log.warning("skipped %d unreadable files in '%s' in total", skipped, folder)

    if not readable:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        detail = f"{len(candidates)} image files, none readable" if candidates else "no image files"
        raise DataError(
            f"domain folder '{folder}' contains no readable image ({detail}; extensions: {extensions}); "
            "add images or remove the folder"
        )
    return readable


def load_rgb(path: Path) -> Image.Image:
    """Decode an image file fully and convert it to 8-bit RGB (alpha is dropped)."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            # 16-bit grayscale: PIL's convert would clip values above 255 instead of scaling them.
            pixels = np.asarray(image, dtype=np.float64) / 257.0
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
        elif image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return image.convert("RGB")


class DomainImageDataset(Dataset):
    """Augmented training images of unpaired domains, keyed by ``(domain, index, seed)``.

    An item is image ``index`` of domain label ``domain``, resized to ``load_size``
    (R_h, R_w) without keeping the aspect ratio, cropped to ``image_size`` (H, W) and,
    if ``flip``, mirrored left-right with probability 0.5. Crop offsets and the flip are
    drawn from ``torch.Generator().manual_seed(seed)``, so an item is a pure function of
    its key in any worker process. ``crop="center"`` takes the central window instead.

    Returns ``(image, domain)``: a float32 tensor (3, H, W) in [-1, 1] and the int label.
    A file that fails to decode is logged once per process and replaced by the next
    readable image of the same domain, transformed with the same seed.
    """

    def __init__(
        self,
        folders: DomainFolders,
        image_size: int | Sequence[int],
        load_size: int | Sequence[int] | None = None,
        flip: bool = True,
        interpolation: str = "bicubic",
        crop: str = "random",
    ) -> None:
        self.folders = folders
        self.image_size = image_shape(image_size)
        self.load_size = default_load_size(image_size) if load_size is None else image_shape(load_size, "load_size")
        if self.load_size[0] < self.image_size[0] or self.load_size[1] < self.image_size[1]:
            raise DataError(
                f"load_size {self.load_size} is smaller than image_size {self.image_size}; "
                "images are resized to load_size and then cropped, so each side must be at least the crop's"
            )
        if interpolation not in INTERPOLATIONS:
            raise DataError(f"interpolation '{interpolation}' is not supported; use one of: {', '.join(INTERPOLATIONS)}")
        if crop not in ("random", "center"):
            raise DataError(f"crop '{crop}' is not supported; use 'random' or 'center'")
        self.flip = flip
        self.interpolation = interpolation
        self.crop = crop
        self._broken: set[Path] = set()

    @property
    def domains(self) -> list[str]:
        return self.folders.domains

    @property
    def domain_sizes(self) -> list[int]:
        return self.folders.domain_sizes

    def __len__(self) -> int:
        return sum(self.domain_sizes)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        domain, index, seed = key
        paths = self.folders.files[domain]
        if not 0 <= index < len(paths):
            raise IndexError(f"image index {index} is out of range for domain {domain} with {len(paths)} images")
        # Try the requested file, then the following ones of the same domain, so a broken
        # file always maps to the same replacement.
        for step in range(len(paths)):
            path = paths[(index + step) % len(paths)]
            if path in self._broken:
                continue
            try:
                image = load_rgb(path)
            except IMAGE_ERRORS as error:
                self._broken.add(path)
                log.warning("failed to decode '%s' (%s); using another image of the same domain instead", path, error)
                continue
            return self._transform(image, seed), domain
        raise DataError(f"no image in domain folder '{self.folders.folder(domain)}' can be decoded")

    def _transform(self, image: Image.Image, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        load_height, load_width = self.load_size
        height, width = self.image_size

        # Draw every random number whatever the options, so a crop does not depend on `flip`.
        top = int(torch.randint(load_height - height + 1, (1,), generator=generator))
        left = int(torch.randint(load_width - width + 1, (1,), generator=generator))
        mirror = bool(torch.rand((), generator=generator) < 0.5) and self.flip
        if self.crop == "center":
            top = (load_height - height) // 2
            left = (load_width - width) // 2

        image = image.resize((load_width, load_height), INTERPOLATIONS[self.interpolation])
        image = image.crop((left, top, left + width, top + height))
        if mirror:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

        return to_tensor(image)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert an RGB image to a float32 tensor (3, H, W) in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return pixels.to(torch.float32) / 127.5 - 1.0


def center_view(
    image: Image.Image, image_size: int | Sequence[int], load_size: int | Sequence[int] | None = None
) -> torch.Tensor:
    """Return the test-time view of ``image``: resized to ``load_size`` (bicubic), centre-cropped to ``image_size``.

    ``load_size`` defaults to :func:`default_load_size`, as in training, so the view has the
    scale the model was trained on. Returns a float32 tensor (3, H, W) in [-1, 1].
    """
    height, width = image_shape(image_size)
    load_height, load_width = default_load_size(image_size) if load_size is None else image_shape(load_size, "load_size")
    top = (load_height - height) // 2
    left = (load_width - width) // 2
    image = image.resize((load_width, load_height), INTERPOLATIONS["bicubic"])
    return to_tensor(image.crop((left, top, left + width, top + height)))
