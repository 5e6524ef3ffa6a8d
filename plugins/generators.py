"""The DRIT++/MDMM generator ("concat" style) and its GM-DRIT variants: AdaIN, double upsampling, p(x|z) head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit_plugins.layers import ResidualBlock, conv3x3, init_weights, tile

LIKELIHOOD_HIDDEN = 512


class FeatureMapLayerNorm(nn.Module):
    """Layer norm over all of (C, H, W) of each sample, then a per-channel scale and bias.

    Unlike ``nn.LayerNorm``, whose affine parameters would have the shape of (C, H, W),
    the affine parameters here have one entry per channel, so the layer works at any
    H and W. This is the layer norm of the DRIT reference's upsampling blocks.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        normalized = F.layer_norm(x, x.shape[1:], eps=self.eps)
        return normalized * self.weight[:, None, None] + self.bias[:, None, None]


class AdaptiveInstanceNorm(nn.Module):
    """Adaptive instance norm (AdaIN): instance norm with a scale and bias predicted from the domain code.

    Maps features (N, C, H, W) and codes (N, code_size) to
    ``(1 + scale(code)) · IN(x) + bias(code)``. The predictor is a 2-layer MLP: a shared
    linear layer code_size→hidden with ReLU, then two separate linear heads hidden→C
    for the scale and the bias. The scale is an offset from 1, so with the N(0, 0.02)
    initial weights the layer starts close to a plain instance norm.
    """

    def __init__(self, channels: int, code_size: int, hidden_size: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.hidden = nn.Sequential(nn.Linear(code_size, hidden_size), nn.ReLU())
        self.scale_head = nn.Linear(hidden_size, channels)
        self.bias_head = nn.Linear(hidden_size, channels)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        hidden = self.hidden(code.to(x.dtype))
        scale = 1 + self.scale_head(hidden)
        bias = self.bias_head(hidden)
        return scale[:, :, None, None] * self.norm(x) + bias[:, :, None, None]


class AdaptiveResidualBlock(nn.Module):
    """Residual block ``x + AdaIN(conv(ReLU(AdaIN(conv(x), code))), code)`` with 3×3 reflection-padded convolutions.

    Maps (N, C, H, W) and domain codes (N, code_size) to (N, C, H, W). Each of the two
    norms has its own MLP with C hidden units.
    """

    def __init__(self, channels: int, code_size: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.norm1 = AdaptiveInstanceNorm(channels, code_size, hidden_size=channels)
        self.conv2 = conv3x3(channels, channels)
        self.norm2 = AdaptiveInstanceNorm(channels, code_size, hidden_size=channels)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x), code))
        out = self.norm2(self.conv2(out), code)
        return x + out


def _upsample_block(in_channels: int, out_channels: int, double: bool) -> nn.Sequential:
    """Return 3×3 stride-2 transposed conv, layer norm and ReLU, which doubles H and W.

    ``double`` appends a 3×3 stride-1 transposed conv, layer norm and ReLU at ``out_channels``.
    """
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
        FeatureMapLayerNorm(out_channels),
        nn.ReLU(),
    ]
    if double:
        layers += [
            nn.ConvTranspose2d(out_channels, out_channels, 3, stride=1, padding=1),
            FeatureMapLayerNorm(out_channels),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers)


