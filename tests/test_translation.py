"""Translation with trained runs: the Python API and ``toolkit translate`` on checkpoints made by the engine."""

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from run_factory import make_run
from toolkit.cli import cli
from toolkit.engine.runs import Overrides, prepare_run
from toolkit.errors import ToolkitError
from toolkit.translation import TrainedRun


@pytest.fixture(scope="module")
def gmvae_run(registry, horse2zebra_mini, tmp_path_factory):
    return make_run("gmdrit", registry, horse2zebra_mini, tmp_path_factory.mktemp("gmdrit") / "run")


@pytest.fixture(scope="module")
def gaussian_run(registry, horse2zebra_mini, tmp_path_factory):
    return make_run("mdmm", registry, horse2zebra_mini, tmp_path_factory.mktemp("mdmm") / "run")


def input_files(root, count=2, domain="A"):
    return sorted((root / f"test{domain}").iterdir())[:count]


def test_translate_with_a_seed_is_deterministic(gmvae_run, horse2zebra_mini):
    run = TrainedRun.load(gmvae_run)
    images = run.load_images(input_files(horse2zebra_mini))

    first = run.translate(images, "B", samples=3, seed=7)
    again = run.translate(images, "B", samples=3, seed=7)
    other = run.translate(images, "B", samples=3, seed=8)

    assert first.shape == (2, 3, 3, 64, 64)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Different prior samples give different outputs for one input.
    assert (first[0, 0] - first[0, 1]).abs().max() > 1e-4


def test_translate_leaves_the_global_rng_alone(gmvae_run, horse2zebra_mini):
    run = TrainedRun.load(gmvae_run)
    images = run.load_images(input_files(horse2zebra_mini, 1))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    run.translate(images, "B", samples=2, seed=1)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("recipe_run", ["gmvae_run", "gaussian_run"])
def test_own_reference_reproduces_the_self_reconstruction(recipe_run, registry, horse2zebra_mini, request):
    run_dir = request.getfixturevalue(recipe_run)
    run = TrainedRun.load(run_dir)
    # Resuming loads the checkpoint into the training model; the longer schedule is never trained.
    prepared = prepare_run(
        run.record["recipe_file"], registry, Overrides(iterations=2), device="cpu", resume=run_dir, command=["test"]
    )
    model = prepared.trainer.model.eval()
    if hasattr(model.prior, "current_temperature"):
        model.prior.current_temperature = run.prior.current_temperature
    real = run.load_images(input_files(horse2zebra_mini, 2, "A") + input_files(horse2zebra_mini, 2, "B"))
    labels = torch.tensor([0, 0, 1, 1])

    torch.manual_seed(11)
    with torch.no_grad():
        self_recon = model(real, labels).self_recon
    translated = run.translate_like(real, real, to=labels, seed=11)

    torch.testing.assert_close(translated, self_recon.clamp(-1, 1), atol=2e-5, rtol=0)


def test_translate_at_another_size(gaussian_run, horse2zebra_mini):
    run = TrainedRun.load(gaussian_run)
    images = run.load_images(input_files(horse2zebra_mini), image_size=(96, 128))
    outputs = run.translate(images, 1, samples=2, seed=0)
    assert outputs.shape == (2, 2, 3, 96, 128)
    assert outputs.min() >= -1
    assert outputs.max() <= 1
    with pytest.raises(ToolkitError, match="multiple of 4"):
        run.load_images(input_files(horse2zebra_mini), image_size=66)


def test_domains_by_name_folder_name_or_index(gaussian_run):
    run = TrainedRun.load(gaussian_run)
    assert [run.domain_index(name) for name in ("A", "trainB", "testA", 1, "0")] == [0, 1, 0, 1, 0]
    with pytest.raises(ToolkitError, match="unknown domain 'C'; this run's domains are 0 = A, 1 = B"):
        run.domain_index("C")
    with pytest.raises(ToolkitError, match="unknown domain 2"):
        run.domain_index(2)


