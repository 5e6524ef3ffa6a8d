"""Frechet distance (FID) and kernel inception distance (KID) between two feature sets.

FID: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", arXiv:1706.08500. KID: Binkowski et al., "Demystifying MMD GANs", ICLR 2018.
Both take features such as Inception-v3 pool features (see ``inception.py``); the
functions here work on any (N, D) features.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_features(features: Tensor, name: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"{name} has {features.shape[0]} rows; pass at least 2 feature vectors")


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Return the mean (D,) and the unbiased covariance (D, D), divided by N - 1, of features (N, D), in float64."""
    _check_features(features, "features")
    data = features.double()
    mean = data.mean(0)
    centered = data - mean
    covariance = centered.T @ centered / (data.shape[0] - 1)
    return mean, covariance


def _symmetric_sqrt(matrix: Tensor) -> Tensor:
    """Return the square root of a symmetric positive semi-definite matrix via eigh, with negative eigenvalues clamped to 0."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """Return the Frechet distance between N(mean1, cov1) and N(mean2, cov2), with means (D,) and covariances (D, D).

    d^2 = ||mean1 - mean2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2)).
    cov1 cov2 has the same eigenvalues as the symmetric matrix sqrt(cov1) cov2 sqrt(cov1),
    so the trace term is the sum of square roots of that matrix's eigenvalues (from eigh,
    clamped at 0). Everything runs in float64. Rounding can leave a result slightly below 0
    (about 1e-12 times the traces) for identical statistics, and the value is not clamped.
    """
    size = mean1.shape[0]
    expected = {"mean1": (size,), "cov1": (size, size), "mean2": (size,), "cov2": (size, size)}
    arguments = {"mean1": mean1, "cov1": cov1, "mean2": mean2, "cov2": cov2}
    for name, shape in expected.items():
        if tuple(arguments[name].shape) != shape:
            raise ValueError(
                f"frechet_distance expects means (D,) and covariances (D, D) with one D; "
                f"{name} has shape {tuple(arguments[name].shape)}, expected {shape}"
            )

    mean1, cov1, mean2, cov2 = (tensor.double() for tensor in (mean1, cov1, mean2, cov2))
    mean2 = mean2.to(mean1.device)
    cov1 = cov1.to(mean1.device)
    cov2 = cov2.to(mean1.device)

    sqrt_cov1 = _symmetric_sqrt(cov1)
    product = sqrt_cov1 @ cov2 @ sqrt_cov1
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = eigenvalues.clamp_min(0).sqrt().sum()

    distance = (mean1 - mean2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_sqrt
    return float(distance)


def fid(features1: Tensor, features2: Tensor) -> float:
    """Return the Frechet distance between Gaussians fit to features1 (N, D) and features2 (M, D)."""
    if features1.dim() == 2 and features2.dim() == 2 and features1.shape[1] != features2.shape[1]:
        raise ValueError(f"fid got features of sizes {features1.shape[1]} and {features2.shape[1]}; both sets need the same D")
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """Return k(x, y) = (x . y / D + 1)^3 for all row pairs of x (n, D) and y (m, D), shape (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _unbiased_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Return the unbiased MMD^2 estimate between x (n, D) and y (n, D) with the cubic polynomial kernel.

    The within-set means skip the diagonal: sum_{i != j} k(x_i, x_j) / (n (n - 1)).
    """
    n = x.shape[0]
    kernel_xx = _polynomial_kernel(x, x)
    kernel_yy = _polynomial_kernel(y, y)
    kernel_xy = _polynomial_kernel(x, y)
    within_x = (kernel_xx.sum() - kernel_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (kernel_yy.sum() - kernel_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * kernel_xy.mean()


def kid(
    features1: Tensor,
    features2: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the mean and standard deviation of the unbiased MMD^2 over random subsets of features1 (N, D) and features2 (M, D).

    The kernel is k(x, y) = (x . y / D + 1)^3. ``subset_size`` is clipped to min(N, M).
    For each subset, a CPU torch.Generator seeded with ``seed`` draws
    ``randperm(N)[:subset_size]`` from features1 and then ``randperm(M)[:subset_size]``
    from features2, so rows do not repeat within a subset but do across subsets. The
    standard deviation is the population one (divided by ``subsets``), so it is 0 for a
    single subset. Arithmetic is float64.
    """
    _check_features(features1, "features1")
    _check_features(features2, "features2")
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(f"kid got features of sizes {features1.shape[1]} and {features2.shape[1]}; both sets need the same D")
    if subsets < 1:
        raise ValueError(f"kid got subsets={subsets}; pass at least 1")
    if subset_size < 2:
        raise ValueError(f"kid got subset_size={subset_size}; the unbiased estimate needs at least 2 rows per subset")

    size = min(subset_size, features1.shape[0], features2.shape[0])
    first = features1.double()
    second = features2.double().to(first.device)
    generator = torch.Generator().manual_seed(seed)

    estimates = []
    for _ in range(subsets):
        rows1 = torch.randperm(first.shape[0], generator=generator)[:size].to(first.device)
        rows2 = torch.randperm(second.shape[0], generator=generator)[:size].to(first.device)
        estimates.append(_unbiased_mmd2(first[rows1], second[rows2]))

    values = torch.stack(estimates)
    return float(values.mean()), float(values.std(correction=0))
