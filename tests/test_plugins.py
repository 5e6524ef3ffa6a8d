"""Plugin packages: the example third-party package end to end, name clashes, broken plugins, `toolkit list`."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.components import LossTerm
from toolkit.engine.context import StepContext
from toolkit.errors import PluginError
from toolkit.hookspecs import hookimpl
from toolkit.plugins import Plugins

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "toolkit-hinge-loss"
# Generous limits: a cold `python -m toolkit` start imports torch and torchvision.
COMMAND_TIMEOUT_S = 120
TRAINING_TIMEOUT_S = 300


def _toolkit(*args: str, pythonpath: Path, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python -m toolkit ARGS`` from the repository root with ``pythonpath`` in front of PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(part for part in (str(pythonpath), env.get("PYTHONPATH", "")) if part)
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"exit status {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture(scope="module")
def hinge_site(tmp_path_factory) -> Path:
    """A folder where the example package toolkit-hinge-loss is installed, for PYTHONPATH."""
    # pip builds a local folder in place and leaves build/ and *.egg-info behind, so
    # build a copy to keep the docs folder clean.
    source = tmp_path_factory.mktemp("hinge_source") / "toolkit-hinge-loss"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("hinge_site")
    command = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--target", str(site), str(source),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, _explain(result)
    return site


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    """A folder holding the installed-package metadata of 'fake-broken', whose plugin module raises ImportError."""
    site = tmp_path_factory.mktemp("broken_site")
    dist_info = site / "fake_broken-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-broken\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[toolkit.plugins]\nbroken = fake_broken_plugin\n")
    (site / "fake_broken_plugin.py").write_text(
        'raise ImportError("fake_broken_plugin needs missing_dependency, which is not installed")\n'
    )
    return site


# The example package, installed


def test_example_loss_listed_with_package(hinge_site):
    result = _toolkit("list", "--kind", "loss", pythonpath=hinge_site)

    assert result.returncode == 0, _explain(result)
    assert "hinge_adversarial  [toolkit-hinge-loss 0.1.0]" in result.stdout
    assert "adversarial  [drit-toolkit " in result.stdout
    assert "failed to load" not in result.stderr


def test_example_package_listed_with_hooks(hinge_site):
    result = _toolkit("plugins", pythonpath=hinge_site)

    assert result.returncode == 0, _explain(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("toolkit-hinge-loss 0.1.0 ")]
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith("hooks: register_commands, register_components")


def test_example_command_hinge_info_runs(hinge_site):
    result = _toolkit("hinge-info", pythonpath=hinge_site)

    assert result.returncode == 0, _explain(result)
    assert "hinge_adversarial" in result.stdout
    assert "mean(relu(1 - D(real))) + mean(relu(1 + D(fake.detach())))" in result.stdout


@pytest.mark.slow
def test_example_recipe_trains_two_iterations(hinge_site, apple2orange, tmp_path):
    # The example recipe with narrow networks, so that two CPU iterations take seconds.
    recipe_file = tmp_path / "mdmm_hinge_small.py"
    recipe_file.write_text(
        "from toolkit.recipe import attribute_encoder, content_encoder, discriminator, load_recipe\n"
        f"hinge = load_recipe({str(EXAMPLE / 'recipe_mdmm_hinge.py')!r})\n"
        "recipe = hinge.evolve(\n"
        "    content_encoder=content_encoder('drit', channels=8),\n"
        "    attribute_encoder=attribute_encoder('drit', channels=8),\n"
        "    discriminator=discriminator('drit', channels=8),\n"
        "    content_discriminator=discriminator('content', channels=16),\n"
        "    num_workers=0,\n"
        ")\n"
    )
    run_dir = tmp_path / "run"

    result = _toolkit(
        "run", str(recipe_file), "--data", str(apple2orange), "--iterations", "2", "--image-size", "64",
        "--out", str(run_dir), "--device", "cpu",
        pythonpath=hinge_site, timeout=TRAINING_TIMEOUT_S,
    )  # fmt: skip

    assert result.returncode == 0, _explain(result)
    with (run_dir / "losses.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    columns = list(rows[0])
    assert len(rows) == 2
    assert "discriminator/hinge_adversarial" in columns
    assert "encoder_generator/hinge_adversarial" in columns
    assert "generator/hinge_adversarial" in columns
    assert "discriminator/adversarial" not in columns
    assert (run_dir / "checkpoints" / "00000002" / "model.safetensors").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    plugins_by_loss = {item["name"]: item["plugin"] for item in record["recipe"]["losses"]}
    assert plugins_by_loss["hinge_adversarial"] == "toolkit-hinge-loss"


def test_hinge_loss_matches_hand_computation():
    spec = importlib.util.spec_from_file_location("toolkit_hinge_loss", EXAMPLE / "toolkit_hinge_loss" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    term = module.HingeAdversarial(weight=2.0)

    # Each image is one pixel. D_encoded returns the pixel values as logits, and D_random twice them.
    def discriminator(scale):
        return lambda images: (scale * images, torch.zeros(images.shape[0], 2))

    model = SimpleNamespace(image_discriminators={"encoded": discriminator(1.0), "random": discriminator(2.0)})
    real = torch.tensor([0.5, -2.0]).view(2, 1, 1, 1)
    cross = torch.tensor([0.0, 3.0]).view(2, 1, 1, 1).requires_grad_()
    random = torch.tensor([-0.5, 1.0]).view(2, 1, 1, 1).requires_grad_()
    out = SimpleNamespace(cross=cross, random=random)
    labels = torch.tensor([0, 1])

    # D_encoded: mean(relu(1 - [0.5, -2])) = 1.75, mean(relu(1 + [0, 3])) = 2.5.
    # D_random: mean(relu(1 - [1, -4])) = 2.5, mean(relu(1 + [-1, 2])) = 1.5.
    discriminator_loss = term.discriminator(StepContext(model, real, labels, out, 0))
    assert discriminator_loss.item() == pytest.approx(8.25)
    # The stub discriminators have no weights, so a graph could only lead to the fakes.
    assert not discriminator_loss.requires_grad

    # -2 * mean([0, 3]) and -2 * mean(2 * [-0.5, 1]).
    encoder_generator_loss = term.encoder_generator(StepContext(model, real, labels, out, 0))
    generator_loss = term.generator(StepContext(model, real, labels, out, 0))
    assert encoder_generator_loss.item() == pytest.approx(-3.0)
    assert generator_loss.item() == pytest.approx(-1.0)
    encoder_generator_loss.backward()
    assert cross.grad.flatten().tolist() == [-1.0, -1.0]


# Name clashes and broken plugins


class _LossPlugin:
    """A plugin object that registers ``factory`` as the loss 'shared_loss'."""

    def __init__(self, factory):
        self.factory = factory

    @hookimpl
    def register_components(self, register):
        register("loss", "shared_loss", self.factory)


def test_same_name_two_packages_raises():
    plugins = Plugins()
    plugins.add(_LossPlugin(LossTerm), name="first", package="first-losses", version="1.0")

    with pytest.raises(PluginError) as raised:
        plugins.add(_LossPlugin(LossTerm), name="second", package="second-losses", version="2.0")

    message = str(raised.value)
    assert "loss 'shared_loss'" in message
    assert "'first-losses'" in message
    assert "'second-losses'" in message


def test_broken_plugin_reported_others_load(broken_site):
    result = _toolkit("list", pythonpath=broken_site)

    assert result.returncode == 0, _explain(result)
    assert "adversarial  [drit-toolkit " in result.stdout
    assert "gmvae  [drit-toolkit " in result.stdout
    assert "fake-broken: ImportError: fake_broken_plugin needs missing_dependency" in result.stderr


def test_unknown_component_names_broken_plugin(broken_site, tmp_path):
    recipe_file = tmp_path / "needs_hinge.py"
    recipe_file.write_text(
        "from toolkit.recipe import dataset, load_recipe, loss\n"
        "mdmm = load_recipe('recipes/mdmm.py')\n"
        f"recipe = mdmm.with_loss(loss('hinge_adversarial')).evolve(data=dataset('folders', root={str(tmp_path)!r}))\n"
    )

    result = _toolkit("run", str(recipe_file), "--device", "cpu", "--out", str(tmp_path / "run"), pythonpath=broken_site)

    assert result.returncode != 0
    assert "unknown loss 'hinge_adversarial'" in result.stderr
    assert "'fake-broken' (ImportError: fake_broken_plugin needs missing_dependency" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


# `toolkit list`, in process


def test_list_wildcard_filters_names():
    result = CliRunner().invoke(cli, ["list", "gauss*"])

    assert result.exit_code == 0, result.output
    assert "gaussian  [drit-toolkit " in result.stdout
    assert "gaussian_kl  [drit-toolkit " in result.stdout
    assert "gmvae" not in result.stdout
    assert "adversarial" not in result.stdout


def test_list_json_has_parameter_defaults():
    result = CliRunner().invoke(cli, ["list", "--json", "*"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    components = {(item["kind"], item["name"]): item for item in payload["components"]}
    # MDMM's attribute code has 8 dimensions, and DRIT++ weights the Gaussian KL by 0.01 and uses Adam betas (0.5, 0.999).
    assert components[("prior", "gaussian")]["parameters"] == {"latent_size": 8}
    assert components[("loss", "gaussian_kl")]["parameters"] == {"weight": 0.01}
    assert components[("optimizer", "adam")]["parameters"]["betas"] == [0.5, 0.999]
    assert components[("loss", "gaussian_kl")]["package"] == "drit-toolkit"
    assert payload["failed_plugins"] == []