def test_interpolation_strip_runs_between_its_end_points(gmvae_run, horse2zebra_mini):
    run = TrainedRun.load(gmvae_run)
    images = run.load_images(input_files(horse2zebra_mini, 1))
    references = run.load_images(input_files(horse2zebra_mini, 2, "B"))
    start = run.reference_attributes(references[:1], "B", use_mean=True)
    end = run.reference_attributes(references[1:], "B", use_mean=True)

    strip = run.interpolate(images, "B", steps=4, start=start, end=end)

    assert strip.shape == (1, 4, 3, 64, 64)
    content = run.encode_content(images)
    torch.testing.assert_close(strip[:, 0], run.generate(content, start))
    torch.testing.assert_close(strip[:, -1], run.generate(content, end))


def test_gmvae_prior_samples_come_from_the_target_component(gmvae_run):
    run = TrainedRun.load(gmvae_run)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        samples = run.sample_attributes("B", 4000)
    with torch.no_grad():
        mean, var = run.prior.prior_parameters(torch.tensor([[0.0, 1.0]]))
    expected = torch.distributions.Normal(mean[0], var[0].sqrt())
    torch.testing.assert_close(samples.z.mean(0), expected.mean, atol=4 * float(expected.stddev.max()) / 4000**0.5, rtol=0)
    assert torch.equal(samples.code, torch.tensor([[0.0, 1.0]]).expand(4000, 2))


def test_checkpoint_by_iteration_and_errors(gaussian_run, tmp_path):
    assert TrainedRun.load(gaussian_run, checkpoint=1).iteration == 1
    with pytest.raises(ToolkitError, match="no checkpoint at iteration 5; it has: 1"):
        TrainedRun.load(gaussian_run, checkpoint=5)
    with pytest.raises(ToolkitError, match="not a run folder"):
        TrainedRun.load(tmp_path)
    with pytest.raises(ToolkitError, match="not found"):
        TrainedRun.load(tmp_path / "missing")


def test_cli_translate_writes_images_and_grids(gmvae_run, horse2zebra_mini, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in input_files(horse2zebra_mini, 2):
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"

    result = CliRunner().invoke(
        cli, ["translate", str(gmvae_run), "--input", str(inputs), "--to", "B", "--samples", "3", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*_grid.png"))) == 2
    stem = input_files(horse2zebra_mini, 1)[0].stem
    assert sorted(path.name for path in (out / stem).iterdir()) == ["B_00.png", "B_01.png", "B_02.png"]
    with Image.open(out / f"{stem}_grid.png") as grid:
        assert grid.width > 4 * 64


def test_cli_translate_reference_and_interpolation(gmvae_run, horse2zebra_mini, tmp_path):
    image = str(input_files(horse2zebra_mini, 1)[0])
    first, second = (str(path) for path in input_files(horse2zebra_mini, 2, "B"))
    runner = CliRunner()

    result = runner.invoke(cli, ["translate", str(gmvae_run), "--input", image, "--to", "B", "--reference", first, "--out", str(tmp_path / "ref")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ref").rglob("B_*.png"))) == 1

    result = runner.invoke(
        cli,
        ["translate", str(gmvae_run), "--input", image, "--to", "1", "--reference", first, "--reference", second,
         "--interpolate", "5", "--out", str(tmp_path / "strip")],
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "strip").rglob("B_*.png"))) == 5


def test_cli_translate_errors_name_the_fix(gmvae_run, horse2zebra_mini, tmp_path):
    image = str(input_files(horse2zebra_mini, 1)[0])
    runner = CliRunner()
    result = runner.invoke(cli, ["translate", str(gmvae_run), "--input", image, "--to", "zebra", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown domain 'zebra'; this run's domains are 0 = A, 1 = B" in result.output

    result = runner.invoke(cli, ["translate", str(gmvae_run), "--input", str(tmp_path / "nothing.jpg"), "--to", "B", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "input '" in result.output
    assert "not found" in result.output

    result = runner.invoke(cli, ["translate", str(gmvae_run), "--input", image, "--to", "B", "--samples", "2", "--reference", image, "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "does not combine with --reference" in result.output
