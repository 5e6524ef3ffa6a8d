"""Loss terms of the DRIT-family objective, the GMVAE prior's KL terms, label similarity and mode seeking.

Every method returns its term's weighted contribution to one update, or None. Image
discriminators return a real/fake logits map and domain logits (N, num_domains). Every call
goes through ``StepContext.discriminate``, which memoises it, so the adversarial and
domain-classification terms share one discriminator forward pass per update. Image i of
``cross``, ``random``, ``self_recon`` and ``cycle`` has the target domain ``ctx.labels[i]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from toolkit.components import LossTerm, Posterior
from toolkit.hookspecs import hookimpl
from toolkit_plugins.distributions import categorical_kl_to_uniform, gaussian_kl

if TYPE_CHECKING:
    from toolkit.engine.context import StepContext

# The fake images each image discriminator judges: the encoded-attribute discriminator judges
# cross translations and the random-attribute discriminator judges random-attribute translations.
DISCRIMINATED_FAKES = {"encoded": "cross", "random": "random"}


def _real_loss(logits: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def _fake_loss(logits: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def _y_logits(posterior: Posterior, field: str, loss: str) -> Tensor:
    if posterior.y_logits is None:
        raise ValueError(
            f"loss '{loss}' reads q(y|x) logits from {field}, but the prior produced none; "
            "use prior('gmvae', ...) or remove the loss from the recipe"
        )
    return posterior.y_logits


class Adversarial(LossTerm):
    """GAN loss of both image discriminators, binary cross-entropy with logits on real/fake maps.

    Discriminator update (unweighted): for D_encoded on (real, cross) and D_random on
    (real, random), BCE(D(real), 1) + BCE(D(fake), 0), fakes detached. Encoder-generator
    update: weight * BCE(D_encoded(cross), 1). Generator update: weight * BCE(D_random(random), 1).
    """

    def discriminator(self, ctx: StepContext) -> Tensor:
        total = 0.0
        for discriminator_name, fake in DISCRIMINATED_FAKES.items():
            real_logits, _ = ctx.discriminate(discriminator_name, "real")
            fake_logits, _ = ctx.discriminate(discriminator_name, fake, detach=True)
            total = total + _real_loss(real_logits) + _fake_loss(fake_logits)
        return total

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        logits, _ = ctx.discriminate("encoded", "cross")
        return self.weight * _real_loss(logits)

    def generator(self, ctx: StepContext) -> Tensor:
        logits, _ = ctx.discriminate("random", "random")
        return self.weight * _real_loss(logits)


class DomainClassification(LossTerm):
    """Cross-entropy of the image discriminators' domain logits (N, num_domains) against domain labels (N,).

    Discriminator update: real_weight * the sum over both discriminators of CE on real images.
    Encoder-generator update: weight * CE(D_encoded(cross), labels). Generator update:
    weight * CE(D_random(random), labels).
    """

    def __init__(self, weight: float = 5.0, real_weight: float = 1.0) -> None:
        super().__init__(weight)
        self.real_weight = float(real_weight)

    def discriminator(self, ctx: StepContext) -> Tensor:
        total = 0.0
        for discriminator_name in DISCRIMINATED_FAKES:
            _, domain_logits = ctx.discriminate(discriminator_name, "real")
            total = total + F.cross_entropy(domain_logits, ctx.labels)
        return self.real_weight * total

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        _, domain_logits = ctx.discriminate("encoded", "cross")
        return self.weight * F.cross_entropy(domain_logits, ctx.labels)

    def generator(self, ctx: StepContext) -> Tensor:
        _, domain_logits = ctx.discriminate("random", "random")
        return self.weight * F.cross_entropy(domain_logits, ctx.labels)


class ContentAdversarial(LossTerm):
    """Content adversarial loss: the content discriminator predicts the domain of a content code, the encoder hides it.

    Content discriminator update (unweighted): CE(logits, labels) on detached content codes.
    Encoder-generator update: weight * the cross-entropy between the uniform distribution
    over domains and softmax(logits), i.e. -mean_i mean_k log softmax(logits_i)_k.
    """

    def content_discriminator(self, ctx: StepContext) -> Tensor:
        return F.cross_entropy(ctx.discriminate_content(detach=True), ctx.labels)

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        log_probs = F.log_softmax(ctx.discriminate_content(), dim=1)
        return self.weight * -log_probs.mean(dim=1).mean()


class SelfReconstruction(LossTerm):
    """Self-reconstruction L1 loss: weight * mean |self_recon - real| over all pixels of (2n, 3, H, W)."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__(weight)

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        return self.weight * F.l1_loss(ctx.out.self_recon, ctx.real)


