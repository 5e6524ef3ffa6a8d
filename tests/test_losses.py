"""Tests of the loss terms: values against independent computations, gradients, and recipe checks."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Normal, kl_divergence
from torch.nn import functional as F

from toolkit.components import Posterior
from toolkit.engine.context import StepContext, Translations
from toolkit.errors import RecipeError
from toolkit.recipe import Recipe, adam, attribute_encoder, content_encoder, discriminator, generator, loss, prior
from toolkit.registry import KINDS, Registry
from toolkit_plugins import losses, priors
from toolkit_plugins.losses import (
    Adversarial,
    CategoricalKL,
    ContentAdversarial,
    DomainClassification,
    GaussianKL,
    LabelSimilarity,
    ModeSeeking,
)
from toolkit_plugins.priors import GaussianMixturePrior

NUM_DOMAINS = 2
LATENT_SIZE = 4
CONTENT_CHANNELS = 6


class TinyImageDiscriminator(nn.Module):
    """Real/fake logits map (N, 1, H/2, W/2) and domain logits (N, num_domains) of images (N, 3, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.real_fake = nn.Conv2d(8, 1, 1)
        self.domain = nn.Linear(8, NUM_DOMAINS)
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        hidden = F.leaky_relu(self.features(images), 0.2)
        return self.real_fake(hidden), self.domain(hidden.mean(dim=(2, 3)))


class TinyContentDiscriminator(nn.Module):
    """Domain logits (N, num_domains) of content codes (N, C, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.domain = nn.Linear(CONTENT_CHANNELS, NUM_DOMAINS)

    def forward(self, content):
        return self.domain(content.mean(dim=(2, 3)))


class ConstantDiscriminator(nn.Module):
    """Zero logits for every image: BCE against 0 or 1 is log 2, CE against any label is log K."""

    def forward(self, images):
        count = images.shape[0]
        return images.new_zeros(count, 1, 4, 4), images.new_zeros(count, NUM_DOMAINS)


class TinyGenerator(nn.Module):
    """Image (N, 3, h, w) from content (N, C, h, w), attribute z (N, nz) and domain code (N, K), all broadcast."""

    def __init__(self) -> None:
        super().__init__()
        self.decode = nn.Conv2d(CONTENT_CHANNELS + LATENT_SIZE + NUM_DOMAINS, 3, 1)

    def forward(self, content, z, code):
        height, width = content.shape[2:]
        extra = torch.cat([z, code], dim=1)[:, :, None, None].expand(-1, -1, height, width)
        return torch.tanh(self.decode(torch.cat([content, extra], dim=1)))


class TinyAttributeEncoder(nn.Module):
    """Pooled attribute features (N, 16) of images (N, 3, h, w)."""

    feature_size = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, self.feature_size, 3, padding=1)

    def forward(self, images):
        return F.leaky_relu(self.conv(images), 0.2).mean(dim=(2, 3))


def _stub_model(image_discriminator=TinyImageDiscriminator):
    return SimpleNamespace(
        image_discriminators=nn.ModuleDict({"encoded": image_discriminator(), "random": image_discriminator()}),
        content_discriminator=TinyContentDiscriminator(),
    )


def _random_posterior(count: int, categorical: bool = True) -> Posterior:
    logits = torch.randn(count, NUM_DOMAINS) if categorical else None
    return Posterior(
        z=torch.randn(count, LATENT_SIZE),
        mean=torch.randn(count, LATENT_SIZE),
        var=torch.rand(count, LATENT_SIZE) + 0.1,
        prior_mean=torch.randn(count, LATENT_SIZE),
        prior_var=torch.rand(count, LATENT_SIZE) + 0.1,
        y_logits=logits,
        y=None if logits is None else logits.softmax(1),
    )


def _random_translations(count: int = 4, size: int = 16) -> Translations:
    def images():
        return torch.rand(count, 3, size, size) * 2 - 1

    return Translations(
        content=torch.randn(count, CONTENT_CHANNELS, size // 4, size // 4),
        posterior=_random_posterior(count),
        cross=images(),
        self_recon=images(),
        random=images(),
        random_z=torch.randn(count, LATENT_SIZE),
        cross_content=torch.randn(count, CONTENT_CHANNELS, size // 4, size // 4),
        cross_posterior=_random_posterior(count),
        cycle=images(),
        random_posterior=_random_posterior(count),
        random2=images(),
        random_z2=torch.randn(count, LATENT_SIZE),
    )


def _context(out: Translations, model=None, labels=None) -> StepContext:
    count = out.cross.shape[0]
    if labels is None:
        labels = torch.arange(count) * NUM_DOMAINS // count
    real = torch.rand_like(out.cross) * 2 - 1
    return StepContext(model or _stub_model(), real, labels, out, iteration=0)


def _registered_losses() -> dict:
    found = {}

    def register(kind, name, factory):
        found[name] = factory

    losses.register_components(register=register)
    return found


# --- every term ------------------------------------------------------------------

UPDATES = ("discriminator", "content_discriminator", "encoder_generator", "generator")

IMPLEMENTED_UPDATES = {
    "adversarial": {"discriminator", "encoder_generator", "generator"},
    "domain_classification": {"discriminator", "encoder_generator", "generator"},
    "content_adversarial": {"content_discriminator", "encoder_generator"},
    "self_reconstruction": {"encoder_generator"},
    "cross_cycle": {"encoder_generator"},
    "content_regularisation": {"encoder_generator"},
    "latent_regression": {"generator"},
    "gaussian_kl": {"encoder_generator"},
    "categorical_kl": {"encoder_generator"},
    "label_similarity": {"encoder_generator", "generator"},
    "mode_seeking": {"generator"},
}


def test_registered_loss_names():
    assert set(_registered_losses()) == set(IMPLEMENTED_UPDATES)


@pytest.mark.parametrize("name", sorted(IMPLEMENTED_UPDATES))
def test_loss_term_finite_scalars(name):
    term = _registered_losses()[name]()
    ctx = _context(_random_translations())

    for update in UPDATES:
        value = getattr(term, update)(ctx)
        if update not in IMPLEMENTED_UPDATES[name]:
            assert value is None, update
            continue
        assert isinstance(value, torch.Tensor), update
        assert value.dim() == 0, update
        assert torch.isfinite(value), update


def test_requires_class_attributes():
    registered = _registered_losses()

    assert registered["categorical_kl"].requires == {"categorical"}
    assert registered["label_similarity"].requires == {"categorical"}
    assert registered["mode_seeking"].requires == {"second_random"}
    assert registered["gaussian_kl"].requires == frozenset()


# --- values ---------------------------------------------------------------------


def test_gaussian_kl_matches_torch_distributions():
    out = _random_translations(count=6)
    posterior = out.posterior

    value = GaussianKL(weight=1.0).encoder_generator(_context(out))

    expected = kl_divergence(
        Normal(posterior.mean, posterior.var.sqrt()), Normal(posterior.prior_mean, posterior.prior_var.sqrt())
    )
    assert value.item() == pytest.approx(expected.sum(-1).mean().item(), abs=1e-5)


def test_gaussian_kl_standard_prior_and_weight():
    out = _random_translations(count=6)
    out.posterior.prior_mean = torch.zeros(6, LATENT_SIZE)
    out.posterior.prior_var = torch.ones(6, LATENT_SIZE)

    value = GaussianKL().encoder_generator(_context(out))

    posterior = out.posterior
    expected = kl_divergence(Normal(posterior.mean, posterior.var.sqrt()), Normal(0.0, 1.0))
    assert value.item() == pytest.approx(0.01 * expected.sum(-1).mean().item(), abs=1e-7)


def test_categorical_kl_matches_torch_distributions():
    out = _random_translations(count=6)
    out.posterior.y_logits = torch.randn(6, 5) * 2

    value = CategoricalKL(weight=1.0).encoder_generator(_context(out))

    expected = kl_divergence(Categorical(logits=out.posterior.y_logits), Categorical(probs=torch.full((6, 5), 0.2)))
    assert value.item() == pytest.approx(expected.mean().item(), abs=1e-6)


def test_mode_seeking_hand_computation():
    out = _random_translations(count=4)
    term = ModeSeeking(weight=2.0, eps=1e-5)

    value = term.generator(_context(out))

    image_distance = np.abs(out.random.numpy() - out.random2.numpy()).mean()
    code_distance = np.abs(out.random_z.numpy() - out.random_z2.numpy()).mean()
    expected = 2.0 / (image_distance / code_distance + 1e-5)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_mode_seeking_needs_second_translation():
    out = _random_translations()
    out.random2 = None

    with pytest.raises(ValueError, match="second_random"):
        ModeSeeking().generator(_context(out))


def test_adversarial_constant_discriminator_values():
    ctx = _context(_random_translations(), model=_stub_model(ConstantDiscriminator))
    term = Adversarial(weight=3.0)

    # Zero logits: each BCE is log 2; the discriminator update sums real and fake of two discriminators.
    assert term.discriminator(ctx).item() == pytest.approx(4 * math.log(2))
    assert term.encoder_generator(ctx).item() == pytest.approx(3 * math.log(2))
    assert term.generator(ctx).item() == pytest.approx(3 * math.log(2))


def test_domain_classification_constant_discriminator_values():
    ctx = _context(_random_translations(), model=_stub_model(ConstantDiscriminator))
    term = DomainClassification(weight=5.0, real_weight=0.5)

    # Zero logits over K = 2 domains: each CE is log 2.
    assert term.discriminator(ctx).item() == pytest.approx(0.5 * 2 * math.log(2))
    assert term.encoder_generator(ctx).item() == pytest.approx(5 * math.log(2))
    assert term.generator(ctx).item() == pytest.approx(5 * math.log(2))


def test_content_adversarial_uniform_target():
    out = _random_translations(count=4)
    model = _stub_model()
    model.content_discriminator = lambda content: torch.tensor([[2.0, 0.0]]).expand(content.shape[0], 2)
    ctx = _context(out, model=model, labels=torch.tensor([0, 0, 1, 1]))
    term = ContentAdversarial(weight=2.0)

    # softmax([2, 0]) = (e^2, 1) / (e^2 + 1)
    log_p0 = 2 - math.log(math.exp(2) + 1)
    log_p1 = -math.log(math.exp(2) + 1)
    assert term.content_discriminator(ctx).item() == pytest.approx(-(log_p0 + log_p1) / 2)
    assert term.encoder_generator(ctx).item() == pytest.approx(2.0 * -(log_p0 + log_p1) / 2)


def test_discriminator_forward_shared_between_terms():
    model = _stub_model()
    ctx = _context(_random_translations(), model=model)

    Adversarial().discriminator(ctx)
    DomainClassification().discriminator(ctx)
    Adversarial().encoder_generator(ctx)
    DomainClassification().encoder_generator(ctx)

    # Encoded: real, detached cross, cross. Random: real, detached random.
    assert model.image_discriminators["encoded"].calls == 3
    assert model.image_discriminators["random"].calls == 2


def test_discriminator_update_detaches_fakes():
    out = _random_translations()
    out.cross.requires_grad_(True)
    out.random.requires_grad_(True)

    Adversarial().discriminator(_context(out)).backward()

    assert out.cross.grad is None
    assert out.random.grad is None


# --- label similarity through a generator ---------------------------------------------


@pytest.mark.parametrize("batch_size", [2, 6])
def test_label_similarity_reaches_generator(batch_size):
    generator_net = TinyGenerator()
    encoder = TinyAttributeEncoder()
    gmvae = GaussianMixturePrior(
        latent_size=LATENT_SIZE, hidden_size=8, feature_size=encoder.feature_size, num_domains=NUM_DOMAINS
    )
    half = batch_size // 2
    labels = torch.tensor([0] * half + [1] * half)
    real = torch.rand(batch_size, 3, 8, 8) * 2 - 1
    content = torch.randn(batch_size, CONTENT_CHANNELS, 8, 8)
    partner_content = content.roll(half, dims=0)

    posterior = gmvae.posterior(encoder(real))
    cross = generator_net(partner_content, posterior.z, gmvae.domain_code(posterior, labels))
    random_z = gmvae.sample(labels)
    random = generator_net(partner_content, random_z, F.one_hot(labels, NUM_DOMAINS).float())
    out = Translations(
        content=content,
        posterior=posterior,
        cross=cross,
        self_recon=generator_net(content, posterior.z, gmvae.domain_code(posterior, labels)),
        random=random,
        random_z=random_z,
        cross_content=torch.randn_like(content),
        cross_posterior=gmvae.posterior(encoder(cross)),
        cycle=torch.rand_like(real),
        random_posterior=gmvae.posterior(encoder(random)),
    )
    ctx = StepContext(_stub_model(), real, labels, out, iteration=0)
    term = LabelSimilarity()
    weight = generator_net.decode.weight

    term.encoder_generator(ctx).backward(retain_graph=True)
    assert weight.grad is not None
    assert weight.grad.abs().sum().item() > 0

    weight.grad = None
    term.generator(ctx).backward()
    assert weight.grad is not None
    assert weight.grad.abs().sum().item() > 0


def test_label_similarity_value_is_cross_entropy():
    out = _random_translations(count=4)
    labels = torch.tensor([0, 1, 1, 0])
    ctx = _context(out, labels=labels)

    value = LabelSimilarity(weight=2.0).generator(ctx)

    log_probs = out.random_posterior.y_logits.log_softmax(1).numpy()
    expected = -np.mean([log_probs[i, labels[i]] for i in range(4)])
    assert value.item() == pytest.approx(2.0 * expected, rel=1e-5)


def test_label_similarity_needs_categorical_posterior():
    out = _random_translations()
    out.cross_posterior = _random_posterior(4, categorical=False)

    with pytest.raises(ValueError, match="gmvae"):
        LabelSimilarity().encoder_generator(_context(out))


# --- recipe validation ----------------------------------------------------------


def _recipe(prior_name: str) -> Recipe:
    return Recipe(
        content_encoder=content_encoder("drit"),
        attribute_encoder=attribute_encoder("drit"),
        prior=prior(prior_name),
        generator=generator("drit"),
        discriminator=discriminator("drit"),
        content_discriminator=discriminator("content"),
        losses=[loss("adversarial"), loss("gaussian_kl"), loss("label_similarity")],
        optimizer=adam(),
    )


def _registry_with_stub_networks() -> Registry:
    """Our priors and losses, with placeholder factories for the other kinds the recipe names."""
    registry = Registry()

    def register(kind, name, factory):
        registry.register(kind, name, factory, package="test", version="0")

    priors.register_components(register=register)
    losses.register_components(register=register)
    for kind, name in [
        ("content_encoder", "drit"),
        ("attribute_encoder", "drit"),
        ("generator", "drit"),
        ("discriminator", "drit"),
        ("discriminator", "content"),
        ("optimizer", "adam"),
        ("dataset", "apple2orange"),
    ]:
        assert kind in KINDS
        register(kind, name, lambda: None)
    return registry


def test_label_similarity_rejected_with_gaussian():
    registry = _registry_with_stub_networks()

    with pytest.raises(RecipeError, match="label_similarity.*categorical"):
        _recipe("gaussian").validate(registry)
    _recipe("gmvae").validate(registry)


def test_installed_recipe_rejects_label_similarity(registry):
    # Needs the installed networks, training and datasets plugins to name every component.
    _recipe("gmvae").validate(registry)

    with pytest.raises(RecipeError, match="label_similarity.*categorical"):
        _recipe("gaussian").validate(registry)
