"""Attribute priors: the unimodal Gaussian of DRIT++/MDMM and the Gaussian mixture (GMVAE) of GM-DRIT."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from toolkit.components import Posterior, Prior
from toolkit.errors import RecipeError
from toolkit.hookspecs import hookimpl
from toolkit_plugins.distributions import gumbel_softmax, reparameterise

# Added to every softplus variance so that log(var) in the KL stays finite.
VARIANCE_FLOOR = 1e-6


def _count(domains: Tensor | None, count: int | None) -> int:
    """Return the number of codes ``sample`` draws: len(domains), or ``count`` when domains is None."""
    if domains is None:
        if count is None:
            raise ValueError("sample() needs domains or a count; pass domains (N,) or count=N")
        return int(count)
    if count is not None and count != len(domains):
        raise ValueError(f"sample() got {len(domains)} domains but count={count}; pass one of them")
    return len(domains)


class GaussianPrior(Prior):
    """Unimodal VAE prior p(z) = N(0, I) with a Gaussian posterior q(z|x) (DRIT++, MDMM).

    Posterior heads: two Linear(feature_size, latent_size) layers map pooled attribute
    features (N, feature_size) to the mean and log-variance (N, latent_size) of q(z|x);
    z = mean + exp(logvar / 2) * eps. The generator's domain code is the one-hot label (N, num_domains).
    """

    has_categorical = False

    def __init__(self, latent_size: int = 8, *, feature_size: int, num_domains: int) -> None:
        super().__init__()
        self.latent_size = latent_size
        self.code_size = num_domains
        self.posterior_heads["mean"] = nn.Linear(feature_size, latent_size)
        self.posterior_heads["logvar"] = nn.Linear(feature_size, latent_size)
        for head in self.posterior_heads.values():
            nn.init.normal_(head.weight, 0.0, 0.02)
            nn.init.zeros_(head.bias)

    def posterior(self, features: Tensor) -> Posterior:
        """Map features (N, feature_size) to q(z|x) = N(mean, exp(logvar)) and a sample z, all (N, latent_size)."""
        mean = self.posterior_heads["mean"](features)
        logvar = self.posterior_heads["logvar"](features)
        z = mean + torch.exp(logvar / 2) * torch.randn_like(mean)
        return Posterior(
            z=z,
            mean=mean,
            var=logvar.exp(),
            prior_mean=torch.zeros_like(mean),
            prior_var=torch.ones_like(mean),
        )

    def sample(self, domains: Tensor | None, count: int | None = None) -> Tensor:
        """Draw N codes (N, latent_size) from N(0, I). ``domains`` only sets N."""
        weight = self.posterior_heads["mean"].weight
        return torch.randn(_count(domains, count), self.latent_size, device=weight.device, dtype=weight.dtype)


class GaussianMixturePrior(Prior):
    """Gaussian-mixture prior p(y) p(z|y) with a GMVAE posterior q(y|x) q(z|x,y) (GM-DRIT; Dilokthanakul et al. 2016).

    Posterior heads, on pooled attribute features (N, feature_size): h = softplus(Linear(feature_size,
    latent_size)). q(y|x) is an MLP h -> hidden -> hidden -> K logits, and y (N, K) is a
    Gumbel-softmax sample at the current temperature (one-hot with a straight-through gradient
    when ``hard``). q(z|x,y) is an MLP [h, y] -> hidden -> hidden, then linear heads to the mean
    and softplus variance (N, latent_size). Prior heads, trained with the generator:
    p(z|y) = N(Linear(K, latent_size)(y), softplus(Linear(K, latent_size)(y))).
    All linear layers keep PyTorch's default initialisation.

    With ``condition_on_inferred_y`` the generator's domain code is the encoder's y for each
    image, so K must equal the number of domains. The Gumbel temperature decays per epoch as
    max(min_temperature, temperature * exp(-temperature_decay * epoch)).
    """

    has_categorical = True

    def __init__(
        self,
        latent_size: int = 108,
        num_components: int = 2,
        hidden_size: int = 512,
        temperature: float = 1.0,
        temperature_decay: float = 0.013862944,
        min_temperature: float = 0.5,
        hard: bool = False,
        condition_on_inferred_y: bool = True,
        *,
        feature_size: int,
        num_domains: int,
    ) -> None:
        super().__init__()
        if condition_on_inferred_y and num_components != num_domains:
            raise RecipeError(
                f"prior 'gmvae': num_components={num_components} but the data has {num_domains} domains, "
                "and with condition_on_inferred_y=True the inferred y is the generator's domain code; "
                f"set num_components={num_domains}, or set condition_on_inferred_y=False to condition on the labels"
            )
        if temperature <= 0 or min_temperature <= 0:
            raise RecipeError(
                f"prior 'gmvae': temperature ({temperature}) and min_temperature ({min_temperature}) "
                "must be positive"
            )
        self.latent_size = latent_size
        self.code_size = num_domains
        self.num_components = num_components
        self.temperature = temperature
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self.hard = hard
        self.condition_on_inferred_y = condition_on_inferred_y
        self._temperature = max(min_temperature, temperature)

        self.posterior_heads["features"] = nn.Linear(feature_size, latent_size)
        self.posterior_heads["y_logits"] = nn.Sequential(
            nn.Linear(latent_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, num_components),
        )
        self.posterior_heads["z_hidden"] = nn.Sequential(
            nn.Linear(latent_size + num_components, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
        )
        self.posterior_heads["z_mean"] = nn.Linear(hidden_size, latent_size)
        self.posterior_heads["z_var"] = nn.Linear(hidden_size, latent_size)
        self.prior_heads["mean"] = nn.Linear(num_components, latent_size)
        self.prior_heads["var"] = nn.Linear(num_components, latent_size)

    @property
    def current_temperature(self) -> float:
        """Gumbel-softmax temperature used by ``posterior`` now."""
        return self._temperature

    @current_temperature.setter
    def current_temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"the Gumbel temperature must be positive, got {value}")
        self._temperature = float(value)

    def set_epoch(self, epoch: float) -> None:
        """Set the Gumbel temperature to max(min_temperature, temperature * exp(-temperature_decay * epoch))."""
        decayed = self.temperature * math.exp(-self.temperature_decay * epoch)
        self._temperature = max(self.min_temperature, decayed)

    def prior_parameters(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return the mean and variance (N, latent_size) of p(z|y) for component weights y (N, K)."""
        mean = self.prior_heads["mean"](y)
        var = F.softplus(self.prior_heads["var"](y)) + VARIANCE_FLOOR
        return mean, var

    def posterior(self, features: Tensor) -> Posterior:
        """Map features (N, feature_size) to q(y|x), a sample y (N, K), q(z|x,y) and z (N, latent_size).

        ``prior_mean`` and ``prior_var`` are p(z|y) at the sampled y.
        """
        hidden = F.softplus(self.posterior_heads["features"](features))
        y_logits = self.posterior_heads["y_logits"](hidden)
        y = gumbel_softmax(y_logits, self._temperature, hard=self.hard)

        z_hidden = self.posterior_heads["z_hidden"](torch.cat([hidden, y], dim=1))
        mean = self.posterior_heads["z_mean"](z_hidden)
        var = F.softplus(self.posterior_heads["z_var"](z_hidden)) + VARIANCE_FLOOR
        prior_mean, prior_var = self.prior_parameters(y)
        return Posterior(
            z=reparameterise(mean, var),
            mean=mean,
            var=var,
            prior_mean=prior_mean,
            prior_var=prior_var,
            y_logits=y_logits,
            y=y,
        )

    def sample(self, domains: Tensor | None, count: int | None = None) -> Tensor:
        """Draw codes (N, latent_size) from the learned p(z|y), reparameterised.

        Component k = domains[i] when ``domains`` (N,) is given and K equals the number of
        domains. Otherwise (no domains, or K != num_domains, which needs
        condition_on_inferred_y=False) the component is drawn uniformly from the K components.
        """
        number = _count(domains, count)
        weight = self.prior_heads["mean"].weight
        if domains is not None and self.num_components == self.code_size:
            components = domains.to(device=weight.device, dtype=torch.long)
        else:
            components = torch.randint(self.num_components, (number,), device=weight.device)
        y = F.one_hot(components, self.num_components).to(weight.dtype)
        mean, var = self.prior_parameters(y)
        return reparameterise(mean, var)

    def domain_code(self, posterior: Posterior | None, labels: Tensor) -> Tensor:
        """Return the generator's domain code (N, num_domains): the inferred y, or one-hot labels.

        The inferred y is used when ``condition_on_inferred_y`` is set and a posterior is given.
        """
        if self.condition_on_inferred_y and posterior is not None and posterior.y is not None:
            return posterior.y
        return super().domain_code(posterior, labels)


@hookimpl
def register_components(register):
    register("prior", "gaussian", GaussianPrior)
    register("prior", "gmvae", GaussianMixturePrior)
