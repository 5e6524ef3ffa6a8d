"""Activation checkpointing: keep only block inputs in the forward pass and recompute the rest in backward.

A network is split into units. Each unit's forward pass runs under PyTorch's
non-reentrant ``torch.utils.checkpoint``, so autograd keeps the unit's inputs and drops
everything the unit computes inside. Backward runs the unit again to get those tensors
back, one unit at a time. Parameter names do not change, so checkpoints load either way.

The units of a network are the list its ``checkpoint_units()`` method returns, if it
has one. Otherwise ``default_units`` finds them:

- an ``nn.Sequential`` that contains convolutions is recomputed in pieces, one piece per
  convolution with the layers after it (conv, norm, activation);
- any other container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``) is
  searched the same way;
- any other submodule with parameters and submodules of its own, such as a residual
  block, is one unit;
- a bare layer directly under the network (a single convolution, say) is left as is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_CONVOLUTIONS = (nn.modules.conv._ConvNd,)


def enable_activation_checkpointing(network: nn.Module) -> int:
    """Make every unit of ``network`` recompute its activations in backward, and return the number of units."""
    units = network.checkpoint_units() if hasattr(network, "checkpoint_units") else list(default_units(network))
    for unit in units:
        if isinstance(unit, nn.Sequential) and any(isinstance(layer, _CONVOLUTIONS) for layer in unit):
            _checkpoint_pieces(unit)
        else:
            _checkpoint_whole(unit)
    log.debug("activation checkpointing on %d units of %s", len(units), type(network).__name__)
    return len(units)


def default_units(module: nn.Module) -> Iterator[nn.Module]:
    """Yield the submodules of ``module`` to recompute, by the rules in this module's docstring."""
    for child in module.children():
        if isinstance(child, nn.Sequential) and any(isinstance(layer, _CONVOLUTIONS) for layer in child):
            yield child
        elif isinstance(child, _CONTAINERS):
            yield from default_units(child)
        elif any(True for _ in child.children()) and any(True for _ in child.parameters()):
            yield child


def pieces(sequential: nn.Sequential) -> list[list[nn.Module]]:
    """Split ``sequential`` before each convolution after the first layer."""
    groups: list[list[nn.Module]] = []
    for layer in sequential:
        if not groups or isinstance(layer, _CONVOLUTIONS):
            groups.append([])
        groups[-1].append(layer)
    return groups


def _checkpoint_whole(unit: nn.Module) -> None:
    original = type(unit).forward

    def forward(*args, **kwargs):
        # Without grad mode (evaluation, translation) nothing is saved, so there is nothing to drop.
        if not torch.is_grad_enabled():
            return original(unit, *args, **kwargs)
        return checkpoint(original, unit, *args, use_reentrant=False, **kwargs)

    unit.forward = forward


def _checkpoint_pieces(sequential: nn.Sequential) -> None:
    groups = pieces(sequential)

    def run(layers: list[nn.Module], x: Tensor) -> Tensor:
        for layer in layers:
            x = layer(x)
        return x

    def forward(x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return run(list(sequential), x)
        for layers in groups:
            x = checkpoint(run, layers, x, use_reentrant=False)
        return x

    sequential.forward = forward
