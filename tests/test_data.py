"""Unpaired domain folders, augmented items and two-domain batches, on the real apple2orange images."""

import itertools
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.data import (
    DomainFolders,
    DomainImageDataset,
    DomainPairBatchSampler,
    default_load_size,
    iterations_per_epoch,
    make_loader,
)
from toolkit.errors import DataError


@pytest.fixture(scope="module")
def apple_folders(apple2orange):
    return DomainFolders.open(apple2orange)


@pytest.fixture(scope="module")
def horse_folders(horse2zebra_mini):
    return DomainFolders.open(horse2zebra_mini)


def reference_tensor(path, size):
    """Resize with PIL bicubic and scale to [-1, 1], independently of the dataset code."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    pixels = torch.tensor(np.array(resized), dtype=torch.float32).permute(2, 0, 1)
    return pixels / 127.5 - 1


def save_image(path, mode, size, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


# Domain folders


def test_apple2orange_domains_and_sizes(apple_folders):
    assert apple_folders.domains == ["A", "B"]
    assert apple_folders.domain_sizes == [995, 1019]


def test_test_split_sizes(apple2orange):
    test = DomainFolders.open(apple2orange, split="test")
    assert test.domains == ["A", "B"]
    assert test.domain_sizes == [266, 248]


def test_missing_root_names_path(tmp_path):
    missing = tmp_path / "no_such_data"
    with pytest.raises(DataError) as error:
        DomainFolders.open(missing)
    message = str(error.value)
    assert str(missing) in message
    assert "trainA/" in message
    assert "dataset name" in message


def test_root_with_only_train_a(tmp_path, horse_folders):
    (tmp_path / "trainA").mkdir()
    shutil.copy(horse_folders.files[0][0], tmp_path / "trainA")
    with pytest.raises(DataError) as error:
        DomainFolders.open(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "trainA/" in message
    assert "at least two" in message


def test_empty_domain_folder_raises(tmp_path, horse_folders):
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "notes.txt").write_text("not an image")
    (tmp_path / "trainB").mkdir()
    shutil.copy(horse_folders.files[1][0], tmp_path / "trainB")
    with pytest.raises(DataError) as error:
        DomainFolders.open(tmp_path)
    assert str(tmp_path / "trainA") in str(error.value)


def test_corrupt_file_skipped_with_warning(tmp_path, horse_folders, caplog):
    for name in ("trainA", "trainB"):
        (tmp_path / name).mkdir()
        shutil.copy(horse_folders.files[0][0], tmp_path / name / "good.jpg")
    (tmp_path / "trainA" / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(4096))

    with caplog.at_level(logging.WARNING, logger="toolkit.data"):
        folders = DomainFolders.open(tmp_path)

    assert folders.files[0] == [tmp_path / "trainA" / "good.jpg"]
    assert "broken.jpg" in caplog.text


def test_domain_of_only_corrupt_files_raises(tmp_path, horse_folders):
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "broken.png").write_bytes(b"\x00" * 100)
    (tmp_path / "trainB").mkdir()
    shutil.copy(horse_folders.files[1][0], tmp_path / "trainB")
    with pytest.raises(DataError) as error:
        DomainFolders.open(tmp_path)
    assert str(tmp_path / "trainA") in str(error.value)


def test_extensions_case_insensitive(tmp_path):
    save_image(tmp_path / "trainA" / "upper.JPG", "RGB", (8, 8), (1, 2, 3))
    save_image(tmp_path / "trainA" / "photo.Png", "RGB", (8, 8), (1, 2, 3))
    (tmp_path / "trainA" / "readme.md").write_text("ignored")
    save_image(tmp_path / "trainB" / "b.webp", "RGB", (8, 8), (1, 2, 3))
    folders = DomainFolders.open(tmp_path)
    assert [path.name for path in folders.files[0]] == ["photo.Png", "upper.JPG"]
    assert folders.domain_sizes == [2, 1]


# Items


def test_item_shape_and_range(apple_folders):
    dataset = DomainImageDataset(apple_folders, 108)
    image, label = dataset[(1, 17, 3)]
    assert image.shape == (3, 108, 108)
    assert image.dtype == torch.float32
    assert image.min() >= -1
    assert image.max() <= 1
    assert label == 1


def test_default_load_size_ratio():
    # 256 / 216 of each side, rounded to an even number: 108 -> 128, 64 -> 75.9 -> 76, 96 -> 113.8 -> 114.
    assert default_load_size(216) == (256, 256)
    assert default_load_size(108) == (128, 128)
    assert default_load_size((64, 96)) == (76, 114)


def test_non_square_crop(apple_folders):
    dataset = DomainImageDataset(apple_folders, (64, 96))
    image, _ = dataset[(0, 0, 0)]
    assert image.shape == (3, 64, 96)
    assert dataset.load_size == (76, 114)


def test_same_key_same_tensor(apple_folders):
    dataset = DomainImageDataset(apple_folders, 108)
    first, _ = dataset[(0, 5, 123)]
    second, _ = dataset[(0, 5, 123)]
    assert torch.equal(first, second)


def test_flip_mirrors_reference_image(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64, load_size=64, flip=True)
    reference = reference_tensor(horse_folders.files[0][2], (64, 64))
    outcomes = []
    for seed in range(20):
        image, _ = dataset[(0, 2, seed)]
        if torch.equal(image, reference):
            outcomes.append("same")
        elif torch.equal(image, reference.flip(-1)):
            outcomes.append("mirrored")
        else:
            outcomes.append("other")
    assert "other" not in outcomes
    assert "same" in outcomes
    assert "mirrored" in outcomes


def test_no_flip_when_disabled(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64, load_size=64, flip=False)
    reference = reference_tensor(horse_folders.files[1][0], (64, 64))
    for seed in range(8):
        image, _ = dataset[(1, 0, seed)]
        assert torch.equal(image, reference)


def test_crop_windows_vary_with_seed(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64, load_size=80, flip=False)
    reference = reference_tensor(horse_folders.files[0][0], (80, 80))
    offsets = set()
    for seed in range(10):
        image, _ = dataset[(0, 0, seed)]
        found = [
            (top, left)
            for top, left in itertools.product(range(17), range(17))
            if torch.equal(image, reference[:, top : top + 64, left : left + 64])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 1


def test_center_crop_is_central_window(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64, load_size=80, flip=False, crop="center")
    reference = reference_tensor(horse_folders.files[0][0], (80, 80))
    image, _ = dataset[(0, 0, 99)]
    assert torch.equal(image, reference[:, 8:72, 8:72])


def test_index_out_of_range_raises(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64)
    with pytest.raises(IndexError):
        dataset[(0, 10, 0)]


def test_load_size_below_crop_raises(horse_folders):
    with pytest.raises(DataError) as error:
        DomainImageDataset(horse_folders, 108, load_size=100)
    assert "load_size" in str(error.value)


def test_image_modes_load_as_rgb(tmp_path):
    save_image(tmp_path / "trainA" / "gray.png", "L", (40, 30), 100)
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30])
    palette.save(tmp_path / "trainA" / "palette.png")
    palette.save(tmp_path / "trainA" / "palette_transparent.png", transparency=0)
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(tmp_path / "trainA" / "rgba.png")
    save_image(tmp_path / "trainA" / "cmyk.jpg", "CMYK", (40, 30), (0, 0, 0, 0))
    Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16)).save(tmp_path / "trainA" / "sixteen_bit.png")
    save_image(tmp_path / "trainB" / "rgb.png", "RGB", (40, 30), (1, 2, 3))
    folders = DomainFolders.open(tmp_path)
    dataset = DomainImageDataset(folders, 16, load_size=20)

    names = [path.name for path in folders.files[0]]
    images = {name: dataset[(0, index, 0)][0] for index, name in enumerate(names)}
    for name, image in images.items():
        assert image.shape == (3, 16, 16), name

    # A constant image stays constant under resize, crop and flip; x -> x / 127.5 - 1.
    assert torch.allclose(images["gray.png"], torch.full((3, 16, 16), 100 / 127.5 - 1))
    assert torch.allclose(images["palette.png"][:, 0, 0], torch.tensor([10, 200, 30]) / 127.5 - 1)
    assert torch.allclose(images["palette_transparent.png"][:, 0, 0], torch.tensor([10, 200, 30]) / 127.5 - 1)
    assert torch.allclose(images["rgba.png"][:, 0, 0], torch.tensor([10, 200, 30]) / 127.5 - 1)
    assert torch.allclose(images["sixteen_bit.png"], torch.ones(3, 16, 16))


def test_truncated_jpeg_replaced_with_warning(tmp_path, horse_folders, caplog):
    for name in ("trainA", "trainB"):
        (tmp_path / name).mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "trainA" / "a_truncated.jpg", quality=95)
    data = (tmp_path / "trainA" / "a_truncated.jpg").read_bytes()
    (tmp_path / "trainA" / "a_truncated.jpg").write_bytes(data[: len(data) // 2])
    shutil.copy(horse_folders.files[0][0], tmp_path / "trainA" / "b_good.jpg")
    shutil.copy(horse_folders.files[1][0], tmp_path / "trainB" / "good.jpg")

    folders = DomainFolders.open(tmp_path)
    assert [path.name for path in folders.files[0]] == ["a_truncated.jpg", "b_good.jpg"]
    dataset = DomainImageDataset(folders, 64)

    with caplog.at_level(logging.WARNING, logger="toolkit.data"):
        replaced, label = dataset[(0, 0, 7)]
    assert "a_truncated.jpg" in caplog.text
    assert label == 0
    assert torch.equal(replaced, dataset[(0, 1, 7)][0])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="toolkit.data"):
        dataset[(0, 0, 8)]
    assert "a_truncated.jpg" not in caplog.text


# Batches


def test_batches_pair_two_domains(apple_folders):
    sampler = DomainPairBatchSampler(apple_folders.domain_sizes, batch_size=6, seed=0, iterations=50)
    batches = list(sampler)
    assert len(batches) == 50
    for batch in batches:
        first_half, second_half = batch[:3], batch[3:]
        first_domains = {domain for domain, _, _ in first_half}
        second_domains = {domain for domain, _, _ in second_half}
        assert len(first_domains) == 1
        assert len(second_domains) == 1
        assert first_domains != second_domains
        for domain, index, _ in batch:
            assert 0 <= index < apple_folders.domain_sizes[domain]
        assert len({index for _, index, _ in first_half}) == 3


def test_both_domain_orders_occur(apple_folders):
    sampler = DomainPairBatchSampler(apple_folders.domain_sizes, batch_size=2, seed=1, iterations=100)
    orders = {(batch[0][0], batch[1][0]) for batch in sampler}
    assert orders == {(0, 1), (1, 0)}


def test_resumed_sampler_repeats_batch(apple_folders):
    full = list(DomainPairBatchSampler(apple_folders.domain_sizes, 4, seed=5, iterations=10))
    resumed = list(DomainPairBatchSampler(apple_folders.domain_sizes, 4, seed=5, start_iteration=7, iterations=10))
    assert len(resumed) == 3
    assert resumed == full[7:]


def test_seed_changes_batches(apple_folders):
    first = DomainPairBatchSampler(apple_folders.domain_sizes, 4, seed=0).batch(0)
    second = DomainPairBatchSampler(apple_folders.domain_sizes, 4, seed=1).batch(0)
    assert first != second


def test_endless_sampler_has_no_length(apple_folders):
    sampler = DomainPairBatchSampler(apple_folders.domain_sizes, 2, seed=0)
    assert len(list(itertools.islice(sampler, 5))) == 5
    with pytest.raises(TypeError):
        len(sampler)


@pytest.mark.parametrize("batch_size", [0, 1, 3, 7])
def test_odd_batch_size_rejected(batch_size):
    with pytest.raises(DataError) as error:
        DomainPairBatchSampler([10, 10], batch_size, seed=0)
    assert str(batch_size) in str(error.value)


def test_three_domains_yield_all_pairs(tmp_path, horse_folders):
    sources = horse_folders.files[0][:2] + horse_folders.files[1][:2]
    for domain in ("A", "B", "C"):
        folder = tmp_path / f"train{domain}"
        folder.mkdir()
        for number, source in enumerate(sources[:3]):
            os.symlink(source, folder / f"{number}.jpg")
    folders = DomainFolders.open(tmp_path)
    assert folders.domains == ["A", "B", "C"]

    sampler = DomainPairBatchSampler(folders.domain_sizes, 2, seed=0, iterations=300)
    pairs = {(batch[0][0], batch[1][0]) for batch in sampler}
    assert pairs == set(itertools.permutations(range(3), 2))


def test_loader_batch_shapes_and_labels(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64)
    loader = make_loader(dataset, batch_size=4, seed=3, start_iteration=0, num_workers=0)
    images, labels = next(iter(loader))
    expected = DomainPairBatchSampler(horse_folders.domain_sizes, 4, seed=3).batch(0)
    assert images.shape == (4, 3, 64, 64)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == [domain for domain, _, _ in expected]
    assert torch.equal(images[1], dataset[expected[1]][0])


def test_loader_leaves_global_rng_unchanged(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64)
    state = torch.get_rng_state()
    loader = make_loader(dataset, batch_size=2, seed=0, start_iteration=0, num_workers=0)
    for _ in itertools.islice(loader, 3):
        pass
    assert torch.equal(torch.get_rng_state(), state)


def test_workers_match_single_process(horse_folders):
    dataset = DomainImageDataset(horse_folders, 64)
    single = make_loader(dataset, batch_size=2, seed=4, start_iteration=2, num_workers=0)
    parallel = make_loader(dataset, batch_size=2, seed=4, start_iteration=2, num_workers=2)
    for (images, labels), (parallel_images, parallel_labels) in itertools.islice(zip(single, parallel), 4):
        assert torch.equal(images, parallel_images)
        assert torch.equal(labels, parallel_labels)


def test_iterations_per_epoch():
    assert iterations_per_epoch([995, 1019], 2) == 1019
    assert iterations_per_epoch([995, 1019], 4) == 509
    assert iterations_per_epoch([1, 1], 8) == 1


# The dataset components


def test_folders_component_builds_data(registry, horse2zebra_mini):
    data = registry.build("dataset", "folders", {"root": str(horse2zebra_mini)}, image_size=108)
    assert data.root == horse2zebra_mini
    assert data.domains == ["A", "B"]
    assert data.domain_sizes == [10, 10]
    assert data.train.load_size == (128, 128)
    assert data.train[(1, 0, 0)][0].shape == (3, 108, 108)
    assert data.test_folders().domain_sizes == [10, 10]


def test_folders_component_parameters(registry):
    entry = registry.get("dataset", "folders")
    assert [parameter.name for parameter in entry.parameters] == ["root", "load_size", "flip"]
    assert entry.context_arguments == {"image_size"}


def test_test_folders_none_without_test_split(registry, tmp_path, horse_folders):
    for domain, paths in zip(("A", "B"), horse_folders.files):
        (tmp_path / f"train{domain}").mkdir()
        shutil.copy(paths[0], tmp_path / f"train{domain}")
    data = registry.build("dataset", "folders", {"root": str(tmp_path)}, image_size=64)
    assert data.test_folders() is None
