"""Inception-v3 pool features (N, 2048) for FID and KID, from torchvision's architecture and a local weights file.

The usual weights are torchvision's ``Inception_V3_Weights.IMAGENET1K_V1`` (file
``inception_v3_google-0cc3c7bd.pth``), torchvision's port of the paper's ImageNet weights.
pytorch-fid and the original TTUR code use the weights of the 2015 TensorFlow graph
instead, so FID and KID from this module differ numerically from published values.
Compare them only with values computed by this toolkit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import Inception3, inception_v3

from toolkit.evaluation.weights import INCEPTION_WEIGHTS, load_weights

__all__ = ["FEATURE_SIZE", "INCEPTION_WEIGHTS", "InceptionFeatures"]

FEATURE_SIZE = 2048
INPUT_SIZE = 299

# torchvision's Inception3 blocks from the input to the global average pool, in order.
_BLOCKS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
    "avgpool",
)


def _build_network() -> Inception3:
    """Return torchvision's Inception-v3 with PyTorch's default initialisation and no input transform.

    aux_logits=True keeps the AuxLogits keys of the weights file loadable, and forward never runs that head.
    """
    return inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)


class InceptionFeatures(nn.Module):
    """Map images (N, 3, H, W) in [-1, 1] to Inception-v3 global-average-pool features (N, 2048).

    Images are resized to 299 x 299 with bilinear interpolation (align_corners=False, no
    antialiasing) and fed in unchanged otherwise. The Google weights expect inputs scaled
    as (x - 0.5) / 0.5 from [0, 1] pixels, which is the toolkit's [-1, 1] range. torchvision
    applies ``transform_input`` to convert ImageNet-normalised inputs into that range, so
    this module builds the network with ``transform_input=False``.
    The module stays in eval mode and its parameters do not require gradients.
    """

    def __init__(self, network: Inception3 | None = None) -> None:
        """Wrap a torchvision Inception3 built with ``transform_input=False``, or a new one with random weights."""
        super().__init__()
        if network is None:
            network = _build_network()
        if network.transform_input:
            raise ValueError(
                "InceptionFeatures expects an Inception3 built with transform_input=False, because inputs are already in [-1, 1]"
            )
        self.network = network
        self.network.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> InceptionFeatures:
        """Build the network and load torchvision's Inception-v3 state dict from ``path`` (see ``weights.find_weights``)."""
        # Parameters start on the meta device, so no time goes into a random initialisation
        # that the file replaces. load_weights assigns the file's tensors, which are on the CPU.
        with torch.device("meta"):
            network = _build_network()
        load_weights(network, path, "Inception-v3 weights")
        return cls(network)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Keep eval mode, because batch-norm statistics must stay those of the weights file."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Return pool features (N, 2048) of images (N, 3, H, W) in [-1, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"InceptionFeatures expects images of shape (N, 3, H, W), got {tuple(images.shape)}")

        x = images.to(self.network.fc.weight.dtype)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        for name in _BLOCKS:
            x = getattr(self.network, name)(x)
        return x.flatten(1)
