"""The domain classifier behind translation accuracy: a small CNN trained on a dataset's real training images.

It is trained once per dataset (and per image list) and cached, so every run evaluated on
that dataset is judged by the same classifier. Its accuracy on the real test images is
stored beside the weights and reported with the translation accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from toolkit.data.folders import DomainFolders, IMAGE_ERRORS, load_rgb, to_tensor
from toolkit.errors import DataError

log = logging.getLogger(__name__)

# Images are resized to LOAD_SIZE and cropped to INPUT_SIZE (random crops in training, the centre otherwise).
LOAD_SIZE = 72
INPUT_SIZE = 64
# Bump when the architecture or the training schedule changes, so old cache entries are not reused.
CLASSIFIER_VERSION = 1


class DomainClassifier(nn.Module):
    """A four-stage CNN that maps images (N, 3, H, W) in [-1, 1] of any size to domain logits (N, num_domains).

    Inputs are resized to 72 x 72 (antialiased bilinear) and centre-cropped to 64 x 64.
    Each stage is a 3x3 convolution, batch norm and ReLU (32, 64, 128, 256 channels). The
    first three stages end with 2x2 max pooling. Global average pooling and a linear layer
    give the logits.
    """

    def __init__(self, num_domains: int, channels: int = 32) -> None:
        super().__init__()
        self.num_domains = num_domains
        layers: list[nn.Module] = []
        width_in = 3
        for stage in range(4):
            width = channels * 2**stage
            layers += [nn.Conv2d(width_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if stage < 3:
                layers.append(nn.MaxPool2d(2))
            width_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, num_domains)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = center_crop(resize(images, LOAD_SIZE), INPUT_SIZE)
        return self.head(self.features(images).mean(dim=(2, 3)))

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 128) -> Tensor:
        """Return the predicted domain (N,) of images (N, 3, H, W) in [-1, 1] or uint8."""
        self.eval()
        device = next(self.parameters()).device
        predictions = []
        for batch in images.split(batch_size):
            predictions.append(self(as_float(batch).to(device)).argmax(dim=1).cpu())
        return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def as_float(images: Tensor) -> Tensor:
    """Return images in [-1, 1] as float32, converting uint8 pixels (0..255)."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


