"""Diversity of several outputs for one input: mean distance over all pairs of samples.

A multimodal translator should give different outputs for one content image and
different attribute codes. Higher mean pairwise LPIPS or L1 means more diverse outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _check_samples(samples: Tensor) -> None:
    if samples.dim() != 4 or samples.shape[1] != 3:
        raise ValueError(f"expected samples of shape (S, 3, H, W), got {tuple(samples.shape)}")
    if samples.shape[0] < 2:
        raise ValueError(f"got S={samples.shape[0]} samples; pairwise diversity needs at least 2 outputs per input")


def mean_pairwise_l1(samples: Tensor) -> float:
    """Return the mean over the S(S-1)/2 pairs of samples (S, 3, H, W) in [-1, 1] of their mean absolute difference.

    Each pair's difference is on the [0, 1] pixel scale, (a - b).abs().mean() / 2, so the result lies in [0, 1].
    """
    _check_samples(samples)
    flat = samples.detach().flatten(1).double()
    # cdist with p=1 sums |a - b| exactly, without the matrix-product shortcut used for p=2.
    distances = torch.cdist(flat, flat, p=1.0) / flat.shape[1] / 2
    first, second = torch.triu_indices(len(flat), len(flat), offset=1, device=flat.device)
    return float(distances[first, second].mean())


def mean_pairwise_distance(
    samples: Tensor,
    distance: Callable[[Tensor, Tensor], Tensor],
    batch_size: int = 64,
) -> float:
    """Return the mean of ``distance`` over the S(S-1)/2 pairs of samples (S, 3, H, W).

    ``distance(x, y)`` takes two batches (P, 3, H, W) and returns (P,) distances, as
    ``LPIPS`` does. Pairs are passed in batches of at most ``batch_size``, without gradients.
    """
    _check_samples(samples)
    if batch_size < 1:
        raise ValueError(f"mean_pairwise_distance got batch_size={batch_size}; pass at least 1")

    first, second = torch.triu_indices(len(samples), len(samples), offset=1, device=samples.device)
    values = []
    with torch.no_grad():
        for start in range(0, len(first), batch_size):
            rows = slice(start, start + batch_size)
            batch = distance(samples[first[rows]], samples[second[rows]])
            expected = len(first[rows])
            if tuple(batch.shape) != (expected,):
                raise ValueError(
                    f"distance returned shape {tuple(batch.shape)} for {expected} pairs; it must return one value per pair"
                )
            values.append(batch.double())
    return float(torch.cat(values).mean())
