"""Tests of the attribute priors (gaussian, gmvae) and the Gumbel-softmax sampler they use."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from toolkit.errors import RecipeError
from toolkit.registry import Registry
from toolkit_plugins import priors
from toolkit_plugins.distributions import gumbel_softmax
from toolkit_plugins.priors import GaussianMixturePrior, GaussianPrior


def _count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _small_gmvae(**params) -> GaussianMixturePrior:
    settings = {"latent_size": 3, "num_components": 2, "hidden_size": 8, **params}
    return GaussianMixturePrior(**settings, feature_size=16, num_domains=2)


def _set_prior_heads(prior: GaussianMixturePrior, mean_weight, mean_bias, var_weight, var_bias) -> None:
    with torch.no_grad():
        prior.prior_heads["mean"].weight.copy_(torch.tensor(mean_weight))
        prior.prior_heads["mean"].bias.copy_(torch.tensor(mean_bias))
        prior.prior_heads["var"].weight.copy_(torch.tensor(var_weight))
        prior.prior_heads["var"].bias.copy_(torch.tensor(var_bias))


# --- parameter counts -------------------------------------------------------------


def test_gaussian_heads_parameter_count():
    prior = GaussianPrior(feature_size=256, num_domains=2)

    # Two Linear(256, 8) heads: 2 * (256 * 8 weights + 8 biases).
    assert _count_parameters(prior.posterior_heads) == 4112
    assert _count_parameters(prior.prior_heads) == 0


def test_gmvae_heads_parameter_count():
    prior = GaussianMixturePrior(feature_size=256, num_domains=2)

    # nz = 108, K = 2, hidden = 512, features = 256, counted by hand:
    features = 256 * 108 + 108  # 27,756
    y_mlp = (108 * 512 + 512) + (512 * 512 + 512) + (512 * 2 + 2)  # 55,808 + 262,656 + 1,026
    z_mlp = (110 * 512 + 512) + (512 * 512 + 512)  # 56,832 + 262,656
    z_heads = 2 * (512 * 108 + 108)  # 110,808
    assert features + y_mlp + z_mlp + z_heads == 777_542
    assert _count_parameters(prior.posterior_heads) == 777_542
    # p(z|y): two Linear(2, 108) heads.
    assert _count_parameters(prior.prior_heads) == 2 * (2 * 108 + 108)


def test_gaussian_heads_start_small():
    prior = GaussianPrior(feature_size=256, num_domains=2)

    for head in prior.posterior_heads.values():
        assert head.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert torch.count_nonzero(head.bias).item() == 0


# --- gaussian prior ------------------------------------------------------------


def test_gaussian_posterior_shapes_and_prior():
    prior = GaussianPrior(latent_size=8, feature_size=32, num_domains=3)
    posterior = prior.posterior(torch.randn(5, 32))

    for name in ("z", "mean", "var", "prior_mean", "prior_var"):
        assert getattr(posterior, name).shape == (5, 8), name
    assert torch.equal(posterior.prior_mean, torch.zeros(5, 8))
    assert torch.equal(posterior.prior_var, torch.ones(5, 8))
    assert posterior.y is None
    assert posterior.y_logits is None
    assert prior.code_size == 3
    assert prior.latent_size == 8
    assert GaussianPrior.has_categorical is False


def test_gaussian_posterior_reparameterises():
    prior = GaussianPrior(latent_size=4, feature_size=6, num_domains=2)
    features = torch.randn(3, 6)

    torch.manual_seed(7)
    posterior = prior.posterior(features)
    torch.manual_seed(7)
    eps = torch.randn(3, 4)

    mean = features @ prior.posterior_heads["mean"].weight.T
    logvar = features @ prior.posterior_heads["logvar"].weight.T
    torch.testing.assert_close(posterior.mean, mean)
    torch.testing.assert_close(posterior.var, logvar.exp())
    torch.testing.assert_close(posterior.z, mean + (0.5 * logvar).exp() * eps)


def test_gaussian_sample_standard_normal():
    prior = GaussianPrior(latent_size=4, feature_size=6, num_domains=2).double()
    codes = prior.sample(torch.zeros(20000, dtype=torch.long))

    assert codes.shape == (20000, 4)
    assert codes.dtype == torch.float64
    # Standard error of a mean of 20000 unit-variance draws is 0.0071.
    assert codes.mean(0).abs().max().item() < 5 * 0.0071
    assert (codes.var(0) - 1).abs().max().item() < 0.05


def test_sample_count_without_domains():
    prior = GaussianPrior(latent_size=4, feature_size=6, num_domains=2)

    assert prior.sample(None, count=7).shape == (7, 4)
    with pytest.raises(ValueError, match="count"):
        prior.sample(None)
    with pytest.raises(ValueError, match="count=3"):
        prior.sample(torch.zeros(2, dtype=torch.long), count=3)


# --- Gumbel-softmax ------------------------------------------------------------


def test_gumbel_hard_frequencies_match_softmax():
    logits_row = [1.0, 0.0, -1.0, 0.5]
    draws = 20000
    logits = torch.tensor(logits_row).expand(draws, 4)

    samples = gumbel_softmax(logits, temperature=0.7, hard=True)

    exponentials = np.exp(np.array(logits_row))
    expected = exponentials / exponentials.sum()
    frequencies = samples.mean(0).numpy()
    standard_errors = np.sqrt(expected * (1 - expected) / draws)
    for k in range(4):
        assert abs(frequencies[k] - expected[k]) < 5 * standard_errors[k], k


def test_gumbel_hard_samples_are_one_hot():
    logits = torch.randn(50, 3, requires_grad=True)
    samples = gumbel_softmax(logits, temperature=1.0, hard=True)

    assert torch.equal(samples.sum(1), torch.ones(50))
    assert set(samples.detach().unique().tolist()) <= {0.0, 1.0}
    # Straight-through: the gradient of the relaxed sample reaches the logits.
    (samples * torch.randn(50, 3)).sum().backward()
    assert logits.grad.abs().sum().item() > 0


def test_gumbel_soft_samples_sum_to_one():
    logits = torch.randn(100, 5) * 3
    samples = gumbel_softmax(logits, temperature=0.5)

    torch.testing.assert_close(samples.sum(1), torch.ones(100))
    assert (samples >= 0).all()
    assert not torch.equal(samples, F.one_hot(samples.argmax(1), 5).float())


def test_gumbel_extreme_logits_stay_finite():
    logits = torch.tensor([[1e4, -1e4], [0.0, 0.0]]).repeat(5000, 1)

    assert torch.isfinite(gumbel_softmax(logits, temperature=0.5)).all()
    assert torch.isfinite(gumbel_softmax(logits, temperature=0.5, hard=True)).all()


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, 1.0),
        # The default decay 0.013862944 is ln(2) / 50 to 8 digits, so the temperature halves every 50 epochs.
        (10, 2 ** (-10 / 50)),
        (100, 0.5),  # 0.25 before the floor
    ],
)
def test_temperature_annealing_schedule(epoch, expected):
    prior = _small_gmvae()
    prior.set_epoch(epoch)

    assert prior.current_temperature == pytest.approx(expected, abs=1e-6)


def test_temperature_floor_and_reset():
    prior = _small_gmvae(temperature=2.0, min_temperature=0.25)
    prior.set_epoch(1000)
    assert prior.current_temperature == 0.25
    prior.set_epoch(0)
    assert prior.current_temperature == 2.0


# --- gmvae prior ---------------------------------------------------------------


def test_gmvae_rejects_component_domain_mismatch():
    with pytest.raises(RecipeError) as raised:
        GaussianMixturePrior(num_components=3, feature_size=16, num_domains=2)

    message = str(raised.value)
    assert "num_components=3" in message
    assert "num_components=2" in message
    assert "condition_on_inferred_y=False" in message


def test_gmvae_mismatch_allowed_with_labels():
    prior = GaussianMixturePrior(
        latent_size=3, num_components=4, hidden_size=8, condition_on_inferred_y=False, feature_size=16, num_domains=2
    )
    labels = torch.tensor([0, 1, 1])
    posterior = prior.posterior(torch.randn(3, 16))

    assert posterior.y.shape == (3, 4)
    assert torch.equal(prior.domain_code(posterior, labels), F.one_hot(labels, 2).float())
    assert prior.sample(labels).shape == (3, 3)


def test_gmvae_posterior_shapes():
    prior = _small_gmvae()
    posterior = prior.posterior(torch.randn(6, 16))

    for name in ("z", "mean", "var", "prior_mean", "prior_var"):
        assert getattr(posterior, name).shape == (6, 3), name
    assert posterior.y_logits.shape == (6, 2)
    assert posterior.y.shape == (6, 2)
    torch.testing.assert_close(posterior.y.sum(1), torch.ones(6))
    assert (posterior.var > 0).all()
    assert (posterior.prior_var > 0).all()
    assert GaussianMixturePrior.has_categorical is True
    assert prior.code_size == 2


def test_gmvae_posterior_prior_at_sampled_y():
    prior = _small_gmvae()
    posterior = prior.posterior(torch.randn(6, 16))

    mean_head = prior.prior_heads["mean"]
    var_head = prior.prior_heads["var"]
    expected_mean = posterior.y @ mean_head.weight.T + mean_head.bias
    expected_var = torch.log1p(torch.exp(posterior.y @ var_head.weight.T + var_head.bias)) + 1e-6
    torch.testing.assert_close(posterior.prior_mean, expected_mean)
    torch.testing.assert_close(posterior.prior_var, expected_var)


def test_gmvae_hard_y_is_one_hot():
    prior = _small_gmvae(hard=True)
    posterior = prior.posterior(torch.randn(6, 16))

    assert set(posterior.y.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(posterior.y.sum(1), torch.ones(6))


def test_gmvae_sample_uses_learned_prior():
    prior = _small_gmvae()
    mean_weight = [[1.0, -2.0], [0.5, 3.0], [0.0, 1.5]]
    mean_bias = [0.1, -0.2, 0.3]
    var_weight = [[0.0, 1.0], [0.0, -1.0], [0.0, 0.5]]
    var_bias = [0.0, 0.2, -0.4]
    _set_prior_heads(prior, mean_weight, mean_bias, var_weight, var_bias)
    draws = 20000

    codes = prior.sample(torch.ones(draws, dtype=torch.long)).detach().numpy()

    for dim in range(3):
        # Component 1 is the one-hot y = (0, 1): column 1 of each head plus its bias.
        expected_mean = mean_weight[dim][1] + mean_bias[dim]
        expected_var = math.log1p(math.exp(var_weight[dim][1] + var_bias[dim])) + 1e-6
        standard_error = math.sqrt(expected_var / draws)
        assert abs(codes[:, dim].mean() - expected_mean) < 5 * standard_error, dim
        assert abs(codes[:, dim].var() - expected_var) < 5 * expected_var * math.sqrt(2 / draws), dim


def test_gmvae_sample_repeats_with_seed():
    prior = _small_gmvae()
    domains = torch.tensor([0, 1, 0, 1])

    torch.manual_seed(3)
    first = prior.sample(domains)
    torch.manual_seed(3)
    second = prior.sample(domains)

    assert torch.equal(first, second)


def test_gmvae_sample_without_domains_uniform():
    prior = _small_gmvae()
    # Component 0 centred at -10, component 1 at +10, both with variance softplus(-10) ~ 4.5e-5.
    _set_prior_heads(
        prior,
        [[-10.0, 10.0]] * 3,
        [0.0] * 3,
        [[0.0, 0.0]] * 3,
        [-10.0] * 3,
    )
    draws = 20000

    codes = prior.sample(None, count=draws)

    assert codes.shape == (draws, 3)
    share_of_component_1 = (codes[:, 0] > 0).float().mean().item()
    assert abs(share_of_component_1 - 0.5) < 5 * math.sqrt(0.25 / draws)


def test_gmvae_domain_code_inferred_or_labels():
    labels = torch.tensor([1, 0])
    one_hot = F.one_hot(labels, 2).float()
    inferred = _small_gmvae()
    from_labels = _small_gmvae(condition_on_inferred_y=False)
    posterior = inferred.posterior(torch.randn(2, 16))

    assert inferred.domain_code(posterior, labels) is posterior.y
    assert torch.equal(inferred.domain_code(None, labels), one_hot)
    assert torch.equal(from_labels.domain_code(posterior, labels), one_hot)


# --- registration --------------------------------------------------------------


def _registry_with_priors() -> Registry:
    registry = Registry()

    def register(kind, name, factory):
        registry.register(kind, name, factory, package="test", version="0")

    priors.register_components(register=register)
    return registry


def test_priors_registered_with_summaries():
    registry = _registry_with_priors()

    assert registry.names("prior") == ["gaussian", "gmvae"]
    gmvae = registry.get("prior", "gmvae")
    assert {"num_components": 2, "temperature": 1.0, "min_temperature": 0.5}.items() <= {
        parameter.name: parameter.default for parameter in gmvae.parameters
    }.items()
    assert "\n" not in registry.get("prior", "gaussian").summary


def test_prior_latent_size_is_recipe_parameter():
    registry = _registry_with_priors()
    gmvae = registry.get("prior", "gmvae")

    assert "latent_size" in [parameter.name for parameter in gmvae.parameters]
    registry.check_parameters("prior", "gmvae", {"latent_size": 108})
