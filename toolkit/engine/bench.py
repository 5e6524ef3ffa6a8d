"""Training-speed benchmarks: seconds per iteration, throughput, peak memory and FLOPs of recipes.

Each setting runs in its own process, so peak memory is that setting's alone and one
setting's allocator state or thread pools cannot slow the next.
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import torch

log = logging.getLogger(__name__)


@attrs.frozen
class BenchSetting:
    """One benchmarked configuration."""

    recipe: str
    image_size: int
    batch_size: int
    iterations: int = 10
    warmup: int = 3
    device: str = "auto"
    precision: str = "auto"
    synthetic: bool = False
    data: str | None = None


def measure(setting: BenchSetting) -> dict[str, Any]:
    """Train ``setting`` for a FLOP-counting iteration, the warm-up and the measured iterations; return its figures."""
    from torch.utils.flop_counter import FlopCounterMode

    from toolkit.engine.runs import Overrides, prepare_run
    from toolkit.plugins import get_registry

    # One extra first iteration counts FLOPs. It includes the content discriminator's
    # update, which runs every few iterations, so its count is the most an iteration costs.
    total = 1 + setting.warmup + setting.iterations
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-") as folder:
        prepared = prepare_run(
            setting.recipe,
            get_registry(),
            Overrides(
                data=setting.data,
                iterations=total,
                batch_size=setting.batch_size,
                image_size=setting.image_size,
                precision=setting.precision,
            ),
            device=setting.device,
            out=Path(folder) / "run",
            command=["toolkit", "bench"],
        )
        trainer = prepared.trainer
        device = trainer.device
        trainer.model.train()
        batches = _batches(trainer, setting, total)

        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for iteration in range(total):
            started = time.perf_counter()
            real, labels = next(batches)
            real = real.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if iteration == 0:
                counter = FlopCounterMode(display=False)
                with counter:
                    trainer.step(real, labels, iteration)
                flops = counter.get_total_flops()
                continue
            trainer.step(real, labels, iteration)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if iteration > setting.warmup:
                times.append(time.perf_counter() - started)

        if device.type == "cuda":
            peak_bytes = torch.cuda.max_memory_allocated(device)
            memory_kind = "CUDA allocator peak"
        else:
            peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            memory_kind = "peak resident set size"
        mean = statistics.fmean(times)
        return {
            **attrs.asdict(setting),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "precision": trainer.precision,
            "threads": torch.get_num_threads(),
            "seconds_per_iteration_mean": mean,
            "seconds_per_iteration_median": statistics.median(times),
            "images_per_second": setting.batch_size / mean,
            "peak_memory_bytes": peak_bytes,
            "peak_memory_kind": memory_kind,
            "flops_per_iteration": flops,
            "flops_per_second": flops / mean if flops else None,
            "torch_version": torch.__version__,
        }


def _batches(trainer, setting: BenchSetting, total: int):
    """Yield (images, labels): real batches through the DataLoader, or one random batch again and again."""
    if setting.synthetic:
        height, width = trainer.recipe.image_shape
        half = setting.batch_size // 2
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(setting.batch_size, 3, height, width, generator=generator) * 2 - 1
        labels = torch.tensor([0] * half + [1] * half)
        while True:
            yield images, labels
    from toolkit.data import make_loader

    loader = make_loader(
        trainer.data.train,
        batch_size=setting.batch_size,
        seed=0,
        num_workers=trainer.recipe.num_workers,
        pin_memory=trainer.device.type == "cuda",
        iterations=total,
    )
    yield from loader


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def run_in_subprocess(setting: BenchSetting, timeout: float | None = None) -> dict[str, Any]:
    """Measure ``setting`` in a fresh Python process and return its figures."""
    command = [sys.executable, "-m", "toolkit.engine.bench", json.dumps(attrs.asdict(setting))]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no error output"]
        return {**attrs.asdict(setting), "error": tail[0]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_table(results: list[dict[str, Any]]) -> str:
    """Render seconds per iteration as a Markdown table: recipes by rows, image sizes and batch sizes by columns."""
    columns = sorted({(result["image_size"], result["batch_size"]) for result in results})
    recipes = list(dict.fromkeys(result["recipe"] for result in results))
    header = "| recipe | " + " | ".join(f"S={size}, batch {batch}" for size, batch in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for recipe in recipes:
        cells = []
        for size, batch in columns:
            match = [r for r in results if r["recipe"] == recipe and (r["image_size"], r["batch_size"]) == (size, batch)]
            cells.append(_cell(match[0]) if match else "")
        lines.append(f"| {Path(recipe).stem} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    text = (
        f"{result['seconds_per_iteration_mean']:.3f} s/it (median {result['seconds_per_iteration_median']:.3f}), "
        f"{result['images_per_second']:.1f} img/s, {result['peak_memory_bytes'] / 2**30:.2f} GiB"
    )
    if result.get("flops_per_second"):
        text += f", {result['flops_per_second'] / 1e12:.2f} TFLOP/s"
    return text


def plot_results(results: list[dict[str, Any]], path: Path) -> None:
    """Draw mean seconds per iteration as grouped bars: one group per recipe, one bar per setting."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    measured = [result for result in results if "error" not in result]
    recipes = list(dict.fromkeys(Path(result["recipe"]).stem for result in measured))
    settings = sorted({(result["image_size"], result["batch_size"]) for result in measured})
    figure, axes = pyplot.subplots(figsize=(max(6, 1.6 * len(recipes) * max(1, len(settings)) / 2), 4), dpi=100)
    width = 0.8 / max(1, len(settings))
    for offset, (size, batch) in enumerate(settings):
        heights = []
        for recipe in recipes:
            match = [
                r for r in measured
                if Path(r["recipe"]).stem == recipe and (r["image_size"], r["batch_size"]) == (size, batch)
            ]
            heights.append(match[0]["seconds_per_iteration_mean"] if match else 0.0)
        positions = [index + offset * width for index in range(len(recipes))]
        axes.bar(positions, heights, width=width, label=f"S={size}, batch {batch}")
    axes.set_xticks([index + width * (len(settings) - 1) / 2 for index in range(len(recipes))])
    axes.set_xticklabels(recipes, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("seconds per iteration (mean)")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure(BenchSetting(**json.loads(sys.argv[1])))))
