"""The DRIT++/MDMM encoders: content code (a feature map) and attribute features (a vector)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from toolkit_plugins.layers import ResidualBlock, conv3x3, init_weights, tile


class DritContentEncoder(nn.Module):
    """Content encoder of DRIT++/MDMM: an image to a domain-invariant content code.

    Maps images (N, 3, H, W) in [-1, 1] to content codes (N, 4·channels, H/4, W/4).
    H and W that are not multiples of 4 give ceil(H/4) × ceil(W/4).

    Layers: a 7×7 convolution 3→channels with LeakyReLU of slope 0.01 (the PyTorch
    default, which the DRIT reference code uses). Then two 3×3 stride-2 convolutions
    double the channels, each followed by instance norm without affine parameters and
    ReLU. Last come ``residual_blocks`` residual blocks (conv-IN-ReLU-conv-IN plus the
    input) at 4·channels. Every padded convolution uses reflection padding.

    In training mode the code gets additive Gaussian noise with standard deviation
    ``noise_std``, so the content code cannot carry fine detail by its scale alone.
    In eval mode the output is deterministic. The defaults give 5,099,136 parameters.
    """

    def __init__(self, channels: int = 64, residual_blocks: int = 4, noise_std: float = 1.0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"content encoder channels must be at least 1, got {channels}")
        if residual_blocks < 0:
            raise ValueError(f"content encoder residual_blocks must be 0 or more, got {residual_blocks}")
        if noise_std < 0:
            raise ValueError(f"content encoder noise_std must be 0 or more, got {noise_std}; 0 turns the noise off")
        self.out_channels = 4 * channels
        self.noise_std = float(noise_std)

        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 7, padding=3, padding_mode="reflect"),
            nn.LeakyReLU(0.01),
        )
        self.downsample = nn.Sequential(
            conv3x3(channels, 2 * channels, stride=2),
            nn.InstanceNorm2d(2 * channels, affine=False),
            nn.ReLU(),
            conv3x3(2 * channels, 4 * channels, stride=2),
            nn.InstanceNorm2d(4 * channels, affine=False),
            nn.ReLU(),
        )
        self.residual = nn.Sequential(*(ResidualBlock(self.out_channels) for _ in range(residual_blocks)))
        init_weights(self)

    def forward(self, images: Tensor) -> Tensor:
        content = self.residual(self.downsample(self.stem(images)))
        if self.training and self.noise_std > 0:
            content = content + self.noise_std * torch.randn_like(content)
        return content


class _ResidualDownBlock(nn.Module):
    """Residual block that halves H and W: LeakyReLU-conv-LeakyReLU-conv-avgpool plus avgpool-1×1 conv of the input.

    Maps (N, C_in, H, W) to (N, C_out, H/2, W/2). The first 3×3 convolution keeps C_in
    channels and the second changes them to C_out.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2),
            conv3x3(in_channels, in_channels),
            nn.LeakyReLU(0.2),
            conv3x3(in_channels, out_channels),
            nn.AvgPool2d(2),
        )
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class DritAttributeEncoder(nn.Module):
    """Attribute encoder of MDMM ("concat" style): an image and its domain code to pooled attribute features.

    Maps images (N, 3, H, W) and domain codes (N, num_domains) to features
    (N, 4·channels). The domain code is broadcast to an (N, num_domains, H, W) map and
    concatenated to the image. H and W must be at least 16.

    Layers: a 4×4 stride-2 convolution (reflection padding 1) to ``channels``, then three
    residual down-blocks to 2·, 3· and 4·channels. Each block computes LeakyReLU(0.2),
    3×3 conv, LeakyReLU(0.2), 3×3 conv and 2×2 average pool, and its shortcut is a 2×2
    average pool then a 1×1 conv. A final LeakyReLU(0.2) and global average pooling
    give the features.

    The mean and log-variance heads that turn these features into an attribute code
    belong to the prior component, so the defaults at two domains give 1,342,016
    parameters, and MDMM's 1,346,128 once two 256→8 linear heads are added.
    """

    def __init__(self, channels: int = 64, *, num_domains: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"attribute encoder channels must be at least 1, got {channels}")
        if num_domains < 1:
            raise ValueError(f"attribute encoder needs at least one domain, got num_domains={num_domains}")
        self.num_domains = num_domains
        self.feature_size = 4 * channels

        self.stem = nn.Conv2d(3 + num_domains, channels, 4, stride=2, padding=1, padding_mode="reflect")
        self.blocks = nn.Sequential(
            _ResidualDownBlock(channels, 2 * channels),
            _ResidualDownBlock(2 * channels, 3 * channels),
            _ResidualDownBlock(3 * channels, 4 * channels),
        )
        self.pool = nn.Sequential(nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        init_weights(self)

    def forward(self, images: Tensor, domain_code: Tensor) -> Tensor:
        if domain_code.ndim != 2 or domain_code.shape[1] != self.num_domains:
            raise ValueError(
                f"attribute encoder expects domain codes of shape (N, {self.num_domains}), "
                f"got {tuple(domain_code.shape)}; pass one code per image with one entry per domain"
            )
        x = torch.cat([images, tile(domain_code, images)], dim=1)
        return self.pool(self.blocks(self.stem(x)))