class CrossCycle(LossTerm):
    """Cross-cycle reconstruction L1 loss: weight * mean |cycle - real| over all pixels of (2n, 3, H, W)."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__(weight)

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        return self.weight * F.l1_loss(ctx.out.cycle, ctx.real)


class ContentRegularisation(LossTerm):
    """L2 regularisation of the content codes: weight * mean(content ** 2) over (2n, C, H/4, W/4)."""

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__(weight)

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        return self.weight * ctx.out.content.pow(2).mean()


class LatentRegression(LossTerm):
    """Latent regression: weight * mean |E_a(random).mean - random_z| over (2n, nz), in the generator update."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__(weight)

    def generator(self, ctx: StepContext) -> Tensor:
        return self.weight * F.l1_loss(ctx.out.random_posterior.mean, ctx.out.random_z)


class GaussianKL(LossTerm):
    """Closed-form KL(q(z|x) || p(z)) of the real images' attribute posterior, for diagonal Gaussians.

    The term is weight * mean over the batch of the sum over latent dims of
    KL(N(mean, var) || N(prior_mean, prior_var)), from (2n, nz) tensors. p(z) is N(0, I)
    for the gaussian prior and p(z|y) at the sampled y for gmvae.
    The DRIT++ and GM-DRIT implementations sum over the batch as well, so their weight w
    equals weight = w * batch_size here.
    """

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__(weight)

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        posterior = ctx.out.posterior
        kl = gaussian_kl(posterior.mean, posterior.var, posterior.prior_mean, posterior.prior_var)
        return self.weight * kl.mean()


class CategoricalKL(LossTerm):
    """KL(q(y|x) || Uniform(K)) of the real images' categorical posterior, weight * mean over the batch."""

    requires = frozenset({"categorical"})

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        logits = _y_logits(ctx.out.posterior, "posterior", "categorical_kl")
        return self.weight * categorical_kl_to_uniform(logits).mean()


class LabelSimilarity(LossTerm):
    """Cross-entropy between the attribute encoder's q(y|x) on a generated image (N, K) and its target domain (N,).

    Encoder-generator update: weight * CE(q(y|cross), labels). Generator update:
    weight * CE(q(y|random), labels). The CE uses the logits, so the gradient reaches the generator.
    """

    requires = frozenset({"categorical"})

    def encoder_generator(self, ctx: StepContext) -> Tensor:
        logits = _y_logits(ctx.out.cross_posterior, "cross_posterior", "label_similarity")
        return self.weight * F.cross_entropy(logits, ctx.labels)

    def generator(self, ctx: StepContext) -> Tensor:
        logits = _y_logits(ctx.out.random_posterior, "random_posterior", "label_similarity")
        return self.weight * F.cross_entropy(logits, ctx.labels)


class ModeSeeking(LossTerm):
    """Mode-seeking loss (Mao et al. 2019): weight / (ratio + eps) in the generator update.

    ratio = mean |random - random2| / mean |random_z - random_z2|, two random-attribute
    translations of the same content (2n, 3, H, W) with their codes (2n, nz). Minimising
    the loss pushes different codes to give different images.
    """

    requires = frozenset({"second_random"})

    def __init__(self, weight: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__(weight)
        self.eps = float(eps)

    def generator(self, ctx: StepContext) -> Tensor:
        out = ctx.out
        if out.random2 is None or out.random_z2 is None:
            raise ValueError(
                "loss 'mode_seeking' needs a second random-attribute translation (random2, random_z2), "
                "but the forward pass made none; the engine makes it when a loss requires 'second_random'"
            )
        image_distance = (out.random - out.random2).abs().mean()
        code_distance = (out.random_z - out.random_z2).abs().mean()
        return self.weight / (image_distance / code_distance + self.eps)


@hookimpl
def register_components(register):
    register("loss", "adversarial", Adversarial)
    register("loss", "domain_classification", DomainClassification)
    register("loss", "content_adversarial", ContentAdversarial)
    register("loss", "self_reconstruction", SelfReconstruction)
    register("loss", "cross_cycle", CrossCycle)
    register("loss", "content_regularisation", ContentRegularisation)
    register("loss", "latent_regression", LatentRegression)
    register("loss", "gaussian_kl", GaussianKL)
    register("loss", "categorical_kl", CategoricalKL)
    register("loss", "label_similarity", LabelSimilarity)
    register("loss", "mode_seeking", ModeSeeking)