class DritGenerator(nn.Module):
    """Generator of MDMM ("concat" style): content code, attribute code and domain code to an image.

    Maps content codes (N, C, h, w), attribute codes z (N, nz) and domain codes
    (N, code_size) to images (N, 3, 4h, 4w) in [-1, 1], where C is
    ``content_channels``, nz is ``latent_size`` and h, w may differ.

    Layers: a residual block at C (conv-IN-ReLU-conv-IN plus the input). Then the domain
    code and z, broadcast over h×w, are concatenated, and three residual blocks run at
    C + nz + code_size channels. Two upsampling blocks follow, each concatenating z and
    applying a 3×3 stride-2 transposed conv that halves the channels, layer norm over
    (C, H, W) with a per-channel affine, and ReLU. Finally z is concatenated once more
    and a 1×1 transposed conv with tanh gives 3 channels. The defaults at nz = 8 and two
    domains give 5,435,252 parameters.

    Options (the GM-DRIT variants):

    - ``adain``: the first residual block uses adaptive instance norm, whose per-channel
      scale and bias a 2-layer MLP predicts from the domain code. Each norm layer has
      separate scale and bias outputs, where the GM-DRIT reference predicts one vector
      and uses it for both.
    - ``double_upsample``: each upsampling block gets a second 3×3 stride-1 transposed
      conv with layer norm and ReLU.
    - ``likelihood_head``: a p(x|z) head on the decoded image, applied to each pixel
      (1×1 convs 3→512, ReLU, 512→512, ReLU, 512→3, tanh), so the output stays in
      [-1, 1] at any image size. The GM-DRIT reference applies its MLP along the
      image width with a sigmoid, which ties it to one width and to [0, 1].
    """

    def __init__(
        self,
        adain: bool = False,
        double_upsample: bool = False,
        likelihood_head: bool = False,
        *,
        latent_size: int,
        code_size: int,
        content_channels: int,
    ) -> None:
        super().__init__()
        if latent_size < 1:
            raise ValueError(f"generator latent_size must be at least 1, got {latent_size}")
        if code_size < 1:
            raise ValueError(f"generator code_size must be at least 1, got {code_size}")
        self.adain = adain
        self.latent_size = latent_size
        self.code_size = code_size
        self.content_channels = content_channels

        if adain:
            self.shared: nn.Module = AdaptiveResidualBlock(content_channels, code_size)
        else:
            self.shared = ResidualBlock(content_channels)

        channels = content_channels + latent_size + code_size
        self.trunk = nn.Sequential(*(ResidualBlock(channels) for _ in range(3)))
        channels += latent_size
        self.upsample1 = _upsample_block(channels, channels // 2, double_upsample)
        channels = channels // 2 + latent_size
        self.upsample2 = _upsample_block(channels, channels // 2, double_upsample)
        channels = channels // 2 + latent_size
        self.to_image = nn.ConvTranspose2d(channels, 3, 1)

        self.likelihood: nn.Sequential | None = None
        if likelihood_head:
            self.likelihood = nn.Sequential(
                nn.Conv2d(3, LIKELIHOOD_HIDDEN, 1),
                nn.ReLU(),
                nn.Conv2d(LIKELIHOOD_HIDDEN, LIKELIHOOD_HIDDEN, 1),
                nn.ReLU(),
                nn.Conv2d(LIKELIHOOD_HIDDEN, 3, 1),
                nn.Tanh(),
            )
        init_weights(self)

    def forward(self, content: Tensor, z: Tensor, code: Tensor) -> Tensor:
        self._check_inputs(content, z, code)
        if self.adain:
            x = self.shared(content, code)
        else:
            x = self.shared(content)

        x = self.trunk(torch.cat([x, tile(code, x), tile(z, x)], dim=1))
        x = self.upsample1(torch.cat([x, tile(z, x)], dim=1))
        x = self.upsample2(torch.cat([x, tile(z, x)], dim=1))
        image = torch.tanh(self.to_image(torch.cat([x, tile(z, x)], dim=1)))

        if self.likelihood is not None:
            image = self.likelihood(image)
        return image

    def _check_inputs(self, content: Tensor, z: Tensor, code: Tensor) -> None:
        if content.ndim != 4 or content.shape[1] != self.content_channels:
            raise ValueError(
                f"generator expects content codes of shape (N, {self.content_channels}, h, w), "
                f"got {tuple(content.shape)}"
            )
        if z.shape != (content.shape[0], self.latent_size):
            raise ValueError(
                f"generator expects attribute codes of shape ({content.shape[0]}, {self.latent_size}), "
                f"got {tuple(z.shape)}; pass one attribute code per content code, "
                "from a prior whose latent size matches the generator's"
            )
        if code.shape != (content.shape[0], self.code_size):
            raise ValueError(
                f"generator expects domain codes of shape ({content.shape[0]}, {self.code_size}), "
                f"got {tuple(code.shape)}"
            )
