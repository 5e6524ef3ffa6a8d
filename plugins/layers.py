"""Building blocks shared by the DRIT networks: weight initialisation and the residual block."""

from __future__ import annotations

from torch import Tensor, nn

WEIGHT_STD = 0.02


def init_weights(module: nn.Module, std: float = WEIGHT_STD) -> None:
    """Draw every convolution and linear weight in ``module`` from N(0, std²) and zero their biases.

    Call it before wrapping a layer in a parametrization such as spectral norm, which
    keeps the weight it finds as its starting point.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """Return a 3×3 convolution with reflection padding 1, so stride 1 keeps H and W."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, padding_mode="reflect")


class ResidualBlock(nn.Module):
    """Residual block ``x + IN(conv(ReLU(IN(conv(x)))))`` with 3×3 reflection-padded convolutions.

    Maps (N, C, H, W) to (N, C, H, W). The instance norms have no affine parameters,
    so the block has 2·(9·C² + C) parameters.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.InstanceNorm2d(channels, affine=False),
            nn.ReLU(),
            conv3x3(channels, channels),
            nn.InstanceNorm2d(channels, affine=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def tile(vector: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-sample vector (N, D) to a feature map (N, D, H, W) with the H, W and dtype of ``like``."""
    height, width = like.shape[-2:]
    return vector.to(like.dtype)[:, :, None, None].expand(-1, -1, height, width)
