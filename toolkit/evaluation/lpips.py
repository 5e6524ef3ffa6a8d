"""LPIPS v0.1 perceptual distance with an AlexNet backbone.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018. The backbone weights are torchvision's ``AlexNet_Weights.IMAGENET1K_V1``
(``alexnet-owt-7be5be79.pth``) and the linear-layer weights are the lpips package's v0.1
file ``alex.pth``. Both load from local files; see ``weights.find_weights``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import alexnet

from toolkit.evaluation.weights import ALEXNET_WEIGHTS, LPIPS_WEIGHTS, InvalidWeightsError, load_weights, read_state_dict

__all__ = ["ALEXNET_WEIGHTS", "LPIPS", "LPIPS_WEIGHTS"]

# Channels of AlexNet's five ReLU outputs, which LPIPS compares.
CHANNELS = (64, 192, 384, 256, 256)
# Indices in torchvision's alexnet().features of the ReLUs after conv1 ... conv5.
_RELU_INDICES = (1, 4, 7, 9, 11)
# LPIPS v0.1 scaling layer: input (N, 3, H, W) in [-1, 1] becomes (x - shift) / scale.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# Added to the channel norm before dividing by it.
_EPSILON = 1e-10
# Smallest image side for which AlexNet's second max pool still gets a 3 x 3 input.
MIN_SIDE = 31


def _random_features() -> nn.Sequential:
    """Return torchvision AlexNet's convolutional layers with PyTorch's default initialisation.

    torchvision's alexnet() also initialises the large classifier, which LPIPS drops, so the
    network is built on the meta device and only the kept layers get real tensors.
    """
    with torch.device("meta"):
        features = alexnet(weights=None).features
    features.to_empty(device="cpu")
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            layer.reset_parameters()
    return features


def _linear_key(layer: int) -> str:
    """Return the key of a linear layer's weight (1, C, 1, 1) in the lpips package's alex.pth."""
    return f"lin{layer}.model.1.weight"


class LPIPS(nn.Module):
    """Learned perceptual distance (N,) between images x and y (N, 3, H, W) in [-1, 1].

    Both images pass the scaling layer and AlexNet's convolutional layers. At each of the
    five ReLU outputs (C_l, H_l, W_l), the features are divided by their L2 norm over
    channels plus 1e-10. The squared difference of the normalised features is weighted per
    channel by the 1x1 linear layer w_l (no bias) and averaged over space. The distance is
    the sum over the five layers: d(x, y) = sum_l mean_{h,w} sum_c w_{l,c} (x_hat - y_hat)^2.
    The module stays in eval mode and its parameters do not require gradients. Gradients
    still flow to the inputs.
    """

    def __init__(self, features: nn.Sequential | None = None) -> None:
        """Use AlexNet's convolutional layers ``features`` up to the fifth ReLU, or new ones with random weights.

        The linear layers start with PyTorch's default initialisation, and ``from_files`` loads real ones.
        """
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        if features is None:
            features = _random_features()
        self.features = features[: _RELU_INDICES[-1] + 1]
        self.linear = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1, bias=False) for channels in CHANNELS)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, linear_weights: str | Path, backbone_weights: str | Path) -> LPIPS:
        """Build LPIPS from the lpips package's alex.pth and torchvision's AlexNet state dict.

        Raises InvalidWeightsError naming the file when either does not match.
        """
        # Built on the meta device, so the classifier's 58M parameters are never initialised.
        with torch.device("meta"):
            backbone = alexnet(weights=None)
        load_weights(backbone, backbone_weights, "AlexNet weights")

        model = cls(backbone.features)
        model._load_linear(linear_weights)
        return model

    def _load_linear(self, path: str | Path) -> None:
        """Copy lin0 ... lin4 weights (1, C, 1, 1) from the lpips package's file into ``self.linear``."""
        what = "LPIPS linear weights"
        state = read_state_dict(path, what)
        expected = {_linear_key(layer): (1, channels, 1, 1) for layer, channels in enumerate(CHANNELS)}

        missing = [key for key in expected if key not in state]
        unexpected = [key for key in state if key not in expected]
        mismatched = [
            f"{key} {tuple(state[key].shape)} (expected {shape})"
            for key, shape in expected.items()
            if key in state and tuple(state[key].shape) != shape
        ]
        if missing or unexpected or mismatched:
            problems = [
                f"{label} {', '.join(keys[:5])}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched))
                if keys
            ]
            raise InvalidWeightsError(
                f"{what} file {path} does not match LPIPS v0.1 for AlexNet: {'; '.join(problems)}. "
                f"Pass the lpips package's lpips/weights/v0.1/{LPIPS_WEIGHTS}"
            )

        for layer, conv in enumerate(self.linear):
            conv.weight.copy_(state[_linear_key(layer)])

    def train(self, mode: bool = True) -> LPIPS:
        """Keep eval mode, because LPIPS is a fixed metric."""
        return super().train(False)

    def _activations(self, images: Tensor) -> list[Tensor]:
        """Return the five unit-normalised ReLU outputs (N, C_l, H_l, W_l) of scaled images."""
        x = (images - self.shift) / self.scale
        activations = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _RELU_INDICES:
                norm = x.square().sum(1, keepdim=True).sqrt()
                activations.append(x / (norm + _EPSILON))
        return activations

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Return LPIPS distances (N,) between x and y (N, 3, H, W) in [-1, 1]."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects x and y of one shape (N, 3, H, W), got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(
                f"LPIPS got images of size {tuple(x.shape[-2:])}; AlexNet needs sides of at least {MIN_SIDE} pixels"
            )

        dtype = self.shift.dtype
        distance = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
        pairs = zip(self._activations(x.to(dtype)), self._activations(y.to(dtype)))
        for conv, (features_x, features_y) in zip(self.linear, pairs):
            distance = distance + conv((features_x - features_y).square()).mean((1, 2, 3))
        return distance
