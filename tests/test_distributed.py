"""Training with several processes: per-rank batches, and a 2-process CPU run under torchrun that resumes exactly."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from toolkit.data import DomainPairBatchSampler
from toolkit.engine import distributed
from toolkit.engine.checkpoint import checkpoint_dirs, load_state
from toolkit.engine.runs import Overrides, prepare_run
from toolkit.engine.trainer import StopRequest, TrainingInterrupted
from toolkit.errors import DataError, ToolkitError

REPOSITORY = Path(__file__).resolve().parents[1]
RESUME_SCRIPT = Path(__file__).resolve().parent / "distributed_resume.py"

# mdmm with narrow networks (about 240,000 parameters instead of 54 million), so that
# two CPU processes train five iterations in seconds. The schedule and losses are mdmm's.
NARROW_MDMM = """
from toolkit.recipe import attribute_encoder, content_encoder, discriminator, load_recipe

recipe = load_recipe({mdmm!r}).evolve(
    content_encoder=content_encoder("drit", channels=8, residual_blocks=1),
    attribute_encoder=attribute_encoder("drit", channels=8),
    discriminator=discriminator("drit", channels=8, layers=3),
    content_discriminator=discriminator("content", channels=16),
    num_workers=0,
    checkpoint_every=1,
    keep_checkpoints=5,
)
"""


# The sampler's ranks


def test_sampler_rank_zero_of_one_unchanged():
    # Batches of the sampler before it had ranks. A change here would change every existing run.
    sampler = DomainPairBatchSampler([10, 10], 2, seed=0, rank=0, world_size=1)
    assert sampler.batch(0) == [(0, 3, 2478904981663889188), (1, 9, 533017224590379182)]
    assert sampler.batch(1) == [(1, 4, 2703937142063546316), (0, 3, 3416696728748345812)]
    three_domains = DomainPairBatchSampler([3, 7, 5], 4, seed=12)
    assert three_domains.batch(9) == [
        (1, 3, 1823663840099320300),
        (1, 1, 3534143436332598849),
        (2, 3, 913517374462702517),
        (2, 0, 1169201247374558869),
    ]


def test_sampler_rank_zero_matches_single_process():
    single = DomainPairBatchSampler([10, 12], 4, seed=3, iterations=20)
    first_of_two = DomainPairBatchSampler([10, 12], 4, seed=3, iterations=20, rank=0, world_size=2)
    assert list(single) == list(first_of_two)


def test_sampler_ranks_draw_different_batches():
    batches = [
        list(DomainPairBatchSampler([10, 12], 4, seed=3, iterations=20, rank=rank, world_size=3)) for rank in range(3)
    ]
    for first in range(3):
        for second in range(first + 1, 3):
            same = sum(a == b for a, b in zip(batches[first], batches[second]))
            assert same == 0, (first, second)


def test_sampler_rank_batches_pair_two_domains():
    sampler = DomainPairBatchSampler([3, 7, 5], 4, seed=1, iterations=50, rank=2, world_size=4)
    for keys in sampler:
        domains = [key[0] for key in keys]
        assert domains[0] == domains[1]
        assert domains[2] == domains[3]
        assert domains[0] != domains[2]


def test_sampler_resumed_rank_repeats_batches():
    full = list(DomainPairBatchSampler([10, 12], 2, seed=5, iterations=10, rank=1, world_size=2))
    resumed = list(DomainPairBatchSampler([10, 12], 2, seed=5, start_iteration=7, iterations=10, rank=1, world_size=2))
    assert resumed == full[7:]


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0)])
def test_sampler_rejects_rank_outside_world(rank, world_size):
    with pytest.raises(DataError, match=f"got rank {rank} of world_size {world_size}"):
        DomainPairBatchSampler([10, 10], 2, seed=0, rank=rank, world_size=world_size)


# The distributed helpers in a single process


def test_single_process_helpers_change_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
    assert not distributed.is_distributed()
    assert distributed.is_main()
    grads = [torch.ones(2), None]
    assert distributed.average_gradients([torch.zeros(2), torch.zeros(3)], grads) == grads
    values = torch.tensor([1.0, 2.0])
    assert distributed.average_values(values) is values
    assert distributed.share_from_main(lambda: 7) == 7
    assert distributed.main_first(lambda: 8) == 8
    assert distributed.any_rank(True)
    assert not distributed.all_ranks(False)
    assert distributed.gather_objects("state") == ["state"]


def test_averaged_gradient_keeps_channels_last(monkeypatch):
    # Two ranks with equal gradients, faked: the all-reduce sum doubles the buffer.
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "_communication_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, op: tensor.mul_(2))
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    weight = torch.zeros(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    grad = torch.arange(48.0).reshape(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)

    (averaged,) = distributed.average_gradients([weight], [grad])

    assert torch.equal(averaged, grad)
    assert averaged.stride() == weight.stride()


def test_explicit_gpu_rejected_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ToolkitError, match="pass --device cuda"):
        distributed.rank_device(torch.device("cuda", 0))
    assert distributed.rank_device(torch.device("cpu")) == torch.device("cpu")


def test_invalid_world_size_variable(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ToolkitError, match="WORLD_SIZE='two' is not an integer"):
        distributed.launched_world_size()


# Two CPU processes under torchrun


def torchrun(*args, cwd):
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment["OMP_NUM_THREADS"] = "1"
    # gloo connects through the interface of the host name's address; keep the ranks on loopback.
    loopback = next((name for _, name in socket.if_nameindex() if name in ("lo", "lo0")), None)
    if loopback is not None:
        environment.setdefault("GLOO_SOCKET_IFNAME", loopback)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        command + [str(arg) for arg in args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_rows(run_dir):
    with (run_dir / "losses.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def load_weights(path):
    return safetensors.torch.load_file(path)


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.fixture(scope="module")
def narrow_recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "mdmm_narrow.py"
    path.write_text(NARROW_MDMM.format(mdmm=str(REPOSITORY / "recipes" / "mdmm.py")))
    return path


@pytest.fixture(scope="module")
def two_process_run(narrow_recipe, horse2zebra_mini, tmp_path_factory):
    """A 5-iteration run of ``toolkit run`` under torchrun with 2 CPU processes, in the default run folder."""
    workdir = tmp_path_factory.mktemp("two_processes")
    result = torchrun(
        "-m", "toolkit", "run", narrow_recipe, "--data", horse2zebra_mini, "--iterations", 5,
        "--image-size", 64, "--batch-size", 2, "--device", "cpu", cwd=workdir,
    )
    return workdir, result


def test_two_processes_write_one_run_folder(two_process_run):
    workdir, result = two_process_run
    runs = list((workdir / "runs" / "mdmm_narrow").iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    assert result.stdout.splitlines() == [str(run_dir.relative_to(workdir))]
    assert [int(row["iteration"]) for row in read_rows(run_dir)] == [0, 1, 2, 3, 4]
    assert [path.name for path in checkpoint_dirs(run_dir)] == [f"{i:08d}" for i in range(1, 6)]
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    log = (run_dir / "run.log").read_text()
    assert "joined a process group of 2 ranks as rank 0" in log
    assert "as rank 1" not in log
    assert "batch 2 per process x 2 processes" in log


def test_two_process_checkpoint_keeps_each_rank_rng(two_process_run):
    workdir, _ = two_process_run
    (run_dir,) = (workdir / "runs" / "mdmm_narrow").iterdir()
    state = load_state(checkpoint_dirs(run_dir)[-1])
    assert len(state["rank_rng"]) == 2
    assert torch.equal(state["rng"]["torch"], state["rank_rng"][0]["torch"])
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])


def test_two_process_resume_matches_straight_run(two_process_run, narrow_recipe, tmp_path):
    workdir, _ = two_process_run
    (straight,) = (workdir / "runs" / "mdmm_narrow").iterdir()
    # A copy of the run as it was after iteration 3 (losses.csv rows past it are dropped on resume).
    split = tmp_path / "split"
    shutil.copytree(straight, split)
    for folder in checkpoint_dirs(split)[3:]:
        shutil.rmtree(folder)
    out = tmp_path / "out"
    out.mkdir()

    torchrun(RESUME_SCRIPT, narrow_recipe, split, 5, out, cwd=tmp_path)

    rank0 = load_weights(out / "rank0.safetensors")
    assert_same_weights(rank0, load_weights(out / "rank1.safetensors"))
    assert_same_weights(rank0, load_weights(checkpoint_dirs(straight)[-1] / "model.safetensors"))
    assert_same_weights(rank0, load_weights(checkpoint_dirs(split)[-1] / "model.safetensors"))
    straight_rows = read_rows(straight)
    split_rows = read_rows(split)
    assert [int(row["iteration"]) for row in split_rows] == [0, 1, 2, 3, 4]
    for a, b in zip(straight_rows, split_rows):
        for key in a:
            if key != "seconds":
                assert a[key] == b[key], (key, a["iteration"])

    # (rank + 1) averages to 1.5. A 4 on rank 1 alone averages to 2, because rank 0 counts zeros.
    # A tensor without a gradient on any rank keeps None.
    for rank in (0, 1):
        results = json.loads((out / f"collectives-rank{rank}.json").read_text())
        assert results["average"] == [[1.5] * 4, [2.0] * 3, None]
        assert results["same_replicas"] == "equal"
        assert "parameters differ between rank 0 and rank 1 at iteration 7" in results["different_replicas"]
        assert "in 1 tensor(s), first bias;" in results["different_replicas"]


def test_two_processes_differ_from_one(two_process_run, narrow_recipe, registry, horse2zebra_mini, tmp_path):
    workdir, _ = two_process_run
    (two,) = (workdir / "runs" / "mdmm_narrow").iterdir()
    single = tmp_path / "single"
    prepared = prepare_run(
        narrow_recipe,
        registry,
        Overrides(data=str(horse2zebra_mini), iterations=5, image_size=64, batch_size=2),
        device="cpu",
        out=single,
        command=["test"],
    )
    prepared.write_record()
    stop = StopRequest()
    stop.requested = True
    with pytest.raises(TrainingInterrupted):
        prepared.trainer.train(stop)  # one iteration, then a checkpoint

    # Rank 0 drew the single process's batch, so the difference is rank 1's batch in the average.
    one_weights = load_weights(checkpoint_dirs(single)[0] / "model.safetensors")
    two_weights = load_weights(checkpoint_dirs(two)[0] / "model.safetensors")
    assert one_weights.keys() == two_weights.keys()
    differing = [name for name in one_weights if not torch.equal(one_weights[name], two_weights[name])]
    assert len(differing) > len(one_weights) // 2
    assert read_rows(single)[0]["discriminator_total"] != read_rows(two)[0]["discriminator_total"]
