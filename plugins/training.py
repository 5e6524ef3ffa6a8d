"""Optimizer components: Adam per network with TTUR learning rates and linear decay."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from toolkit.hookspecs import hookimpl

# The networks the engine optimises separately, in the order DRIT-family code steps them.
NETWORK_GROUPS = ("content_discriminator", "discriminator", "content_encoder", "attribute_encoder", "generator")


class Optimizers:
    """One optimizer and one learning-rate scheduler per network group, with gradient clipping."""

    def __init__(
        self,
        optimizers: dict[str, torch.optim.Optimizer],
        schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
        max_norms: dict[str, float | None],
    ) -> None:
        self.optimizers = optimizers
        self.schedulers = schedulers
        self.max_norms = max_norms

    def zero_grad(self, groups: Iterable[str]) -> None:
        for group in groups:
            self.optimizers[group].zero_grad(set_to_none=True)

    def step(self, groups: Iterable[str]) -> None:
        """Clip (where a max norm is set) and apply one optimizer step to each group."""
        for group in groups:
            optimizer = self.optimizers[group]
            max_norm = self.max_norms.get(group)
            if max_norm is not None:
                params = [p for param_group in optimizer.param_groups for p in param_group["params"]]
                nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()

    def advance_schedules(self) -> None:
        """Move every learning-rate schedule one iteration forward.

        Schedules follow the iteration count, so they advance even for a network that
        skipped its update (the content discriminator on most iterations, or an update
        skipped for a non-finite loss); PyTorch's warning about that order is silenced.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            for scheduler in self.schedulers.values():
                scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {group: optimizer.param_groups[0]["lr"] for group, optimizer in self.optimizers.items()}

    def state_dict(self) -> dict:
        return {
            "optimizers": {group: optimizer.state_dict() for group, optimizer in self.optimizers.items()},
            "schedulers": {group: scheduler.state_dict() for group, scheduler in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for group, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][group])
        for group, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][group])


def linear_decay(total: int, start_fraction: float):
    """Return the learning-rate factor: 1 until ``start_fraction * total`` iterations, then linear to 0 at ``total``.

    A closure rather than an object, because LambdaLR saves an object's attributes in its
    state dict, and a resumed run with more iterations must get the new total.
    """
    start = int(total * start_fraction)

    def factor(iteration: int) -> float:
        if iteration < start or total <= start:
            return 1.0
        return max(0.0, (total - iteration) / (total - start))

    return factor


class AdamTTUR:
    """Adam for each network with per-network learning rates (TTUR) and linear decay to 0.

    ``lr`` is the learning rate of the encoders, the generator and the prior heads, and
    ``discriminator_lr`` (default ``lr``) that of both image discriminators. The content
    discriminator learns at ``content_discriminator_lr`` (default ``discriminator_lr /
    2.5``, as in MDMM), and its gradient norm is clipped to ``content_discriminator_max_norm``. ``max_grad_norm`` clips every other network
    (None: no clipping). The learning rates stay constant for the first
    ``decay_start`` fraction of the iterations, then fall linearly to 0 at the last one.
    TTUR (Heusel et al., 2017) is a choice of the two rates, e.g. discriminator 5e-5 and
    generator 1e-4. ``fused`` picks PyTorch's fused Adam kernel (None: on CUDA and CPU).
    """

    def __init__(
        self,
        lr: float = 1e-4,
        discriminator_lr: float | None = None,
        content_discriminator_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-4,
        decay_start: float = 0.5,
        content_discriminator_max_norm: float | None = 5.0,
        max_grad_norm: float | None = None,
        fused: bool | None = None,
    ) -> None:
        discriminator_lr = lr if discriminator_lr is None else discriminator_lr
        if content_discriminator_lr is None:
            content_discriminator_lr = discriminator_lr / 2.5
        self.learning_rates = {
            "content_discriminator": content_discriminator_lr,
            "discriminator": discriminator_lr,
            "content_encoder": lr,
            "attribute_encoder": lr,
            "generator": lr,
        }
        for group, rate in self.learning_rates.items():
            if not rate > 0:
                raise ValueError(f"learning rate of {group} must be positive, got {rate!r}")
        if not 0.0 <= decay_start <= 1.0:
            raise ValueError(f"decay_start is a fraction of the iterations in [0, 1], got {decay_start!r}")
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.decay_start = decay_start
        self.fused = fused
        self.max_norms = {group: max_grad_norm for group in NETWORK_GROUPS}
        self.max_norms["content_discriminator"] = content_discriminator_max_norm

    def build(self, groups: dict[str, list[nn.Parameter]], iterations: int) -> Optimizers:
        """Make the optimizers and schedules for ``groups`` (parameters by network group)."""
        optimizers = {}
        schedulers = {}
        for group in NETWORK_GROUPS:
            params = groups[group]
            fused = self.fused
            if fused is None:
                fused = bool(params) and params[0].device.type in ("cuda", "cpu")
            optimizers[group] = torch.optim.Adam(
                params,
                lr=self.learning_rates[group],
                betas=self.betas,
                weight_decay=self.weight_decay,
                fused=fused or None,
            )
            schedulers[group] = torch.optim.lr_scheduler.LambdaLR(
                optimizers[group], linear_decay(iterations, self.decay_start)
            )
        return Optimizers(optimizers, schedulers, self.max_norms)


@hookimpl
def register_components(register):
    register("optimizer", "adam", AdamTTUR)
