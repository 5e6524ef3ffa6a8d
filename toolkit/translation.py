"""Translate images with a trained run: attributes drawn from the prior, taken from references, or interpolated.

>>> run = TrainedRun.load("runs/gmdrit_ttur_108/20261204-101500")
>>> images = run.load_images(["apple.jpg"])          # (1, 3, 108, 108) in [-1, 1]
>>> outputs = run.translate(images, to="B", samples=4, seed=0)   # (1, 4, 3, 108, 108)
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import safetensors
import torch
from torch import Tensor, nn

from toolkit.components import Posterior, Prior
from toolkit.data.folders import IMAGE_ERRORS, center_view, image_shape, load_rgb
from toolkit.engine import checkpoint as checkpoints
from toolkit.engine.model import TRANSLATION_NETWORKS, build_networks
from toolkit.engine.runs import RUN_RECORD, read_run_record, resolve_device
from toolkit.errors import DataError, ToolkitError
from toolkit.recipe import Component
from toolkit.registry import Registry

log = logging.getLogger(__name__)

# A domain by name or index, or one per image.
Domains = str | int | Sequence[str | int] | Tensor


@attrs.frozen
class Attributes:
    """Attribute codes for the generator: z (N, latent_size) and the domain code (N, code_size)."""

    z: Tensor
    code: Tensor

    def lerp(self, other: Attributes, weight: float) -> Attributes:
        """Return (1 - weight) * self + weight * other, for z and the domain code alike."""
        return Attributes(torch.lerp(self.z, other.z, weight), torch.lerp(self.code, other.code, weight))


class TrainedRun(nn.Module):
    """The encoders, prior and generator of one checkpoint of a ``toolkit run`` folder, in eval mode.

    Images are float tensors (N, 3, H, W) in [-1, 1] with H and W multiples of 4. The
    networks are convolutional, so any such size works. The size the run was trained at
    (``image_size``) matches its training data best. Domains are given by name (``"A"``,
    or the folder name ``"trainA"``) or by index.
    """

    def __init__(
        self,
        record: dict[str, Any],
        registry: Registry,
        run_dir: Path | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        super().__init__()
        self.record = record
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.domains: list[str] = list(record["domains"])
        recipe = record["recipe"]
        self.image_size = image_shape(tuple(recipe["image_size"]) if isinstance(recipe["image_size"], list) else recipe["image_size"])
        self.prior_name: str = recipe["prior"]["name"]
        components = {name: Component(name, recipe[name]["name"], recipe[name]["params"]) for name in TRANSLATION_NETWORKS}
        networks = build_networks(components, registry, len(self.domains), self.image_size)
        self.content_encoder = networks["content_encoder"]
        self.attribute_encoder = networks["attribute_encoder"]
        self.prior: Prior = networks["prior"]
        self.generator = networks["generator"]
        self.iteration: int | None = None
        self.eval()

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        checkpoint: str | int | Path | None = None,
        device: str | torch.device = "cpu",
        registry: Registry | None = None,
    ) -> TrainedRun:
        """Load a run folder's checkpoint (the latest unless ``checkpoint`` names an iteration or a folder)."""
        from toolkit.plugins import get_registry

        run_dir = Path(run_dir).expanduser()
        record = read_run_record(run_dir, "load")
        folder = find_checkpoint(run_dir, checkpoint)
        run = cls(record, registry or get_registry(), run_dir, folder)
        run.load_weights(folder)
        return run.to(resolve_device(device) if isinstance(device, str) else device)

    def load_weights(self, folder: Path) -> None:
        """Copy this model's tensors from the checkpoint's ``model.safetensors`` (discriminators are not read)."""
        path = folder / checkpoints.WEIGHTS_FILE
        if not path.is_file():
            raise ToolkitError(f"checkpoint weights {path} not found; the checkpoint folder is incomplete")
        expected = self.state_dict()
        with safetensors.safe_open(path, framework="pt") as weights:
            available = set(weights.keys())
            missing = [name for name in expected if name not in available]
            if missing:
                raise ToolkitError(
                    f"checkpoint {folder} does not match the run's recipe: missing {missing[:5]}; "
                    f"was {RUN_RECORD} of this run folder edited?"
                )
            state = {name: weights.get_tensor(name) for name in expected}
        self.load_state_dict(state)
        self.iteration = int(folder.name) if folder.name.isdigit() else None
        self._restore_temperature()

    def _restore_temperature(self) -> None:
        # The Gumbel-softmax temperature is a schedule, not a weight: take the value the run
        # logged at the checkpoint's last iteration.
        if not hasattr(self.prior, "current_temperature"):
            return
        temperature = logged_temperature(self.run_dir, self.iteration) if self.run_dir else None
        if temperature is None:
            temperature = getattr(self.prior, "min_temperature", self.prior.current_temperature)
            log.debug("no logged Gumbel temperature for this checkpoint; using %s", temperature)
        self.prior.current_temperature = temperature

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # Domains and images

    def domain_index(self, domain: str | int) -> int:
        """Return the index of ``domain``: a name (``"B"``), a folder name (``"trainB"``) or an index."""
        if isinstance(domain, int) and not isinstance(domain, bool):
            if 0 <= domain < len(self.domains):
                return domain
        elif isinstance(domain, str):
            for prefix in ("", "train", "test"):
                if domain.startswith(prefix) and domain[len(prefix) :] in self.domains:
                    return self.domains.index(domain[len(prefix) :])
            if domain.isdigit():
                return self.domain_index(int(domain))
        names = ", ".join(f"{index} = {name}" for index, name in enumerate(self.domains))
        raise ToolkitError(f"unknown domain {domain!r}; this run's domains are {names} (give a name such as A, a folder name such as trainA, or an index)")

    def load_images(self, paths: Sequence[str | Path], image_size: int | Sequence[int] | None = None) -> Tensor:
        """Load image files as the test-time view (resize, centre crop) at ``image_size`` (default: the run's)."""
        size = image_shape(image_size if image_size is not None else self.image_size)
        if size[0] % 4 or size[1] % 4:
            raise ToolkitError(f"image size {size[0]}x{size[1]} is not supported; each side must be a multiple of 4")
        views = []
        for path in paths:
            try:
                views.append(center_view(load_rgb(Path(path)), size))
            except FileNotFoundError:
                raise DataError(f"image '{path}' not found") from None
            except IMAGE_ERRORS as error:
                raise DataError(f"image '{path}' cannot be read ({error}); pass a JPEG, PNG or other image file") from None
        return torch.stack(views).to(self.device)

    # Codes

    def _labels(self, domain: Domains, count: int) -> Tensor:
        """Domain indices (count,): one domain for all, or a sequence or tensor of one domain per image."""
        if isinstance(domain, (str, int)):
            return torch.full((count,), self.domain_index(domain), dtype=torch.long, device=self.device)
        labels = [self.domain_index(item) for item in (domain.tolist() if isinstance(domain, Tensor) else domain)]
        if len(labels) != count:
            raise ToolkitError(f"got {len(labels)} domains for {count} images; pass one domain, or one per image")
        return torch.tensor(labels, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def encode_content(self, images: Tensor) -> Tensor:
        """Return the content codes (N, C, H/4, W/4) of images from any domain."""
        return self.content_encoder(images.to(self.device))

    @torch.no_grad()
    def encode_attributes(self, images: Tensor, domain: Domains) -> Posterior:
        """Return the posterior q(z|x) (and q(y|x) for ``gmvae``) of images (N, 3, H, W) from ``domain``."""
        images = images.to(self.device)
        labels = self._labels(domain, len(images))
        one_hot = nn.functional.one_hot(labels, len(self.domains)).to(images.dtype)
        return self.prior.posterior(self.attribute_encoder(images, one_hot))

    @torch.no_grad()
    def sample_attributes(self, to: Domains, count: int) -> Attributes:
        """Draw ``count`` attributes of domain ``to`` from the learned prior.

        For ``gmvae`` this picks the domain's mixture component, then z ~ p(z|y); the domain
        code is the one-hot target domain, as for the random translations of training.
        """
        labels = self._labels(to, count)
        z = self.prior.sample(labels)
        return Attributes(z, nn.functional.one_hot(labels, self.prior.code_size).to(z.dtype))

    @torch.no_grad()
    def reference_attributes(self, references: Tensor, to: Domains, use_mean: bool = False) -> Attributes:
        """Return the attributes of reference images (N, 3, H, W) of domain ``to``: a posterior sample, or its mean."""
        posterior = self.encode_attributes(references, to)
        z = posterior.mean if use_mean else posterior.z
        return Attributes(z, self.prior.domain_code(posterior, self._labels(to, len(references))))

    @torch.no_grad()
    def generate(self, content: Tensor, attributes: Attributes) -> Tensor:
        """Decode content codes (N, C, h, w) with attributes (N rows) into images (N, 3, H, W)."""
        return self.generator(content, attributes.z, attributes.code).clamp(-1, 1)

    # Translation

    @torch.no_grad()
    def translate(self, images: Tensor, to: Domains, samples: int = 1, seed: int | None = None) -> Tensor:
        """Translate images (N, 3, H, W) to domain ``to`` with ``samples`` prior attributes each: (N, samples, 3, H, W)."""
        _check_count("samples", samples)
        with seeded(seed, self.device):
            content = self.encode_content(images).repeat_interleave(samples, dim=0)
            attributes = self.sample_attributes(self._labels(to, len(images)).repeat_interleave(samples), len(content))
            outputs = self.generate(content, attributes)
        return outputs.unflatten(0, (len(images), samples))

    @torch.no_grad()
    def translate_like(
        self, images: Tensor, references: Tensor, to: Domains, seed: int | None = None, use_mean: bool = False
    ) -> Tensor:
        """Translate images (N, 3, H, W) to domain ``to`` with the attributes of references of that domain.

        ``references`` is (N, 3, H, W), one per image, or (1, 3, H, W) for all. With
        ``use_mean`` the posterior mean is used instead of a posterior sample.
        """
        references = references.to(self.device)
        if len(references) == 1 and len(images) > 1:
            references = references.expand(len(images), -1, -1, -1)
        if len(references) != len(images):
            raise ToolkitError(f"got {len(images)} images but {len(references)} references; pass one reference or one per image")
        with seeded(seed, self.device):
            # Attributes first: a reference of the image itself then draws the same noise as the
            # self-reconstruction of a training step.
            attributes = self.reference_attributes(references, to, use_mean)
            return self.generate(self.encode_content(images), attributes)

    @torch.no_grad()
    def interpolate(
        self,
        images: Tensor,
        to: str | int,
        steps: int,
        start: Attributes | None = None,
        end: Attributes | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Translate images (N, 3, H, W) along ``steps`` attributes from ``start`` to ``end``: (N, steps, 3, H, W).

        ``start`` and ``end`` hold one attribute row (or N rows); a missing end is drawn from
        the prior of ``to``. Both z and the domain code are interpolated linearly.
        """
        _check_count("steps", steps, minimum=2)
        with seeded(seed, self.device):
            start = start if start is not None else self.sample_attributes(to, 1)
            end = end if end is not None else self.sample_attributes(to, 1)
            content = self.encode_content(images)
            strip = []
            for step in range(steps):
                point = start.lerp(end, step / (steps - 1))
                z = point.z.expand(len(images), -1) if len(point.z) == 1 else point.z
                code = point.code.expand(len(images), -1) if len(point.code) == 1 else point.code
                strip.append(self.generate(content, Attributes(z, code)))
        return torch.stack(strip, dim=1)

    @torch.no_grad()
    def component_probabilities(self, images: Tensor, domain: Domains) -> Tensor | None:
        """Return q(y|x) (N, K) of images of ``domain`` for priors with mixture components, else None."""
        posterior = self.encode_attributes(images, domain)
        return None if posterior.y_logits is None else posterior.y_logits.float().softmax(dim=1)


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with the torch RNG seeded to ``seed`` and restore the global RNG after; no-op for None."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ToolkitError(f"{name} must be an integer of at least {minimum}, got {value!r}")


def find_checkpoint(run_dir: Path, checkpoint: str | int | Path | None) -> Path:
    """Return the checkpoint folder: the latest, one iteration's, or a given folder."""
    available = checkpoints.checkpoint_dirs(run_dir)
    if checkpoint is None:
        if not available:
            raise ToolkitError(
                f"run folder '{run_dir}' has no complete checkpoint yet; train it with `toolkit run` "
                "(a checkpoint is written at the end and every checkpoint_every iterations)"
            )
        return available[-1]
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isdigit()):
        for folder in available:
            if int(folder.name) == int(checkpoint):
                return folder
        found = ", ".join(str(int(folder.name)) for folder in available) or "none"
        raise ToolkitError(f"run folder '{run_dir}' has no checkpoint at iteration {checkpoint}; it has: {found}")
    folder = Path(checkpoint).expanduser()
    if not (folder / checkpoints.WEIGHTS_FILE).is_file():
        raise ToolkitError(f"'{folder}' is not a checkpoint folder: {checkpoints.WEIGHTS_FILE} not found")
    return folder


def logged_temperature(run_dir: Path, iteration: int | None) -> float | None:
    """Return the Gumbel temperature that ``losses.csv`` of the run logged for the last iteration before ``iteration``."""
    path = run_dir / "losses.csv"
    if iteration is None or not path.is_file():
        return None
    value = None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                if int(row["iteration"]) < iteration and row.get("temperature"):
                    value = float(row["temperature"])
            except (KeyError, ValueError):
                continue
    return value
