"""The ``toolkit translate`` and ``toolkit eval`` commands: thin click wrappers over toolkit.translation and toolkit.evaluation."""

from __future__ import annotations

import logging
from pathlib import Path

import click

log = logging.getLogger("toolkit")


@click.command("translate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path), help="An image file or a folder of images.")
@click.option("--to", "to", required=True, help="Target domain: its name (A, B), folder name (trainB) or index.")
@click.option("--samples", type=click.IntRange(min=1), help="Outputs per input with attributes drawn from the prior [default: 5].")
@click.option("--reference", "references", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Image of the target domain whose attribute to use; twice with --interpolate for both ends.")
@click.option("--interpolate", type=click.IntRange(min=2), help="Make a strip of N steps between two attributes (references, else prior samples).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the prior samples and posterior noise.")
@click.option("--checkpoint", help="Checkpoint iteration or folder [default: the latest].")
@click.option("--image-size", help="Size to translate at: S or HxW, multiples of 4 [default: the run's].")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the images and grids.")
def translate(run_dir, input_path, to, samples, references, interpolate, seed, checkpoint, image_size, device, out) -> None:
    """Translate the images at --input with the trained run in RUN_DIR into domain --to."""
    from toolkit.cli import _image_size
    from toolkit.translate_files import TranslationRequest, list_inputs, translate_files
    from toolkit.translation import TrainedRun

    request = TranslationRequest(
        to=to,
        samples=samples if samples is not None or references or interpolate else 5,
        references=tuple(references),
        interpolate=interpolate,
        seed=seed,
        image_size=_image_size(image_size),
    )
    request.check()
    inputs = list_inputs(input_path)
    run = TrainedRun.load(run_dir, checkpoint=checkpoint, device=device)
    run.domain_index(to)
    grids = translate_files(run, inputs, request, out)
    click.echo(f"{len(grids)} input(s) translated to {run.domains[run.domain_index(to)]}; grids in {out}")


@click.command("eval")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", required=True, help="Dataset folder (with testA, testB, ...) or a dataset name such as apple2orange.")
@click.option("--metrics", default="ndb,accuracy,diversity,fid,clustering", show_default=True, help="Comma-separated metric groups.")
@click.option("--samples", type=click.IntRange(min=1), default=5, show_default=True, help="Translations per test image.")
@click.option("--bins", type=click.IntRange(min=2), default=50, show_default=True, help="k-means bins of NDB/JSD (fewer when the target domain has under 10 images per bin).")
@click.option("--max-inputs", type=click.IntRange(min=1), help="Use only the first N test images of each domain.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the attribute samples, k-means and the classifier.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Test images translated at once.")
@click.option("--inception-weights", type=click.Path(dir_okay=False, path_type=Path), help="Inception-v3 weights for FID/KID [default: inception_v3_google-0cc3c7bd.pth in the torch cache].")
@click.option("--lpips-weights", type=click.Path(dir_okay=False, path_type=Path), help="LPIPS v0.1 AlexNet linear layers (alex.pth) [default: looked up in the torch cache].")
@click.option("--alexnet-weights", type=click.Path(dir_okay=False, path_type=Path), help="AlexNet backbone for LPIPS [default: alexnet-owt-7be5be79.pth in the torch cache].")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for metrics.json, report.md, charts and grids.")
def evaluate(run_dirs, data, metrics, samples, bins, max_inputs, seed, batch_size, inception_weights, lpips_weights, alexnet_weights, device, out) -> None:
    """Translate the test split of --data with each run in RUN_DIRS and compare the runs' metrics."""
    from toolkit.evaluation.runner import EvalSettings, evaluate as run_evaluation

    settings = EvalSettings(
        metrics=tuple(name.strip() for name in metrics.split(",") if name.strip()),
        samples=samples,
        bins=bins,
        seed=seed,
        batch_size=batch_size,
        max_inputs=max_inputs,
        inception_weights=inception_weights,
        lpips_weights=lpips_weights,
        alexnet_weights=alexnet_weights,
        device=device,
    )
    run_evaluation(run_dirs, data, out, settings)
    click.echo(f"metrics: {out / 'metrics.json'}\nreport: {out / 'report.md'}")