def as_uint8(images: Tensor) -> Tensor:
    """Return images in [-1, 1] as uint8 pixels (0..255), rounded, to keep many of them in memory."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize(images: Tensor, size: int) -> Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def center_crop(images: Tensor, size: int) -> Tensor:
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def load_small_images(folders: DomainFolders) -> tuple[Tensor, Tensor]:
    """Load every image of a split as uint8 (N, 3, 72, 72) with its domain label (N,); unreadable files are skipped."""
    from PIL import Image

    images, labels = [], []
    for domain, paths in enumerate(folders.files):
        for path in paths:
            try:
                image = load_rgb(path).resize((LOAD_SIZE, LOAD_SIZE), Image.Resampling.BICUBIC)
            except IMAGE_ERRORS as error:
                log.warning("skipping '%s' for the domain classifier: %s", path, error)
                continue
            images.append(as_uint8(to_tensor(image)))
            labels.append(domain)
    if not images:
        raise DataError(f"no readable image in the {folders.split} split of '{folders.root}'")
    return torch.stack(images), torch.tensor(labels)


def train_classifier(
    images: Tensor, labels: Tensor, num_domains: int, epochs: int = 10, batch_size: int = 64, seed: int = 0
) -> DomainClassifier:
    """Train a DomainClassifier on uint8 images (N, 3, 72, 72) with random 64-pixel crops and flips.

    Adam (learning rate 1e-3) with class-balanced sampling: each epoch draws N images,
    every domain equally often. Deterministic for a seed on the CPU.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DomainClassifier(num_domains)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    counts = torch.bincount(labels, minlength=num_domains).clamp(min=1).float()
    weights = (1.0 / counts)[labels]
    model.train()
    for epoch in range(epochs):
        order = torch.multinomial(weights, len(labels), replacement=True, generator=generator)
        for batch in order.split(batch_size):
            if len(batch) < 2:
                continue
            crops = _random_crops(images[batch], generator)
            loss = F.cross_entropy(model(crops), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log.debug("domain classifier epoch %d: last batch loss %.4f", epoch + 1, loss.item())
    return model.eval()


def _random_crops(images: Tensor, generator: torch.Generator) -> Tensor:
    span = LOAD_SIZE - INPUT_SIZE + 1
    crops = []
    for image in as_float(images):
        top, left = (int(value) for value in torch.randint(span, (2,), generator=generator))
        crop = image[:, top : top + INPUT_SIZE, left : left + INPUT_SIZE]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


def accuracy(model: DomainClassifier, images: Tensor, labels: Tensor) -> float:
    """Share of images (N, 3, H, W) whose predicted domain equals ``labels`` (N,)."""
    return float((model.predict(images) == labels).float().mean())


def classifier_cache_dir() -> Path:
    """Return ``$TOOLKIT_CACHE/classifiers``, else ``$XDG_CACHE_HOME/toolkit/classifiers`` or ``~/.cache/toolkit/classifiers``."""
    if os.environ.get("TOOLKIT_CACHE"):
        return Path(os.environ["TOOLKIT_CACHE"]).expanduser() / "classifiers"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "toolkit" / "classifiers"


def fingerprint(train: DomainFolders, test: DomainFolders, settings: dict[str, Any]) -> str:
    """Hash the image lists (relative paths and sizes) of both splits and the training settings."""
    digest = hashlib.sha256(json.dumps({"version": CLASSIFIER_VERSION, **settings}, sort_keys=True).encode())
    for folders in (train, test):
        for domain, paths in zip(folders.domains, folders.files):
            for path in paths:
                digest.update(f"{folders.split}/{domain}/{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def load_or_train(
    train: DomainFolders,
    test: DomainFolders,
    epochs: int = 10,
    seed: int = 0,
    cache_dir: Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[DomainClassifier, dict[str, Any]]:
    """Return the dataset's domain classifier and its record (test accuracy, image counts, cache file).

    A cached classifier for the same image lists and settings is loaded. Otherwise one is
    trained on ``train``, scored on ``test`` and saved to the cache.
    """
    cache = Path(cache_dir) if cache_dir is not None else classifier_cache_dir()
    key = fingerprint(train, test, {"epochs": epochs, "seed": seed})
    weights_path = cache / f"{train.root.name}-{key}.safetensors"
    record_path = weights_path.with_suffix(".json")
    num_domains = len(train.domains)
    if weights_path.is_file() and record_path.is_file():
        model = DomainClassifier(num_domains)
        model.load_state_dict(safetensors.torch.load_file(weights_path))
        record = {**json.loads(record_path.read_text()), "cache_file": str(weights_path)}
        log.info("using the cached domain classifier %s (test accuracy %.3f)", weights_path, record["test_accuracy"])
        return model.eval().to(device), record

    log.info("training the domain classifier of %s on %s (%d epochs); it is cached for later evaluations", train.root, device, epochs)
    train_images, train_labels = load_small_images(train)
    test_images, test_labels = load_small_images(test)
    model = train_classifier(train_images, train_labels, num_domains, epochs=epochs, seed=seed)
    record = {
        "domains": list(train.domains),
        "train_images": len(train_labels),
        "test_images": len(test_labels),
        "train_accuracy": accuracy(model, train_images, train_labels),
        "test_accuracy": accuracy(model, test_images, test_labels),
        "test_accuracy_per_domain": _per_domain(model, test_images, test_labels, num_domains),
        "epochs": epochs,
        "seed": seed,
        "version": CLASSIFIER_VERSION,
    }
    try:
        cache.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(model.state_dict(), weights_path)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        record["cache_file"] = str(weights_path)
    except OSError as error:
        log.warning("could not cache the domain classifier in %s (%s); it will be trained again next time", cache, error)
    log.info("domain classifier test accuracy %.3f", record["test_accuracy"])
    return model.to(device), record


def _per_domain(model: DomainClassifier, images: Tensor, labels: Tensor, num_domains: int) -> list[float | None]:
    predicted = model.predict(images)
    scores: list[float | None] = []
    for domain in range(num_domains):
        chosen = labels == domain
        scores.append(float((predicted[chosen] == domain).float().mean()) if bool(chosen.any()) else None)
    return scores

