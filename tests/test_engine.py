"""The training engine on real data: every shipped recipe trains, runs resume exactly, and failures lose nothing."""

import csv
import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

from toolkit.engine.checkpoint import checkpoint_dirs, load_state
from toolkit.engine.runs import Overrides, prepare_run
from toolkit.engine.trainer import NonFiniteLossError, StopRequest, TrainingInterrupted
from toolkit.errors import RecipeError, ToolkitError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = sorted(path.stem for path in RECIPES.glob("*.py"))


def train(recipe, registry, data, out, iterations, resume=False, stop=None, **overrides):
    prepared = prepare_run(
        RECIPES / f"{recipe}.py" if isinstance(recipe, str) else recipe,
        registry,
        Overrides(data=str(data), iterations=iterations, image_size=overrides.pop("image_size", 64), **overrides),
        device="cpu",
        out=None if resume else out,
        resume=out if resume else None,
        command=["test"],
    )
    prepared.write_record()
    prepared.trainer.train(stop)
    return prepared


def read_rows(run_dir):
    with (run_dir / "losses.csv").open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("recipe", SHIPPED)
def test_shipped_recipe_trains_three_iterations(recipe, registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    train(recipe, registry, apple2orange, run_dir, iterations=3)

    rows = read_rows(run_dir)
    assert [int(row["iteration"]) for row in rows] == [0, 1, 2]
    for row in rows:
        for key in ("discriminator_total", "generator_total"):
            assert math.isfinite(float(row[key])), (key, row)
    assert rows[0]["content_discriminator/content_adversarial"] != ""
    assert rows[1]["content_discriminator/content_adversarial"] == ""
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["00000003"]
    assert (run_dir / "grids" / "00000003.png").is_file()
    assert (run_dir / "plots" / "discriminator_total.png").is_file()
    assert (run_dir / "plots" / "generator_total.png").is_file()
    assert (run_dir / "plots" / "encoder_generator_self_reconstruction.png").is_file()


def test_run_record_keeps_resolved_recipe(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    train("gmdrit_ttur", registry, apple2orange, run_dir, iterations=1)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["name"] == "gmdrit_ttur"
    assert record["seed"] == 0
    assert record["command"] == ["test"]
    assert record["toolkit_version"]
    assert record["domains"] == ["A", "B"]
    assert record["recipe"]["optimizer"]["params"]["discriminator_lr"] == 5e-5
    assert record["recipe"]["prior"]["params"]["num_components"] == 2
    assert record["recipe"]["image_size"] == 64
    assert record["recipe"]["data"]["params"]["root"] == str(apple2orange.resolve())


def test_grid_is_two_by_five(registry, apple2orange, tmp_path):
    from PIL import Image

    run_dir = tmp_path / "run"
    train("mdmm", registry, apple2orange, run_dir, iterations=1)
    with Image.open(run_dir / "grids" / "00000001.png") as grid:
        width, height = grid.size
    # 2 px padding around and between 64 px images, under a 14 px row of column headings.
    assert (width, height) == (5 * 66 + 2, 14 + 2 * 66 + 2)


def test_resume_equals_uninterrupted_run(registry, apple2orange, tmp_path):
    straight = tmp_path / "straight"
    train("gmdrit", registry, apple2orange, straight, iterations=4)

    split = tmp_path / "split"
    with pytest.raises(TrainingInterrupted):
        train("gmdrit", registry, apple2orange, split, iterations=4, stop=StopAfter(1))
    assert [path.name for path in checkpoint_dirs(split)] == ["00000002"]
    train("gmdrit", registry, apple2orange, split, iterations=4, resume=True)

    straight_rows = read_rows(straight)
    split_rows = read_rows(split)
    assert len(split_rows) == 4
    for a, b in zip(straight_rows, split_rows):
        for key in a:
            if key != "seconds":
                assert a[key] == b[key], (key, a["iteration"])

    weights_a = safetensors.torch.load_file(checkpoint_dirs(straight)[-1] / "model.safetensors")
    weights_b = safetensors.torch.load_file(checkpoint_dirs(split)[-1] / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    record = json.loads((split / "run.json").read_text())
    assert len(record["commands"]) == 2


def test_resume_rejects_changed_model(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    train("mdmm", registry, apple2orange, run_dir, iterations=1)
    with pytest.raises(RecipeError, match="cannot resume .* different recipe"):
        train("gmdrit", registry, apple2orange, run_dir, iterations=2, resume=True)


def test_out_folder_with_run_is_not_overwritten(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    train("mdmm", registry, apple2orange, run_dir, iterations=1)
    with pytest.raises(ToolkitError, match="already contains a run"):
        train("mdmm", registry, apple2orange, run_dir, iterations=2)


class StopAfter(StopRequest):
    """A stop request that turns on after ``checks`` iterations, as Ctrl-C would."""

    def __init__(self, checks):
        super().__init__()
        self.checks = checks

    @property
    def requested(self):
        self.checks -= 1
        return self.checks < 0

    @requested.setter
    def requested(self, value):
        pass


def test_interrupt_writes_checkpoint(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="checkpoint saved in"):
        train("mdmm", registry, apple2orange, run_dir, iterations=10, stop=StopAfter(2))
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["00000003"]
    assert load_state(checkpoint_dirs(run_dir)[-1])["iteration"] == 3


def test_nonfinite_losses_skip_then_stop(registry, apple2orange, tmp_path):
    recipe_file = tmp_path / "nan_recipe.py"
    recipe_file.write_text(
        "from toolkit.recipe import load_recipe, loss\n"
        f"base = load_recipe({str(RECIPES / 'mdmm.py')!r})\n"
        "recipe = base.evolve(losses=tuple(item if item.name != 'gaussian_kl' else loss('gaussian_kl', weight=float('nan')) "
        "for item in base.losses), max_nonfinite_updates=3, checkpoint_every=1)\n"
    )
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="3 updates in a row had a non-finite loss"):
        train(recipe_file, registry, apple2orange, run_dir, iterations=10)
    # The skipped updates left the weights finite, and the periodic checkpoints are intact.
    checkpoints = checkpoint_dirs(run_dir)
    assert checkpoints
    weights = safetensors.torch.load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


@pytest.mark.parametrize(("recipe", "batches"), [("mdmm", [4, 2, 2]), ("mdmm_mode_seeking", [4, 4, 2])])
def test_generator_calls_per_iteration(recipe, batches, registry, apple2orange, tmp_path):
    prepared = prepare_run(
        RECIPES / f"{recipe}.py",
        registry,
        Overrides(data=str(apple2orange), iterations=1, image_size=64),
        device="cpu",
        out=tmp_path / "run",
        command=["test"],
    )
    calls = []
    prepared.trainer.model.generator.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    prepared.trainer.train()
    # The stacked cross and self inputs, the random inputs (two draws when mode seeking
    # needs a second), then the cross-cycle.
    assert calls == batches


def test_channels_last_run_matches_plain_run(registry, apple2orange, tmp_path):
    rows = []
    for channels_last in (False, True):
        run_dir = tmp_path / str(channels_last)
        prepared = train("mdmm", registry, apple2orange, run_dir, iterations=2, precision="fp32", channels_last=channels_last)
        rows.append(read_rows(run_dir))
    conv = prepared.trainer.model.generator.trunk[0].body[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for plain, recomputed in zip(*rows):
        for key in ("discriminator_total", "generator_total", "encoder_generator/self_reconstruction"):
            assert float(recomputed[key]) == pytest.approx(float(plain[key]), rel=1e-4), key

    # The checkpoint contains ordinary tensors, and a channels-last run resumes without the option.
    train("mdmm", registry, apple2orange, tmp_path / "True", iterations=3, resume=True, precision="fp32", channels_last=False)
    assert len(read_rows(tmp_path / "True")) == 3


def test_bf16_autocast_trains_finite(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    prepared = train("gmdrit", registry, apple2orange, run_dir, iterations=2, precision="bf16")
    assert prepared.trainer.precision == "bf16"
    assert json.loads((run_dir / "run.json").read_text())["precision"] == "bf16"
    for row in read_rows(run_dir):
        assert math.isfinite(float(row["discriminator_total"]))
        assert math.isfinite(float(row["generator_total"]))
    weights = safetensors.torch.load_file(checkpoint_dirs(run_dir)[-1] / "model.safetensors")
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())


def test_auto_precision_follows_cpu_bf16(registry, apple2orange, tmp_path):
    from toolkit.engine.precision import cpu_has_bf16

    prepared = train("mdmm", registry, apple2orange, tmp_path / "run", iterations=1)
    assert prepared.trainer.precision == ("bf16" if cpu_has_bf16() else "fp32")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == prepared.trainer.precision


def test_default_run_folders_are_unique(tmp_path):
    from toolkit.engine.runs import claim_run_dir

    first = claim_run_dir("mdmm", root=tmp_path)
    second = claim_run_dir("mdmm", root=tmp_path)
    assert first != second
    assert first.is_dir()
    assert second.is_dir()
    assert second.name.startswith(first.name)


def test_folder_of_aborted_run_is_not_reused(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "losses.csv").write_text("iteration\n0\n")
    with pytest.raises(ToolkitError, match="stopped before its first checkpoint"):
        train("mdmm", registry, apple2orange, run_dir, iterations=1)
    assert (run_dir / "losses.csv").read_text() == "iteration\n0\n"


def test_resume_mismatch_names_changed_fields(registry, apple2orange, horse2zebra_mini, tmp_path):
    run_dir = tmp_path / "run"
    train("mdmm", registry, apple2orange, run_dir, iterations=1)
    with pytest.raises(RecipeError) as error:
        train("mdmm", registry, horse2zebra_mini, run_dir, iterations=2, resume=True)
    message = str(error.value)
    assert "data.params.root" in message
    assert "horse2zebra_mini" in message
    assert len(message) < 600


def test_finished_run_resume_changes_nothing(registry, apple2orange, tmp_path):
    run_dir = tmp_path / "run"
    train("mdmm", registry, apple2orange, run_dir, iterations=1)
    before = (run_dir / "run.json").read_text()
    with pytest.raises(ToolkitError, match="already at iteration 1"):
        train("mdmm", registry, apple2orange, run_dir, iterations=1, resume=True)
    assert (run_dir / "run.json").read_text() == before

