"""A DRIT-family translation model assembled from a recipe's registered components."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from toolkit.components import Posterior, Prior
from toolkit.engine.activation_checkpointing import enable_activation_checkpointing
from toolkit.engine.context import Translations
from toolkit.recipe import Component, ImageSize, Recipe
from toolkit.registry import Registry


# Recipe fields that name the model's networks, in the order they are built.
NETWORKS = ("content_encoder", "attribute_encoder", "prior", "generator", "discriminator", "content_discriminator")
TRANSLATION_NETWORKS = NETWORKS[:4]


def build_networks(
    components: Mapping[str, Component], registry: Registry, num_domains: int, image_size: ImageSize
) -> dict[str, Any]:
    """Build the networks named in ``components`` (keys from ``NETWORKS``) with their context arguments.

    The encoders, prior and generator come back built. The discriminators come back as
    factories, since the model needs two image discriminators, and translation needs none.
    """

    def build(item: Component, **context: Any) -> Any:
        return registry.build(item.kind, item.name, item.kwargs, **context)

    networks: dict[str, Any] = {}
    networks["content_encoder"] = content_encoder = build(components["content_encoder"], image_size=image_size)
    networks["attribute_encoder"] = attribute_encoder = build(components["attribute_encoder"], num_domains=num_domains)
    networks["prior"] = prior = build(
        components["prior"], num_domains=num_domains, feature_size=attribute_encoder.feature_size
    )
    networks["generator"] = build(
        components["generator"],
        latent_size=prior.latent_size,
        code_size=prior.code_size,
        content_channels=content_encoder.out_channels,
    )
    if "discriminator" in components:
        networks["discriminator"] = functools.partial(
            build, components["discriminator"], num_domains=num_domains, image_size=image_size
        )
    if "content_discriminator" in components:
        networks["content_discriminator"] = functools.partial(
            build,
            components["content_discriminator"],
            num_domains=num_domains,
            content_channels=content_encoder.out_channels,
            image_size=image_size,
        )
    return networks


class TranslationModel(nn.Module):
    """Content encoder, attribute encoder, prior, generator and the three discriminators of one recipe.

    ``image_discriminators["encoded"]`` judges translations made with encoded attributes and
    ``image_discriminators["random"]`` those made with attributes sampled from the prior.
    """

    def __init__(self, recipe: Recipe, registry: Registry, num_domains: int) -> None:
        super().__init__()
        self.num_domains = num_domains
        components = {name: getattr(recipe, name) for name in NETWORKS}
        networks = build_networks(components, registry, num_domains, recipe.image_size)
        self.content_encoder = networks["content_encoder"]
        self.attribute_encoder = networks["attribute_encoder"]
        self.prior: Prior = networks["prior"]
        self.generator = networks["generator"]
        self.image_discriminators = nn.ModuleDict(
            {which: networks["discriminator"]() for which in ("encoded", "random")}
        )
        self.content_discriminator = networks["content_discriminator"]()
        if recipe.activation_checkpointing:
            for network in (self.content_encoder, self.attribute_encoder, self.generator):
                enable_activation_checkpointing(network)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by the network group that optimises them (prior heads join their side)."""
        return {
            "content_discriminator": list(self.content_discriminator.parameters()),
            "discriminator": list(self.image_discriminators.parameters()),
            "content_encoder": list(self.content_encoder.parameters()),
            "attribute_encoder": list(self.attribute_encoder.parameters())
            + list(self.prior.posterior_heads.parameters()),
            "generator": list(self.generator.parameters()) + list(self.prior.prior_heads.parameters()),
        }

    def one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        return nn.functional.one_hot(labels, self.num_domains).to(like.dtype)

    def encode_attributes(self, images: Tensor, labels: Tensor) -> Posterior:
        """Return q(z|x) (and q(y|x)) of ``images`` (N,3,H,W) given their domain indices (N,)."""
        features = self.attribute_encoder(images, self.one_hot(labels, images))
        return self.prior.posterior(features)

    def forward(self, real: Tensor, labels: Tensor, second_random: bool = False) -> Translations:
        """Run the shared DRIT-family forward pass over a batch whose halves come from two domains.

        ``real`` is (2n, 3, H, W) and ``labels`` (2n,) the domain of each image. The
        generator runs once on the cross and self inputs stacked along the batch, and once
        on the random ones. The attribute encoder runs once on each kind of translation.
        The encoder-generator update reads only the cross and self translations, and the
        generator-alone update only the random ones. So neither backward pass runs
        through samples whose gradient is zero.
        """
        n = real.shape[0] // 2
        domain_one_hot = self.one_hot(labels, real)

        content = self.content_encoder(real)
        posterior = self.prior.posterior(self.attribute_encoder(real, domain_one_hot))
        code = self.prior.domain_code(posterior, labels)
        partner_content = content.roll(n, dims=0)

        encoded = self.generator(
            torch.cat([partner_content, content]), torch.cat([posterior.z, posterior.z]), torch.cat([code, code])
        )
        cross, self_recon = encoded.split(2 * n)

        random_z = self.prior.sample(labels)
        random_z2 = self.prior.sample(labels) if second_random else None
        draws = [random_z] if random_z2 is None else [random_z, random_z2]
        randoms = self.generator(
            partner_content.repeat(len(draws), 1, 1, 1), torch.cat(draws), domain_one_hot.repeat(len(draws), 1)
        ).split(2 * n)
        random = randoms[0]
        random2 = randoms[1] if second_random else None

        # Re-encode the translations: the cross translations for the cross-cycle
        # reconstruction, the random-attribute ones for latent regression.
        cross_content = self.content_encoder(cross)
        cross_posterior = self.prior.posterior(self.attribute_encoder(cross, domain_one_hot))
        random_posterior = self.prior.posterior(self.attribute_encoder(random, domain_one_hot))
        cycle = self.generator(
            cross_content.roll(n, dims=0), cross_posterior.z, self.prior.domain_code(cross_posterior, labels)
        )

        return Translations(
            content=content,
            posterior=posterior,
            cross=cross,
            self_recon=self_recon,
            random=random,
            random_z=random_z,
            cross_content=cross_content,
            cross_posterior=cross_posterior,
            cycle=cycle,
            random_posterior=random_posterior,
            random2=random2,
            random_z2=random_z2,
        )
