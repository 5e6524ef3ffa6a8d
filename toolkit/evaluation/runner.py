"""``toolkit eval``: translate a dataset's test split with trained runs and measure the translations.

For every run and every ordered pair of domains (source, target), each test image of the
source domain is translated ``samples`` times with attributes from the run's prior. The
metric groups are:

- ``ndb``: NDB and JSD of the translations against k-means bins of the real target
  training images (pixels at 32 x 32);
- ``accuracy``: the share of translations the dataset's domain classifier assigns to the target;
- ``diversity``: mean pairwise L1 (always) and LPIPS (with weights) between the outputs of one input;
- ``fid``: FID and KID of Inception-v3 pool features against the real target test images (with weights);
- ``clustering``: for priors with mixture components, accuracy and NMI of argmax q(y|x) on
  the real test images against their domains.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from toolkit.data import resolve_data
from toolkit.data.folders import IMAGE_ERRORS, DomainFolders, center_view, load_rgb
from toolkit.engine.grid import save_image_grid
from toolkit.errors import DataError, ToolkitError
from toolkit.evaluation import classifier as domain_classifier
from toolkit.evaluation.clustering import clustering_accuracy, normalized_mutual_information
from toolkit.evaluation.diversity import mean_pairwise_distance, mean_pairwise_l1
from toolkit.evaluation.frechet import fid, kid
from toolkit.evaluation.ndb import ndb_jsd, pixel_features
from toolkit.evaluation.weights import MissingWeightsError
from toolkit.translation import TrainedRun

log = logging.getLogger(__name__)

METRIC_GROUPS = ("ndb", "accuracy", "diversity", "fid", "clustering")
# Inputs shown in each direction's sample grid.
GRID_INPUTS = 4


@attrs.frozen
class EvalSettings:
    """Options of one evaluation; the defaults are those of ``toolkit eval``."""

    metrics: tuple[str, ...] = METRIC_GROUPS
    samples: int = 5
    bins: int = 50
    seed: int = 0
    batch_size: int = 8
    max_inputs: int | None = None
    classifier_epochs: int = 10
    inception_weights: Path | None = None
    lpips_weights: Path | None = None
    alexnet_weights: Path | None = None
    device: str = "auto"

    def check(self) -> None:
        unknown = [name for name in self.metrics if name not in METRIC_GROUPS]
        if unknown:
            raise ToolkitError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_GROUPS)}")
        if self.samples < 1:
            raise ToolkitError(f"samples must be at least 1, got {self.samples}")
        if self.bins < 2:
            raise ToolkitError(f"bins must be at least 2, got {self.bins}")


class RealImages:
    """Real images of one split, loaded once per size as uint8 tensors (N, 3, H, W) per domain."""

    def __init__(self, folders: DomainFolders, limit: int | None = None) -> None:
        self.folders = folders
        self.limit = limit
        self._views: dict[tuple[tuple[int, int], int], Tensor] = {}

    def domain(self, domain: int, size: tuple[int, int]) -> Tensor:
        key = (size, domain)
        if key not in self._views:
            paths = self.folders.files[domain][: self.limit]
            views = []
            for path in paths:
                try:
                    views.append(domain_classifier.as_uint8(center_view(load_rgb(path), size)))
                except IMAGE_ERRORS as error:
                    log.warning("skipping '%s': %s", path, error)
            if not views:
                raise DataError(f"no readable image in '{self.folders.folder(domain)}'")
            self._views[key] = torch.stack(views)
        return self._views[key]


def evaluate(run_dirs: Sequence[str | Path], data: str | Path, out: Path, settings: EvalSettings = EvalSettings()) -> dict[str, Any]:
    """Evaluate each run on the test split of ``data`` (a folder or a dataset name); write metrics.json and report.md to ``out``.

    Returns the content of ``metrics.json``.
    """
    from toolkit.engine.runs import resolve_device
    from toolkit.evaluation.report import write_report

    settings.check()
    if not run_dirs:
        raise ToolkitError("give at least one run folder to evaluate")
    device = resolve_device(settings.device)
    root = Path(resolve_data(data)).resolve()
    train = DomainFolders.open(root, "train")
    if not any(path.is_dir() and path.name.startswith("test") for path in root.iterdir()):
        raise DataError(f"data folder '{root}' has no test split (testA/, testB/, ...); evaluation translates the test images")
    test = DomainFolders.open(root, "test")
    runs = [TrainedRun.load(run_dir, device=device) for run_dir in run_dirs]
    for run in runs:
        if run.domains != test.domains:
            raise DataError(
                f"run {run.run_dir} was trained on domains {run.domains}, but '{root}' has test domains {test.domains}; "
                "evaluate on the dataset the run was trained on"
            )
    # Weights files load before anything slow, so a bad path fails at once.
    not_computed: dict[str, str] = {}
    lpips = _optional_model("lpips", settings, not_computed, device) if "diversity" in settings.metrics else None
    inception = _optional_model("fid", settings, not_computed, device) if "fid" in settings.metrics else None
    real_train = RealImages(train)
    real_test = RealImages(test, settings.max_inputs)
    classifier, classifier_record = None, None
    if "accuracy" in settings.metrics:
        classifier, classifier_record = domain_classifier.load_or_train(
            train, test, epochs=settings.classifier_epochs, seed=settings.seed, device=device
        )
    out.mkdir(parents=True, exist_ok=True)
    if "diversity" in settings.metrics and settings.samples < 2:
        not_computed["diversity"] = "diversity compares outputs of one input: pass --samples 2 or more"

    labels = _unique_labels(runs)
    results = []
    for label, run in zip(labels, runs):
        log.info("evaluating %s (%s, iteration %s)", label, run.prior_name, run.iteration)
        entry: dict[str, Any] = {
            "label": label,
            "run_dir": str(run.run_dir),
            "name": run.record.get("name"),
            "prior": run.prior_name,
            "iteration": run.iteration,
            "image_size": list(run.image_size),
            "directions": {},
        }
        for source in range(len(run.domains)):
            for target in range(len(run.domains)):
                if source == target:
                    continue
                direction = f"{run.domains[source]}->{run.domains[target]}"
                inputs = real_test.domain(source, run.image_size)
                outputs = _translate_all(run, inputs, target, settings)
                save_image_grid(
                    _sample_grid(inputs, outputs),
                    out / "grids" / f"{_file_name(label)}_{run.domains[source]}_to_{run.domains[target]}.png",
                    columns=1 + settings.samples,
                    headings=["input"] + [f"sample {k + 1}" for k in range(settings.samples)],
                )
                metrics = {"inputs": len(inputs), "samples": settings.samples}
                metrics.update(
                    _direction_metrics(outputs, target, run, real_train, real_test, settings, classifier, lpips, inception)
                )
                entry["directions"][direction] = metrics
                log.info("%s %s: %s", label, direction, _summary(metrics))
        if "clustering" in settings.metrics and run.prior.has_categorical:
            entry["clustering"] = _clustering(run, real_test, settings)
        results.append(entry)

    payload = {
        "data": str(root),
        "domains": test.domains,
        "settings": _settings_json(settings),
        "classifier": classifier_record,
        "not_computed": not_computed,
        "runs": results,
    }
    write_report(payload, out)
    return payload


def _translate_all(run: TrainedRun, inputs: Tensor, target: int, settings: EvalSettings) -> Tensor:
    """Translate uint8 inputs (N, 3, H, W) to ``target``: uint8 outputs (N, samples, 3, H, W), seeded per batch."""
    outputs = []
    for index, batch in enumerate(inputs.split(settings.batch_size)):
        translated = run.translate(
            domain_classifier.as_float(batch), target, samples=settings.samples, seed=settings.seed * 100_003 + index
        )
        outputs.append(domain_classifier.as_uint8(translated.cpu()))
    return torch.cat(outputs)


def _direction_metrics(
    outputs: Tensor,
    target: int,
    run: TrainedRun,
    real_train: RealImages,
    real_test: RealImages,
    settings: EvalSettings,
    classifier: domain_classifier.DomainClassifier | None,
    lpips: Callable | None,
    inception: torch.nn.Module | None,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    flat = outputs.flatten(0, 1)
    if "ndb" in settings.metrics:
        real = real_train.domain(target, run.image_size)
        bins = min(settings.bins, max(2, len(real) // 10))
        result = ndb_jsd(
            pixel_features(domain_classifier.as_float(real)),
            pixel_features(domain_classifier.as_float(flat)),
            k=bins,
            seed=settings.seed,
        )
        metrics.update({"ndb": result.ndb, "ndb_bins": result.k, "ndb_fraction": result.ndb_fraction, "jsd": result.jsd})
    if classifier is not None:
        predicted = classifier.predict(flat)
        metrics["accuracy"] = float((predicted == target).float().mean())
    if "diversity" in settings.metrics and settings.samples >= 2:
        metrics["diversity_l1"] = _mean(mean_pairwise_l1(domain_classifier.as_float(group)) for group in outputs)
        if lpips is not None:
            metrics["lpips"] = _mean(
                mean_pairwise_distance(domain_classifier.as_float(group).to(_device(lpips)), lpips) for group in outputs
            )
    if inception is not None:
        real = real_test.domain(target, run.image_size)
        real_features = _features(inception, real, settings.batch_size)
        fake_features = _features(inception, flat, settings.batch_size)
        metrics["fid"] = fid(real_features, fake_features)
        kid_mean, kid_std = kid(real_features, fake_features, seed=settings.seed)
        metrics["kid"] = kid_mean
        metrics["kid_std"] = kid_std
    return metrics


def _clustering(run: TrainedRun, real_test: RealImages, settings: EvalSettings) -> dict[str, Any]:
    predicted, labels = [], []
    for domain in range(len(run.domains)):
        images = real_test.domain(domain, run.image_size)
        for batch in images.split(settings.batch_size):
            probabilities = run.component_probabilities(domain_classifier.as_float(batch), domain)
            predicted.append(probabilities.argmax(dim=1).cpu())
            labels.append(torch.full((len(batch),), domain, dtype=torch.long))
    predicted_all, labels_all = torch.cat(predicted), torch.cat(labels)
    return {
        "accuracy": clustering_accuracy(predicted_all, labels_all),
        "nmi": normalized_mutual_information(predicted_all, labels_all),
        "images": len(labels_all),
        "components_used": int(predicted_all.unique().numel()),
    }


def _optional_model(group: str, settings: EvalSettings, not_computed: dict[str, str], device: torch.device):
    """Load the LPIPS or Inception network from its weights files, or record why it is not computed."""
    from toolkit.evaluation import inception, lpips
    from toolkit.evaluation.weights import find_weights

    # A file named on the command line must load. A file missing from the torch cache only
    # leaves its metrics out, and the report gives the reason.
    try:
        if group == "lpips":
            linear = find_weights(settings.lpips_weights, lpips.LPIPS_WEIGHTS, "LPIPS linear layers", option="--lpips-weights")
            backbone = find_weights(settings.alexnet_weights, lpips.ALEXNET_WEIGHTS, "AlexNet", option="--alexnet-weights")
            return lpips.LPIPS.from_files(linear, backbone).to(device).eval()
        weights = find_weights(settings.inception_weights, inception.INCEPTION_WEIGHTS, "Inception-v3", option="--inception-weights")
        return inception.InceptionFeatures.from_file(weights).to(device).eval()
    except MissingWeightsError as error:
        explicit = settings.lpips_weights or settings.alexnet_weights if group == "lpips" else settings.inception_weights
        if explicit:
            raise
        names = ("lpips",) if group == "lpips" else ("fid", "kid")
        for name in names:
            not_computed[name] = str(error)
        log.warning("%s not computed: %s", " and ".join(name.upper() for name in names), error)
        return None


@torch.no_grad()
def _features(network: torch.nn.Module, images: Tensor, batch_size: int) -> Tensor:
    device = _device(network)
    parts = [network(domain_classifier.as_float(batch).to(device)).double().cpu() for batch in images.split(batch_size)]
    return torch.cat(parts)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _sample_grid(inputs: Tensor, outputs: Tensor) -> Tensor:
    rows = []
    for index in range(min(GRID_INPUTS, len(inputs))):
        rows.append(inputs[index : index + 1])
        rows.append(outputs[index])
    return domain_classifier.as_float(torch.cat(rows))


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


def _unique_labels(runs: Sequence[TrainedRun]) -> list[str]:
    names = [str(run.record.get("name") or run.run_dir.name) for run in runs]
    labels = []
    for name, run in zip(names, runs):
        labels.append(name if names.count(name) == 1 else f"{name} ({run.run_dir.name})")
    while len(set(labels)) < len(labels):
        labels = [f"{label} #{index + 1}" for index, label in enumerate(labels)]
    return labels


def _file_name(label: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in label)


def _summary(metrics: dict[str, Any]) -> str:
    keys = [key for key in ("ndb", "jsd", "accuracy", "diversity_l1", "lpips", "fid", "kid") if key in metrics]
    return ", ".join(f"{key} {metrics[key]:.4g}" for key in keys)


def _settings_json(settings: EvalSettings) -> dict[str, Any]:
    values = attrs.asdict(settings)
    for key, value in values.items():
        if isinstance(value, Path):
            values[key] = str(value)
        elif isinstance(value, tuple):
            values[key] = list(value)
    return values
