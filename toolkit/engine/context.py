"""The inputs of a loss term: the batch, the forward pass and memoised discriminator outputs."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from torch import Tensor

from toolkit.components import Posterior

if TYPE_CHECKING:
    from toolkit.engine.model import TranslationModel


@dataclasses.dataclass
class Translations:
    """One forward pass over a batch of 2n images (first half one domain, second half another).

    Every image tensor is (2n, 3, H, W) and aligned with the real batch: entry i is in the
    domain of real image i. The partner of image i is image (i + n) mod 2n, from the other half.

    - ``content``: content codes of the real images, (2n, C, H/4, W/4).
    - ``posterior``: attribute posterior of the real images.
    - ``cross``: G(content of the partner, attribute of i, code of i), the cross translation.
    - ``self_recon``: G(content of i, attribute of i, code of i).
    - ``random``: G(content of the partner, z sampled from the prior for i's domain, one-hot domain of i).
    - ``random_z``: the sampled attribute codes, (2n, nz).
    - ``cross_content``, ``cross_posterior``: the encoders applied to ``cross``.
    - ``cycle``: G(content of cross[partner], attribute of cross[i], code), the cross-cycle reconstruction of i.
    - ``random_posterior``: the attribute encoder applied to ``random`` (latent regression).
    - ``random2``, ``random_z2``: a second random-attribute translation (mode seeking), or None.
    """

    content: Tensor
    posterior: Posterior
    cross: Tensor
    self_recon: Tensor
    random: Tensor
    random_z: Tensor
    cross_content: Tensor
    cross_posterior: Posterior
    cycle: Tensor
    random_posterior: Posterior
    random2: Tensor | None = None
    random_z2: Tensor | None = None


class StepContext:
    """The inputs of one update: the batch, the forward pass, and discriminator calls memoised for that update.

    A fresh context is made for each update, so discriminator outputs are never reused
    after an optimizer step changed the discriminator's weights.
    """

    def __init__(self, model: TranslationModel, real: Tensor, labels: Tensor, out: Translations, iteration: int) -> None:
        self.model = model
        self.real = real
        self.labels = labels
        self.out = out
        self.iteration = iteration
        self._cache: dict[tuple[str, str, bool], tuple[Tensor, Tensor]] = {}

    def images(self, name: str) -> Tensor:
        """Return the real batch (``"real"``) or a named image tensor of the forward pass."""
        if name == "real":
            return self.real
        return getattr(self.out, name)

    def discriminate(self, which: str, name: str, detach: bool = False) -> tuple[Tensor, Tensor]:
        """Return (real/fake logits map, domain logits) of image discriminator ``which`` ("encoded" or "random")."""
        key = (which, name, detach)
        if key not in self._cache:
            images = self.images(name)
            if detach:
                images = images.detach()
            self._cache[key] = self.model.image_discriminators[which](images)
        return self._cache[key]

    def discriminate_content(self, detach: bool = False) -> Tensor:
        """Return the content discriminator's domain logits (2n, num_domains) on the real images' content codes."""
        key = ("content", "content", detach)
        if key not in self._cache:
            content = self.out.content.detach() if detach else self.out.content
            logits = self.model.content_discriminator(content)
            self._cache[key] = (logits, logits)
        return self._cache[key][0]
