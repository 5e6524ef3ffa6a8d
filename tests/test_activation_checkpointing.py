"""Activation checkpointing: which units recompute, equal gradients and losses, fewer saved activations, the memory figure."""

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit.engine.activation_checkpointing import default_units, enable_activation_checkpointing, pieces
from toolkit.engine.bench import tensor_memory_peak
from toolkit.engine.model import TranslationModel
from toolkit.engine.runs import Overrides, prepare_run
from toolkit.recipe import load_recipe
from toolkit_plugins.encoders import DritAttributeEncoder, DritContentEncoder
from toolkit_plugins.generators import DritGenerator
from toolkit_plugins.layers import ResidualBlock

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_default_units_of_drit_networks():
    generator = DritGenerator(double_upsample=True, latent_size=8, code_size=2, content_channels=256)
    units = list(default_units(generator))
    assert units == [generator.shared, *generator.trunk, generator.upsample1, generator.upsample2]
    # Each double upsampling block is recomputed as two conv-norm-ReLU pieces.
    assert [len(group) for group in pieces(generator.upsample1)] == [3, 3]

    content = DritContentEncoder()
    assert list(default_units(content)) == [content.stem, content.downsample, *content.residual]
    assert [len(group) for group in pieces(content.downsample)] == [3, 3]

    attribute = DritAttributeEncoder(num_domains=2)
    assert list(default_units(attribute)) == list(attribute.blocks)


def test_network_chooses_its_own_units():
    class TwoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = ResidualBlock(4)
            self.second = ResidualBlock(4)

        def checkpoint_units(self):
            return [self.second]

        def forward(self, x):
            return self.second(self.first(x))

    network = TwoBlocks()
    assert enable_activation_checkpointing(network) == 1
    assert "forward" in vars(network.second)
    assert "forward" not in vars(network.first)


def _saved_bytes(model, real, labels):
    """Bytes of the distinct tensors autograd keeps for backward during the forward pass."""
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(real, labels)
    return sum(seen.values()), out


def _models(registry, recipe_name):
    recipe = load_recipe(RECIPES / f"{recipe_name}.py").evolve(image_size=64)
    models = []
    for recompute in (False, True):
        torch.manual_seed(0)
        models.append(TranslationModel(recipe.evolve(activation_checkpointing=recompute), registry, num_domains=2))
    return models


@pytest.mark.parametrize("recipe_name", ["mdmm", "gmdrit_ttur"])
def test_checkpointing_keeps_gradients_saves_less(registry, recipe_name):
    plain, recomputed = _models(registry, recipe_name)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), recomputed.state_dict().values()))
    real = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.tensor([0, 1])

    results = []
    for model in (plain, recomputed):
        torch.manual_seed(2)
        saved, out = _saved_bytes(model, real, labels)
        loss = (out.cross - real).abs().mean() + (out.cycle - real).abs().mean() + out.random.square().mean()
        loss = loss + (out.random_posterior.mean - out.random_z).abs().mean()
        loss.backward()
        results.append((saved, loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}))

    (saved_plain, loss_plain, grads_plain), (saved_recomputed, loss_recomputed, grads_recomputed) = results
    assert torch.equal(loss_plain, loss_recomputed)
    assert grads_plain.keys() == grads_recomputed.keys()
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_recomputed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert saved_recomputed < 0.5 * saved_plain, (saved_recomputed, saved_plain)


def test_checkpointing_skipped_without_grad(registry):
    plain, recomputed = _models(registry, "mdmm")
    plain.eval()
    recomputed.eval()
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(
            recomputed.content_encoder(real), plain.content_encoder(real), rtol=0, atol=0
        )


def _losses(run_dir):
    with (run_dir / "losses.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_checkpointed_run_matches_plain_run(registry, apple2orange, tmp_path):
    rows = []
    for recompute in (False, True):
        run_dir = tmp_path / str(recompute)
        prepared = prepare_run(
            RECIPES / "mdmm.py",
            registry,
            Overrides(
                data=str(apple2orange),
                iterations=2,
                image_size=64,
                precision="fp32",
                activation_checkpointing=recompute,
            ),
            device="cpu",
            out=run_dir,
            command=["test"],
        )
        prepared.write_record()
        prepared.trainer.train()
        assert json.loads((run_dir / "run.json").read_text())["recipe"]["activation_checkpointing"] is recompute
        rows.append(_losses(run_dir))
    plain, recomputed = rows
    for before, after in zip(plain, recomputed):
        for key in ("discriminator_total", "generator_total", "encoder_generator/cross_cycle"):
            assert float(after[key]) == pytest.approx(float(before[key]), rel=1e-4), key


def test_tensor_memory_peak_adds_state_to_step_peak():
    class Step:
        """A stand-in trainer with 1 MiB each of weights, gradients and optimizer state, and a step with a known peak."""

        def __init__(self):
            self.model = nn.Linear(512, 512, bias=False)  # 1 MiB of fp32 weights
            self.model.weight.grad = torch.zeros_like(self.model.weight)  # 1 MiB
            optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
            optimizer.state[self.model.weight] = {"moment": torch.zeros(256, 1024)}  # 1 MiB
            self.optimizers = type("Optimizers", (), {"optimizers": {"all": optimizer}})()

        def step(self, real, labels, iteration):
            first = torch.empty(4 * 2**20, dtype=torch.uint8)
            second = torch.empty(8 * 2**20, dtype=torch.uint8)
            del first
            third = torch.empty(2 * 2**20, dtype=torch.uint8)
            del second, third

    peak = tensor_memory_peak(Step(), torch.zeros(1), torch.zeros(1))
    assert peak == 3 * 2**20 + 12 * 2**20
