"""Dataset components: unpaired domain folders on disk and the named public datasets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from toolkit.data.download import DATASETS, fetch_dataset
from toolkit.data.folders import DomainFolders, DomainImageDataset
from toolkit.errors import DataError
from toolkit.hookspecs import hookimpl

# One line per named dataset for `toolkit list`: what its domains contain.
_DESCRIPTIONS = {
    "apple2orange": "photos of apples (A) and oranges (B) from ImageNet",
    "summer2winter_yosemite": "Yosemite landscape photos in summer and in winter",
    "horse2zebra": "photos of horses (A) and zebras (B) from ImageNet",
    "monet2photo": "Monet paintings and landscape photos",
    "cezanne2photo": "Cezanne paintings and landscape photos",
    "ukiyoe2photo": "ukiyo-e prints and landscape photos",
    "vangogh2photo": "Van Gogh paintings and landscape photos",
    "iphone2dslr_flower": "flower photos from an iPhone and from a DSLR with shallow depth of field",
    "maps": "aerial photos and Google Maps renderings",
    "facades": "building facade photos and their label maps (CMP Facades)",
    "cityscapes": "street photos and their semantic label maps (Cityscapes)",
    "cat2dog": "photos of cats and dogs",
}


class UnpairedImageData:
    """Unpaired multi-domain images in ``ROOT/trainA, trainB, ...`` with an optional test split.

    ``train`` yields augmented items ``(image (3, H, W) in [-1, 1], domain label)`` keyed
    by ``(domain, index, seed)``; ``domains`` are the folder suffixes in alphabetical order.
    """

    def __init__(
        self,
        root: Path,
        image_size: int | Sequence[int],
        load_size: int | Sequence[int] | None = None,
        flip: bool = True,
    ) -> None:
        self.root = root
        self.folders = DomainFolders.open(root, "train")
        self.train = DomainImageDataset(self.folders, image_size, load_size=load_size, flip=flip)

    @property
    def domains(self) -> list[str]:
        return self.folders.domains

    @property
    def domain_sizes(self) -> list[int]:
        return self.folders.domain_sizes

    def test_folders(self) -> DomainFolders | None:
        """Return the test split's folders, or None when the root has no ``test*`` folder.

        Raises DataError when the test domains differ from the training domains.
        """
        if not any(path.is_dir() and path.name.startswith("test") for path in self.root.iterdir()):
            return None
        test = DomainFolders.open(self.root, "test")
        if test.domains != self.domains:
            raise DataError(
                f"data folder '{self.root}' has training domains {self.domains} but test domains {test.domains}; "
                "give each train<domain>/ folder a matching test<domain>/ folder"
            )
        return test

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}: {size}" for name, size in zip(self.domains, self.domain_sizes))
        return f"UnpairedImageData('{self.root}', {sizes})"


def folders(
    root: str,
    load_size: int | tuple[int, int] | None = None,
    flip: bool = True,
    *,
    image_size: int | tuple[int, int],
) -> UnpairedImageData:
    """Unpaired image folders ROOT/trainA, ROOT/trainB, ...: one folder of images per domain.

    Images are resized to ``load_size`` (default: the crop * 256 / 216, rounded to an
    even number), randomly cropped to the recipe's image size and, if ``flip``,
    mirrored with probability 0.5.
    """
    return UnpairedImageData(Path(root).expanduser(), image_size, load_size=load_size, flip=flip)


def _named_dataset_factory(name: str) -> Callable[..., UnpairedImageData]:
    def factory(
        load_size: int | tuple[int, int] | None = None,
        flip: bool = True,
        *,
        image_size: int | tuple[int, int],
    ) -> UnpairedImageData:
        return UnpairedImageData(fetch_dataset(name), image_size, load_size=load_size, flip=flip)

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__doc__ = (
        f"The public '{name}' dataset: {_DESCRIPTIONS.get(name, 'unpaired image domains')}.\n\n"
        f"Downloaded on first use from {DATASETS[name]} into the dataset cache "
        "($TOOLKIT_DATA, else $XDG_CACHE_HOME/toolkit/datasets or ~/.cache/toolkit/datasets). Images are resized to ``load_size`` "
        "(default: the crop * 256 / 216, rounded to an even number), randomly cropped and, if ``flip``, mirrored."
    )
    return factory


@hookimpl
def register_components(register):
    register("dataset", "folders", folders)
    for name in DATASETS:
        register("dataset", name, _named_dataset_factory(name))
