"""Base classes that registered priors and loss terms implement.

Networks (encoders, generators, discriminators) are plain ``torch.nn.Module`` classes,
and ``docs/architecture.md`` lists the call signatures the engine expects. Priors and
loss terms have more than one entry point, so they share the base classes below.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from toolkit.engine.context import StepContext


@dataclasses.dataclass
class Posterior:
    """Attribute posterior of a batch of N images, with the prior each sample is compared to.

    Shapes: ``z``, ``mean``, ``var``, ``prior_mean``, ``prior_var`` are (N, nz);
    ``y_logits`` and ``y`` are (N, K) for priors with a categorical variable, else None.
    """

    z: Tensor
    mean: Tensor
    var: Tensor
    prior_mean: Tensor
    prior_var: Tensor
    y_logits: Tensor | None = None
    y: Tensor | None = None


class Prior(nn.Module):
    """An attribute prior: posterior heads on the attribute encoder's features, p(z), and sampling.

    Subclasses put the posterior heads (trained with the encoders) in ``self.posterior_heads``
    and learned prior parameters (trained with the generator) in ``self.prior_heads``.
    """

    latent_size: int
    code_size: int
    has_categorical: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.posterior_heads = nn.ModuleDict()
        self.prior_heads = nn.ModuleDict()

    def posterior(self, features: Tensor) -> Posterior:
        """Map pooled attribute features (N, F) to the posterior q(z|x) and its reparameterised sample."""
        raise NotImplementedError

    def sample(self, domains: Tensor | None, count: int | None = None) -> Tensor:
        """Draw attribute codes (N, nz) from the prior; ``domains`` (N,) picks mixture components where the prior has them."""
        raise NotImplementedError

    def domain_code(self, posterior: Posterior | None, labels: Tensor) -> Tensor:
        """Return the generator's domain code (N, code_size): one-hot labels unless a subclass infers it."""
        dtype = posterior.z.dtype if posterior is not None else torch.get_default_dtype()
        return nn.functional.one_hot(labels, self.code_size).to(dtype)

    def set_epoch(self, epoch: float) -> None:
        """Update schedules that depend on training progress (e.g. the Gumbel temperature); a no-op by default."""


class LossTerm:
    """One term of the DRIT-family objective.

    Each method returns the term's weighted contribution to one update, or None when
    the term does not take part in that update:
    ``discriminator`` (both image discriminators), ``content_discriminator``,
    ``encoder_generator`` (encoders, prior heads and generator) and ``generator``
    (the G-alone update of the generator and content encoder).
    ``requires`` names the optional forward outputs the term reads:
    ``"categorical"`` (q(y|x) logits) or ``"second_random"`` (a second random-attribute translation).
    """

    requires: frozenset[str] = frozenset()

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = float(weight)

    def discriminator(self, ctx: StepContext) -> Tensor | None:
        return None

    def content_discriminator(self, ctx: StepContext) -> Tensor | None:
        return None

    def encoder_generator(self, ctx: StepContext) -> Tensor | None:
        return None

    def generator(self, ctx: StepContext) -> Tensor | None:
        return None
