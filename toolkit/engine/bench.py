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

from toolkit.recipe import MEMORY_OPTIONS

log = logging.getLogger(__name__)

# Prefix of the ToolkitError message that a failed measuring process writes as its last stderr line.
ERROR_PREFIX = "error: "


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
    activation_checkpointing: bool = False
    channels_last: bool = False


def plan_settings(
    recipes: list[str],
    image_sizes: list[int],
    batch_sizes: list[int],
    checkpointing: tuple[bool, ...],
    **common: Any,
) -> list[BenchSetting]:
    """Return one setting per recipe, image size, batch size and checkpointing choice, checked before any is measured.

    A missing or broken recipe file and an image or batch size the recipe rejects raise
    the recipe's error here, so nothing is measured for a command that would fail.
    """
    from toolkit.recipe import load_recipe

    settings = []
    for recipe_file in recipes:
        recipe = load_recipe(recipe_file)
        for size in image_sizes:
            for batch in batch_sizes:
                recipe.evolve(image_size=size, batch_size=batch)  # raises RecipeError for a size the recipe rejects
                for recompute in checkpointing:
                    settings.append(
                        BenchSetting(
                            recipe=str(recipe_file),
                            image_size=size,
                            batch_size=batch,
                            activation_checkpointing=recompute,
                            **common,
                        )
                    )
    return settings


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
                activation_checkpointing=setting.activation_checkpointing,
                channels_last=setting.channels_last,
            ),
            device=setting.device,
            out=Path(folder) / "run",
            command=["toolkit", "bench"],
        )
        trainer = prepared.trainer
        device = trainer.device
        trainer.model.train()
        # One batch more than the timed loop uses, for the memory-profiling iteration on the CPU.
        batches = _batches(trainer, setting, total + 1)

        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for iteration in range(total):
            started = time.perf_counter()
            real, labels = next(batches)
            real = real.to(device, non_blocking=True, memory_format=trainer.memory_format)
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

        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if device.type == "cuda":
            peak_bytes = torch.cuda.max_memory_allocated(device)
            memory_kind = "CUDA allocator peak"
        else:
            real, labels = next(batches)
            real = real.contiguous(memory_format=trainer.memory_format)
            peak_bytes = tensor_memory_peak(trainer, real, labels)
            memory_kind = "peak tensor memory"
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
            "peak_rss_bytes": peak_rss,
            "flops_per_iteration": flops,
            "flops_per_second": flops / mean if flops else None,
            "torch_version": torch.__version__,
        }


