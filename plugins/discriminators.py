"""The DRIT++/MDMM discriminators: images (real/fake and domain) and content codes (domain)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from toolkit_plugins.layers import init_weights


def _check_size(network: str, height: int, width: int, minimum: int, fix: str) -> None:
    if height < minimum or width < minimum:
        raise ValueError(f"{network} needs inputs of at least {minimum}x{minimum}, got {height}x{width}; {fix}")


class DritImageDiscriminator(nn.Module):
    """Image discriminator of MDMM: a real/fake logit map and domain-classification logits.

    Maps images (N, 3, H, W) to a pair: real/fake logits (N, 1, h, w), with
    h = H/2^layers rounded up (4×4 at 216×216), and domain logits (N, num_domains).
    Layers: ``layers`` 3×3 stride-2 convolutions (reflection padding 1), each followed
    by LeakyReLU(0.2), with channels doubling from ``channels`` and the last one
    repeating the width before it (64, 128, 256, 512, 1024, 1024 by default). Two heads
    read the last feature map: a 1×1 convolution without bias to the real/fake map, and a
    3×3 convolution without bias (zero padding 1) to ``num_domains`` logits that are
    averaged over all positions. ``spectral_norm`` wraps every convolution, heads
    included, in spectral normalization. The defaults at two domains give 15,728,256
    parameters, with or without spectral norm.

    The MDMM reference sizes its domain-head kernel as S/64 (3 at S = 216) without
    padding, so it fits one image size. Here the kernel is 3 at every size and the
    logits are pooled, so any H, W of at least 2^(layers-1) + 1 work, square or not.
    """

    def __init__(self, channels: int = 64, layers: int = 6, spectral_norm: bool = False, *, num_domains: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"image discriminator channels must be at least 1, got {channels}")
        if layers < 2:
            raise ValueError(f"image discriminator layers must be at least 2, got {layers}")
        if num_domains < 1:
            raise ValueError(f"image discriminator needs at least one domain, got num_domains={num_domains}")
        self.num_domains = num_domains
        # Each reflection-padded conv needs an input side of at least 2.
        self.minimum_size = 2 ** (layers - 1) + 1

        widths = [channels * 2**index for index in range(layers - 1)]
        widths.append(widths[-1])
        body: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            body += [
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1, padding_mode="reflect"),
                nn.LeakyReLU(0.2),
            ]
            in_channels = width
        self.body = nn.Sequential(*body)
        self.real_fake_head = nn.Conv2d(in_channels, 1, 1, bias=False)
        self.domain_head = nn.Conv2d(in_channels, num_domains, 3, padding=1, bias=False)

        init_weights(self)
        if spectral_norm:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    apply_spectral_norm(module)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        _check_size(
            "image discriminator",
            images.shape[-2],
            images.shape[-1],
            self.minimum_size,
            "use larger images or fewer discriminator layers",
        )
        features = self.body(images)
        logits = self.real_fake_head(features)
        domain_logits = self.domain_head(features).mean(dim=(2, 3))
        return logits, domain_logits


class ContentDiscriminator(nn.Module):
    """Content discriminator of DRIT++/MDMM: domain logits from a content code.

    Maps content codes (N, content_channels, h, w) to domain logits (N, num_domains).
    The encoders are trained to make these logits domain-ambiguous. Layers: three 7×7
    stride-2 convolutions to ``channels``, each followed by instance norm without affine
    parameters and LeakyReLU(0.2). Then an adaptive average pool to 4×4, a 4×4
    convolution with LeakyReLU(0.2), and a 1×1 convolution to ``num_domains`` logits.
    The defaults at two domains give 10,683,906 parameters.

    The reference pads the 7×7 convolutions by 1 and has no pooling, so the 4×4
    convolution gets a 4×4 map only for content maps of 53 to 60 a side (216×216 images
    among the usual sizes). Smaller maps fail and larger ones give several logits per
    domain. Here the 7×7 convolutions use reflection padding 3 and the adaptive pool
    brings any map to 4×4, so content maps of at least 13×13 work, square or not.
    """

    # Reflection padding 3 needs each side above 3 before every one of the three convs.
    minimum_size = 13

    def __init__(self, channels: int = 256, *, num_domains: int, content_channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"content discriminator channels must be at least 1, got {channels}")
        if num_domains < 1:
            raise ValueError(f"content discriminator needs at least one domain, got num_domains={num_domains}")
        self.num_domains = num_domains

        layers: list[nn.Module] = []
        in_channels = content_channels
        for _ in range(3):
            layers += [
                nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, padding_mode="reflect"),
                nn.InstanceNorm2d(channels, affine=False),
                nn.LeakyReLU(0.2),
            ]
            in_channels = channels
        layers += [
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(channels, channels, 4),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, num_domains, 1),
            nn.Flatten(),
        ]
        self.layers = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, content: Tensor) -> Tensor:
        _check_size(
            "content discriminator",
            content.shape[-2],
            content.shape[-1],
            self.minimum_size,
            "use images of at least 52x52 pixels",
        )
        return self.layers(content)
