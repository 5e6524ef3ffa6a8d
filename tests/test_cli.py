"""The ``toolkit`` command as a user types it: listings, a short run and the errors for bad input."""

import json
from pathlib import Path

from click.testing import CliRunner

from toolkit.cli import cli

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def test_list_kind_prior_shows_both_priors():
    result = invoke("list", "--kind", "prior")
    assert result.exit_code == 0
    assert "gaussian  [drit-toolkit" in result.output
    assert "gmvae  [drit-toolkit" in result.output
    assert "latent_size=108" in result.output
    assert "generator:" not in result.output


def test_list_json_has_parameters():
    result = invoke("list", "ada*", "--json")
    payload = json.loads(result.output)
    names = [(item["kind"], item["name"]) for item in payload["components"]]
    assert names == [("optimizer", "adam")]
    assert payload["components"][0]["parameters"]["betas"] == [0.5, 0.999]


def test_plugins_lists_first_party_hooks():
    result = invoke("plugins", "--json")
    payload = json.loads(result.output)
    packages = {item["package"] for item in payload["plugins"]}
    assert "drit-toolkit" in packages
    hooks = {hook for item in payload["plugins"] for hook in item["hooks"]}
    assert "register_components" in hooks


def test_run_prints_run_folder_first(apple2orange, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "run", RECIPES / "mdmm.py", "--data", apple2orange, "--iterations", 1, "--image-size", 64,
        "--device", "cpu", "--out", out,
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == str(out)
    assert (out / "run.json").is_file()
    assert (out / "run.log").is_file()


def test_unknown_component_error(tmp_path, apple2orange):
    recipe = tmp_path / "typo.py"
    recipe.write_text(
        "from toolkit.recipe import load_recipe, prior\n"
        f"recipe = load_recipe({str(RECIPES / 'mdmm.py')!r}).evolve(prior=prior('gausian'))\n"
    )
    result = invoke("run", recipe, "--data", apple2orange, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "unknown prior 'gausian'; did you mean 'gaussian'?" in result.output
    assert not (tmp_path / "run").exists()


def test_missing_data_folder_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = invoke("run", RECIPES / "mdmm.py", "--data", missing, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "no_such_folder" in result.output
    assert not (tmp_path / "run").exists()


def test_broken_recipe_file_error(tmp_path):
    recipe = tmp_path / "broken.py"
    recipe.write_text("recipe = Recipe(\n")
    result = invoke("run", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "syntax error at line" in result.output
    assert "broken.py" in result.output


def test_cuda_device_without_gpu_error(tmp_path, apple2orange):
    import torch

    if torch.cuda.is_available():
        return
    result = invoke("run", RECIPES / "mdmm.py", "--data", apple2orange, "--device", "cuda", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "sees no CUDA GPU" in result.output


def test_bad_image_size_option(tmp_path):
    result = invoke("run", RECIPES / "mdmm.py", "--image-size", "big", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "not an image size" in result.output


def test_ctrl_c_writes_checkpoint(apple2orange, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "run", str(RECIPES / "mdmm.py"), "--data", str(apple2orange),
         "--iterations", "200", "--image-size", "64", "--device", "cpu", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    losses = out / "losses.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if losses.is_file() and len(losses.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 130, stderr
    assert stdout.splitlines()[0] == str(out)
    assert "training interrupted at iteration" in stderr
    assert f"--resume {out}" in stderr
    checkpoints = sorted(path.name for path in (out / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    rows = len(losses.read_text().splitlines()) - 1
    assert int(checkpoints[0]) == rows


def test_full_disk_keeps_last_checkpoint(apple2orange, tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    recipe = tmp_path / "every_iteration.py"
    recipe.write_text(
        "from toolkit.recipe import load_recipe\n"
        f"recipe = load_recipe({str(RECIPES / 'mdmm.py')!r}).evolve(checkpoint_every=1)\n"
    )
    save_file = safetensors.torch.save_file
    calls = []

    def fills_the_disk_on_the_second_save(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        save_file(tensors, filename, metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_the_disk_on_the_second_save)
    out = tmp_path / "run"
    options = ("--data", apple2orange, "--iterations", 3, "--image-size", 64, "--device", "cpu")
    result = invoke("run", recipe, *options, "--out", out)

    assert result.exit_code == 1
    assert "failed to write the checkpoint for iteration 2" in result.output
    assert "No space left on device" in result.output
    assert f"The last complete checkpoint, {out / 'checkpoints' / '00000001'}, is untouched" in result.output
    assert f"Continue with: toolkit run {recipe} --resume {out}" in result.output
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["00000001"]

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    result = invoke("run", recipe, "--resume", out)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["00000001", "00000002", "00000003"]
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + 3


def test_bench_synthetic_reports_figures(apple2orange, tmp_path):
    from toolkit.engine.precision import cpu_has_bf16

    result = invoke(
        "bench", RECIPES / "mdmm.py", "--image-size", 64, "--iterations", 1, "--warmup", 1, "--synthetic",
        "--data", apple2orange, "--device", "cpu", "--activation-checkpointing", "both", "--out", tmp_path,
    )
    assert result.exit_code == 0, result.output
    plain, recomputed = json.loads((tmp_path / "bench.json").read_text())
    for figures in (plain, recomputed):
        assert "error" not in figures, figures
        assert figures["seconds_per_iteration_mean"] > 0
        assert figures["images_per_second"] == 2 / figures["seconds_per_iteration_mean"]
        assert figures["flops_per_iteration"] > 1e9
        assert figures["peak_memory_kind"] == "peak tensor memory"
        assert 0 < figures["peak_memory_bytes"] < figures["peak_rss_bytes"]
        assert figures["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert (plain["activation_checkpointing"], recomputed["activation_checkpointing"]) == (False, True)
    assert recomputed["peak_memory_bytes"] < plain["peak_memory_bytes"]
    assert "| mdmm (activation checkpointing) |" in result.output
    assert "mdmm at S=64, batch 2: activation checkpointing changes the peak tensor memory from" in result.output
    assert (tmp_path / "bench.png").is_file()


def test_bench_real_data_reports_figures(horse2zebra_mini, tmp_path):
    result = invoke(
        "bench", RECIPES / "mdmm.py", "--image-size", 64, "--iterations", 1, "--warmup", 0,
        "--data", horse2zebra_mini, "--device", "cpu", "--out", tmp_path, "--json",
    )
    assert result.exit_code == 0, result.output
    (figures,) = json.loads((tmp_path / "bench.json").read_text())
    assert "error" not in figures, figures
    assert figures["synthetic"] is False
    assert figures["seconds_per_iteration_mean"] > 0
    assert figures["peak_memory_bytes"] > 0


def test_bench_errors_exit_nonzero(tmp_path):
    result = invoke("bench", tmp_path / "nope.py", "--image-size", 64, "--out", tmp_path / "bench")
    assert result.exit_code == 1
    assert f"recipe file '{tmp_path / 'nope.py'}' not found" in result.output
    assert not (tmp_path / "bench").exists()

    result = invoke("bench", RECIPES / "mdmm.py", "--image-size", 63, "--out", tmp_path / "bench")
    assert result.exit_code == 1
    assert "image_size 63 is not supported: each side must be a multiple of 4 and at least 64" in result.output

    # A setting that fails inside its measuring process is reported in the table, and the exit status is 1.
    missing = tmp_path / "missing"
    result = invoke(
        "bench", RECIPES / "mdmm.py", "--image-size", 64, "--iterations", 1, "--warmup", 0,
        "--data", missing, "--device", "cpu", "--out", tmp_path / "bench",
    )
    assert result.exit_code == 1
    (figures,) = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert str(missing) in figures["error"]
    assert not figures["error"].startswith(("error: ", "toolkit.errors"))
    assert "| mdmm | failed: " in result.output
    assert "1 of 1 benchmark settings failed" in result.output


def test_misspelled_dataset_name_suggests(tmp_path):
    result = invoke("run", RECIPES / "mdmm.py", "--data", "apple2orang", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "did you mean 'apple2orange'?" in result.output
    assert not (tmp_path / "run").exists()
