"""Hinge GAN loss for the DRIT toolkit, registered as the loss ``hinge_adversarial``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from torch import Tensor
from torch.nn import functional as F

from toolkit.components import LossTerm
from toolkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from toolkit.engine.context import StepContext

# Each image discriminator and the translations it judges as fake. "encoded" judges
# translations made with encoded attributes, and "random" those made with prior samples.
FAKES_BY_DISCRIMINATOR = {"encoded": "cross", "random": "random"}


class HingeAdversarial(LossTerm):
    """Hinge GAN loss of both image discriminators, on their real/fake logit maps.

    Discriminator update: for D_encoded on (real, cross) and D_random on (real, random),
    mean(relu(1 - D(real))) + mean(relu(1 + D(fake))) with the fakes detached, summed
    over the two discriminators and not weighted, like the ``adversarial`` loss it replaces.
    Encoder-generator update: -weight * mean(D_encoded(cross)).
    Generator update: -weight * mean(D_random(random)).
    The means run over every entry of the (N, 1, h, w) logit maps.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)

    def discriminator(self, ctx: StepContext) -> Tensor:
        total = 0.0
        for which, fake in FAKES_BY_DISCRIMINATOR.items():
            real_logits, _ = ctx.discriminate(which, "real")
            fake_logits, _ = ctx.discriminate(which, fake, detach=True)
            total = total + F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        return total

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        logits, _ = ctx.discriminate("encoded", "cross")
        return -self.weight * logits.mean()

    def generator(self, ctx: StepContext) -> Tensor:
        logits, _ = ctx.discriminate("random", "random")
        return -self.weight * logits.mean()


@click.command("hinge-info")
def hinge_info() -> None:
    """Show what the hinge_adversarial loss computes in each update."""
    click.echo("hinge_adversarial (toolkit-hinge-loss): hinge GAN loss of both image discriminators")
    click.echo("  discriminator update:      mean(relu(1 - D(real))) + mean(relu(1 + D(fake.detach())))")
    click.echo("                             for D_encoded on cross and D_random on random, not weighted")
    click.echo("  encoder-generator update:  -weight * mean(D_encoded(cross))")
    click.echo("  generator update:          -weight * mean(D_random(random))")
    click.echo("Use it in a recipe in place of loss('adversarial'): loss('hinge_adversarial', weight=1.0)")


@hookimpl
def register_components(register):
    """Register the hinge loss under the name users put in recipes."""
    register("loss", "hinge_adversarial", HingeAdversarial)


@hookimpl
def register_commands(cli):
    """Add ``toolkit hinge-info``."""
    cli.add_command(hinge_info)