def tensor_memory_peak(trainer, real: torch.Tensor, labels: torch.Tensor) -> int:
    """Return the most bytes of CPU tensors alive at once during one training iteration.

    That is the state kept between iterations (weights, buffers, gradients, optimizer
    moments), counted from the tensors themselves, plus the highest point of the
    allocations minus frees that ``torch.profiler`` records during the iteration.
    Unlike the resident set size, this figure does not depend on how the C allocator
    returns freed memory to the system, so it shows what activation checkpointing saves.
    """
    from torch.profiler import ProfilerActivity, profile

    state_bytes = _state_bytes(trainer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        trainer.step(real, labels, 0)
    # NOTE: the raw event list (kineto_results) and DeviceType are private in torch 2.14;
    # check them when the torch pin moves. FunctionEvent drops most "[memory]" events.
    cpu = torch._C._autograd.DeviceType.CPU
    events = [
        event
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == cpu
    ]
    running = highest = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        running += event.nbytes()
        highest = max(highest, running)
    return state_bytes + highest


def _state_bytes(trainer) -> int:
    """Bytes of the tensors a trainer keeps between iterations, each storage counted once."""
    storages: dict[int, int] = {}
    tensors = list(trainer.model.state_dict().values())
    tensors += [param.grad for param in trainer.model.parameters() if param.grad is not None]
    for optimizer in trainer.optimizers.optimizers.values():
        for state in optimizer.state.values():
            tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


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
        tail = completed.stderr.strip().splitlines()[-1:] or [f"exit status {completed.returncode}, no error output"]
        return {**attrs.asdict(setting), "error": tail[0].removeprefix(ERROR_PREFIX)}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def row_name(result: dict[str, Any]) -> str:
    """Name a result's row: the recipe's file stem, marked with the memory options that were on."""
    name = Path(result["recipe"]).stem
    options = [label for field, label in MEMORY_OPTIONS.items() if result.get(field)]
    return f"{name} ({', '.join(options)})" if options else name


def format_table(results: list[dict[str, Any]]) -> str:
    """Render seconds per iteration as a Markdown table: recipes by rows, image sizes and batch sizes by columns."""
    columns = sorted({(result["image_size"], result["batch_size"]) for result in results})
    rows = list(dict.fromkeys(row_name(result) for result in results))
    header = "| recipe | " + " | ".join(f"S={size}, batch {batch}" for size, batch in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for row in rows:
        cells = []
        for size, batch in columns:
            match = [
                r for r in results if row_name(r) == row and (r["image_size"], r["batch_size"]) == (size, batch)
            ]
            cells.append(_cell(match[0]) if match else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    measured = [result for result in results if "error" not in result]
    if measured:
        lines += ["", _caption(measured)]
    return "\n".join(lines)


def _caption(measured: list[dict[str, Any]]) -> str:
    """Describe the settings the results share and what the memory figure is."""

    def values(key: str) -> str:
        return " or ".join(str(value) for value in dict.fromkeys(result[key] for result in measured))

    data = values("synthetic").replace("True", "synthetic batches").replace("False", "real data")
    return (
        f"Device {values('device')} ({values('device_name')}), {values('threads')} threads, {values('precision')}, "
        f"{data}. Each cell: mean and median over the timed iterations, images per second, "
        f"{values('peak_memory_kind')} and achieved FLOP/s; bench.json also has the peak resident set size."
    )


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


def checkpointing_summary(results: list[dict[str, Any]]) -> str:
    """Compare peak memory and time with and without activation checkpointing, one line per measured pair."""
    lines = []
    measured = [result for result in results if "error" not in result]
    for plain in measured:
        if plain.get("activation_checkpointing"):
            continue
        key = (plain["recipe"], plain["image_size"], plain["batch_size"], plain.get("channels_last"))
        partners = [
            r for r in measured
            if r.get("activation_checkpointing")
            and (r["recipe"], r["image_size"], r["batch_size"], r.get("channels_last")) == key
        ]
        if not partners:
            continue
        recomputed = partners[0]
        before, after = plain["peak_memory_bytes"], recomputed["peak_memory_bytes"]
        slow_before, slow_after = plain["seconds_per_iteration_mean"], recomputed["seconds_per_iteration_mean"]
        lines.append(
            f"{Path(plain['recipe']).stem} at S={plain['image_size']}, batch {plain['batch_size']}: "
            f"activation checkpointing changes the {plain['peak_memory_kind']} from {before / 2**30:.2f} "
            f"to {after / 2**30:.2f} GiB ({(after - before) / before:+.0%}) and the time from "
            f"{slow_before:.3f} to {slow_after:.3f} s/it ({(slow_after - slow_before) / slow_before:+.0%}, "
            f"{plain['iterations']} timed iteration{'s' if plain['iterations'] != 1 else ''} each)"
        )
    return "\n".join(lines)


def plot_results(results: list[dict[str, Any]], path: Path) -> None:
    """Draw mean seconds per iteration and peak memory as grouped bars: one group per row, one bar per setting."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    measured = [result for result in results if "error" not in result]
    rows = list(dict.fromkeys(row_name(result) for result in measured))
    settings = sorted({(result["image_size"], result["batch_size"]) for result in measured})
    memory_kind = " or ".join(dict.fromkeys(result["peak_memory_kind"] for result in measured)) or "peak memory"
    panels = (
        ("seconds_per_iteration_mean", 1.0, "seconds per iteration (mean)"),
        ("peak_memory_bytes", 2.0**-30, f"{memory_kind} (GiB)"),
    )
    width_inches = max(6, 1.6 * len(rows) * max(1, len(settings)) / 2)
    figure, all_axes = pyplot.subplots(1, 2, figsize=(2 * width_inches, 4), dpi=100)
    width = 0.8 / max(1, len(settings))
    for axes, (key, scale, label) in zip(all_axes, panels):
        for offset, (size, batch) in enumerate(settings):
            heights = []
            for row in rows:
                match = [
                    r for r in measured if row_name(r) == row and (r["image_size"], r["batch_size"]) == (size, batch)
                ]
                heights.append(match[0][key] * scale if match else 0.0)
            positions = [index + offset * width for index in range(len(rows))]
            axes.bar(positions, heights, width=width, label=f"S={size}, batch {batch}")
        axes.set_xticks([index + width * (len(settings) - 1) / 2 for index in range(len(rows))])
        axes.set_xticklabels(rows, rotation=20, ha="right", fontsize=8)
        axes.set_ylabel(label)
        if measured:
            axes.legend(fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def _main() -> None:
    from toolkit.errors import ToolkitError

    logging.basicConfig(level=logging.WARNING)
    try:
        figures = measure(BenchSetting(**json.loads(sys.argv[1])))
    except ToolkitError as error:
        print(f"{ERROR_PREFIX}{error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(figures))


if __name__ == "__main__":
    _main()
