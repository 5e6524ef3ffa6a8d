"""``toolkit eval`` on runs made by the engine: metrics per direction, the report, the domain classifier and its cache."""

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from run_factory import make_run
from toolkit.cli import cli
from toolkit.data.folders import DomainFolders
from toolkit.engine.grid import HEADING_HEIGHT
from toolkit.errors import DataError, ToolkitError
from toolkit.evaluation import classifier
from toolkit.evaluation.runner import EvalSettings, evaluate


def _write_domain(folder, count, colour, generator, size=(140, 90)):
    folder.mkdir(parents=True)
    for index in range(count):
        noise = torch.randint(0, 60, (size[1], size[0], 3), generator=generator)
        pixels = (noise + torch.tensor(colour)).clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")


@pytest.fixture(scope="module")
def nonsquare_data(tmp_path_factory):
    """A two-domain dataset the other tests never see: 140x90 images, reddish (A) and bluish (B)."""
    root = tmp_path_factory.mktemp("nonsquare")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("test", 4)):
        _write_domain(root / f"{split}A", count, (180, 40, 40), generator)
        _write_domain(root / f"{split}B", count, (40, 40, 180), generator)
    return root


@pytest.fixture(scope="module")
def nonsquare_runs(registry, nonsquare_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    return [
        make_run(recipe, registry, nonsquare_data, folder / recipe, image_size=(64, 96)) for recipe in ("gmdrit", "mdmm")
    ]


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    from torchvision.models import inception_v3

    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_eval_compares_runs_on_an_unseen_nonsquare_dataset(nonsquare_runs, nonsquare_data, inception_file, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        cli,
        ["eval", *map(str, nonsquare_runs), "--data", str(nonsquare_data), "--samples", "2",
         "--inception-weights", str(inception_file), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output

    metrics = json.loads((out / "metrics.json").read_text())
    assert [run["prior"] for run in metrics["runs"]] == ["gmvae", "gaussian"]
    for run in metrics["runs"]:
        assert run["image_size"] == [64, 96]
        assert list(run["directions"]) == ["A->B", "B->A"]
        for values in run["directions"].values():
            assert values["inputs"] == 4
            assert values["samples"] == 2
            assert 0 <= values["ndb"] <= values["ndb_bins"] == 2
            assert 0 <= values["jsd"] <= 0.6932
            assert 0 <= values["accuracy"] <= 1
            assert values["diversity_l1"] > 0
            assert values["fid"] > -1e-6
            assert "kid" in values
            assert "kid_std" in values
    gmvae, gaussian = metrics["runs"]
    assert 0.5 <= gmvae["clustering"]["accuracy"] <= 1
    assert 0 <= gmvae["clustering"]["nmi"] <= 1
    assert gmvae["clustering"]["images"] == 8
    assert "clustering" not in gaussian
    assert "lpips" in metrics["not_computed"]
    assert "alex.pth" in metrics["not_computed"]["lpips"]
    assert metrics["classifier"]["test_images"] == 8

    report = (out / "report.md").read_text()
    assert report.count("| gmdrit | gmvae |") == 2
    assert report.count("| mdmm | gaussian |") == 2
    assert report.count("| gmdrit | 0.") == 1  # the clustering row
    assert "## Not computed" in report
    assert "clustering accuracy" in report
    for key in ("ndb", "jsd", "accuracy", "diversity_l1", "fid", "kid"):
        assert (out / "charts" / f"{key}.png").is_file()
        assert f"charts/{key}.png" in report
    with Image.open(out / "grids" / "gmdrit_A_to_B.png") as grid:
        assert grid.size == (3 * 96 + 4 * 2, HEADING_HEIGHT + 4 * 64 + 5 * 2)


def test_eval_without_weights_reports_why(nonsquare_runs, nonsquare_data, tmp_path):
    payload = evaluate(nonsquare_runs[1:], str(nonsquare_data), tmp_path / "eval", EvalSettings(metrics=("fid", "diversity"), samples=2))
    assert "inception_v3_google-0cc3c7bd.pth" in payload["not_computed"]["fid"]
    assert "--inception-weights" in payload["not_computed"]["kid"]
    values = payload["runs"][0]["directions"]["A->B"]
    assert "fid" not in values
    assert values["diversity_l1"] > 0


def test_eval_errors_name_the_fix(nonsquare_runs, nonsquare_data, horse2zebra_mini, tmp_path):
    with pytest.raises(ToolkitError, match="unknown metric"):
        evaluate(nonsquare_runs, nonsquare_data, tmp_path, EvalSettings(metrics=("fidd",)))
    with pytest.raises(ToolkitError, match="none.pth does not exist"):
        evaluate(nonsquare_runs, nonsquare_data, tmp_path, EvalSettings(metrics=("fid",), inception_weights=tmp_path / "none.pth"))
    damaged = tmp_path / "damaged.pth"
    damaged.write_text("junk")
    with pytest.raises(ToolkitError, match="could not be read as a PyTorch state dict"):
        evaluate(nonsquare_runs, nonsquare_data, tmp_path, EvalSettings(metrics=("fid",), inception_weights=damaged))
    no_test = tmp_path / "no_test"
    for domain in ("A", "B"):
        (no_test / f"train{domain}").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(no_test / f"train{domain}" / "x.png")
    with pytest.raises(DataError, match="no test split"):
        evaluate(nonsquare_runs, no_test, tmp_path, EvalSettings())


def test_classifier_separates_domains_and_accuracy_counts_matches(tmp_path):
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(96) % 2
    colours = torch.tensor([[200, 30, 30], [30, 30, 200]])[labels]
    images = (torch.randint(0, 50, (96, 3, 72, 72), generator=generator) + colours[:, :, None, None]).clamp(0, 255).to(torch.uint8)

    model = classifier.train_classifier(images[:64], labels[:64], num_domains=2, epochs=4, batch_size=16)
    predicted = model.predict(images[64:])

    expected = sum(int(p == t) for p, t in zip(predicted.tolist(), labels[64:].tolist())) / 32
    assert classifier.accuracy(model, images[64:], labels[64:]) == pytest.approx(expected)
    assert expected == 1.0


def test_classifier_is_cached_per_dataset(horse2zebra_mini, tmp_path, monkeypatch):
    train = DomainFolders.open(horse2zebra_mini, "train")
    test = DomainFolders.open(horse2zebra_mini, "test")
    model, record = classifier.load_or_train(train, test, epochs=1, cache_dir=tmp_path)
    assert record["train_images"] == 20
    assert record["test_images"] == 20

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr(classifier, "train_classifier", no_training)
    cached, cached_record = classifier.load_or_train(train, test, epochs=1, cache_dir=tmp_path)
    assert cached_record["test_accuracy"] == record["test_accuracy"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(cached.state_dict()[name], tensor), name
    # Other settings train a new classifier.
    with pytest.raises(AssertionError, match="cached classifier"):
        classifier.load_or_train(train, test, epochs=2, cache_dir=tmp_path)
