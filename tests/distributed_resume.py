"""Resume a run under torchrun, save every rank's weights and try the collectives (for test_distributed.py).

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_resume.py
RECIPE RUN_DIR ITERATIONS OUT_DIR

Every rank resumes the run in RUN_DIR through the engine API and trains it on the CPU up
to ITERATIONS. Then it writes its model's state dict to ``OUT_DIR/rank<R>.safetensors``,
and the results of averaging known gradients and of comparing replicas that differ to
``OUT_DIR/collectives-rank<R>.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import safetensors.torch
import torch

from toolkit.engine import distributed
from toolkit.engine.runs import Overrides, prepare_run
from toolkit.errors import ToolkitError
from toolkit.plugins import get_registry


def average_known_gradients() -> list[list[float] | None]:
    """Average gradients that differ by rank: (rank + 1) everywhere, 4 on rank 1 only, none on any rank."""
    rank = distributed.rank()
    params = [torch.zeros(2, 2), torch.zeros(3), torch.zeros(1)]
    grads = [torch.full((2, 2), rank + 1.0), torch.full((3,), 4.0) if rank == 1 else None, None]
    averaged = distributed.average_gradients(params, grads)
    return [None if grad is None else grad.flatten().tolist() for grad in averaged]


def compare_replicas(differ: bool) -> str:
    """Return the error of comparing a linear layer across ranks ('equal' if none); ``differ`` shifts rank 1's bias."""
    layer = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(layer.weight, 0.5)
    torch.nn.init.constant_(layer.bias, 0.25)
    if differ and distributed.rank() == 1:
        with torch.no_grad():
            layer.bias[0] += 1.0
    try:
        distributed.check_replicas_equal(layer, iteration=7)
    except ToolkitError as error:
        return str(error)
    return "equal"


def main(recipe: str, run_dir: str, iterations: str, out_dir: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    out = Path(out_dir)
    try:
        prepared = prepare_run(
            recipe,
            get_registry(),
            Overrides(iterations=int(iterations)),
            device="cpu",
            resume=Path(run_dir),
            command=["distributed_resume.py"],
        )
        prepared.write_record()
        prepared.trainer.train()

        rank = distributed.rank()
        weights = {name: tensor.detach().contiguous() for name, tensor in prepared.trainer.model.state_dict().items()}
        safetensors.torch.save_file(weights, out / f"rank{rank}.safetensors")
        results = {
            "average": average_known_gradients(),
            "same_replicas": compare_replicas(differ=False),
            "different_replicas": compare_replicas(differ=True),
        }
        (out / f"collectives-rank{rank}.json").write_text(json.dumps(results))
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
