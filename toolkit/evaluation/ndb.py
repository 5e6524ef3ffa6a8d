"""Number of statistically different bins (NDB) and Jensen-Shannon divergence (JSD).

Richardson & Weiss, "On GANs and GMMs", NeurIPS 2018: cluster real samples with k-means,
assign real and generated samples to the nearest centroid, and compare the two bin
histograms. A generator that drops or over-produces modes leaves bins whose proportions
differ significantly from the real ones.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import Tensor
from torch.nn import functional as F

logger = logging.getLogger(__name__)


def pixel_features(images: Tensor, size: int = 32) -> Tensor:
    """Resize images (N, 3, H, W) to size x size with antialiased bilinear filtering and flatten to (N, 3*size*size)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"pixel_features expects images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if size < 1:
        raise ValueError(f"pixel_features got size={size}; pass a positive side length such as 32")

    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.flatten(1)


def _squared_distances(points: Tensor, centroids: Tensor) -> Tensor:
    """Return squared Euclidean distances (N, K) between points (N, D) and centroids (K, D)."""
    distances = (
        points.square().sum(1, keepdim=True)
        - 2.0 * points @ centroids.T
        + centroids.square().sum(1).unsqueeze(0)
    )
    # The expanded form can round to small negative values for coincident vectors.
    return distances.clamp_min(0.0)


def _nearest(points: Tensor, centroids: Tensor) -> Tensor:
    """Return the index (N,) of the nearest centroid for each point, computed in float64."""
    return _squared_distances(points.double(), centroids.double()).argmin(1)


def _kmeans_plus_plus(points: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Pick k initial centroids from points (N, D): the first uniformly, each next with probability proportional to D(x)^2."""
    count = points.shape[0]
    chosen = [int(torch.randint(count, (1,), generator=generator, device=points.device))]
    closest = _squared_distances(points, points[chosen[0]].unsqueeze(0)).squeeze(1)

    for _ in range(1, k):
        total = closest.sum()
        if total > 0:
            index = int(torch.multinomial(closest / total, 1, generator=generator))
        else:
            # Every point coincides with a chosen centroid, so fall back to an unchosen point.
            unchosen = torch.ones(count, dtype=torch.bool, device=points.device)
            unchosen[chosen] = False
            candidates = unchosen.nonzero().squeeze(1)
            pick = int(torch.randint(len(candidates), (1,), generator=generator, device=points.device))
            index = int(candidates[pick])
        chosen.append(index)
        distance = _squared_distances(points, points[index].unsqueeze(0)).squeeze(1)
        closest = torch.minimum(closest, distance)

    return points[chosen].clone()


def kmeans(points: Tensor, k: int, seed: int = 0, iterations: int = 100) -> Tensor:
    """Cluster points (N, D) into k clusters and return the centroids (k, D) in the points' dtype.

    Initialisation is k-means++ drawn from a torch.Generator seeded with ``seed`` on the
    points' device. Lloyd steps then alternate nearest-centroid assignment and centroid
    means until no assignment changes, for at most ``iterations`` steps. A cluster that
    becomes empty keeps its previous centroid. All arithmetic is float64 and uses no atomic
    additions, so on the CPU a seed gives the same centroids on every run.
    """
    if points.dim() != 2:
        raise ValueError(f"kmeans expects points of shape (N, D), got {tuple(points.shape)}")
    if k < 1:
        raise ValueError(f"kmeans got k={k}; pass at least 1 cluster")
    if points.shape[0] < k:
        raise ValueError(f"kmeans got N={points.shape[0]} points for k={k} clusters; pass at least k points or lower k")

    data = points.double()
    generator = torch.Generator(device=data.device).manual_seed(seed)
    centroids = _kmeans_plus_plus(data, k, generator)
    assignments = _nearest(data, centroids)

    for step in range(iterations):
        # A one-hot product sums each cluster's points in a fixed order, unlike index_add_ on CUDA.
        membership = F.one_hot(assignments, k).to(data.dtype)
        counts = membership.sum(0)
        sums = membership.T @ data
        occupied = counts > 0
        centroids[occupied] = sums[occupied] / counts[occupied].unsqueeze(1)

        updated = _nearest(data, centroids)
        if torch.equal(updated, assignments):
            logger.debug("k-means converged after %d Lloyd steps", step + 1)
            break
        assignments = updated
    else:
        logger.info("k-means stopped after %d Lloyd steps before the assignments converged", iterations)

    return centroids.to(points.dtype)


@dataclasses.dataclass(frozen=True)
class NDBResult:
    """NDB and JSD of generated samples against real samples, with the per-bin data behind them.

    ``real_proportions`` and ``generated_proportions`` (k,) are the shares of each set per
    k-means bin. ``different`` (k,) marks the bins whose two-proportion z-test gives p < alpha.
    """

    ndb: int
    k: int
    ndb_fraction: float
    jsd: float
    real_proportions: Tensor
    generated_proportions: Tensor
    different: Tensor


def _two_proportion_p_values(real_counts: Tensor, real_total: int, generated_counts: Tensor, generated_total: int) -> Tensor:
    """Return two-sided p-values (k,) of the pooled two-proportion z-test for each bin.

    A bin that is empty in both sets has zero standard error and gets p = 1.
    """
    real_share = real_counts / real_total
    generated_share = generated_counts / generated_total
    pooled = (real_counts + generated_counts) / (real_total + generated_total)
    standard_error = torch.sqrt(pooled * (1 - pooled) * (1 / real_total + 1 / generated_total))

    z = torch.zeros_like(pooled)
    defined = standard_error > 0
    z[defined] = (real_share[defined] - generated_share[defined]) / standard_error[defined]
    # For a standard normal Z, P(|Z| >= |z|) = erfc(|z| / sqrt(2)).
    return torch.special.erfc(z.abs() / math.sqrt(2.0))


def jensen_shannon_divergence(p: Tensor, q: Tensor) -> float:
    """Return the JSD of two histograms (k,) with the natural log, so the value lies in [0, ln 2].

    JSD = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2, taking 0 log 0 = 0.
    """
    p = p.double()
    q = q.double()
    middle = (p + q) / 2

    def kl_to_middle(histogram: Tensor) -> Tensor:
        terms = torch.where(histogram > 0, histogram * torch.log(histogram / middle), torch.zeros_like(histogram))
        return terms.sum()

    return float((kl_to_middle(p) + kl_to_middle(q)) / 2)


def ndb_jsd(real: Tensor, generated: Tensor, k: int = 50, alpha: float = 0.05, seed: int = 0) -> NDBResult:
    """Compute NDB and JSD of generated features (M, D) against real features (N, D).

    k-means with ``k`` clusters and ``seed`` is fit on ``real``, and both sets are assigned
    to their nearest centroid. A bin counts as statistically different when the two-sided
    two-proportion z-test with pooled proportion gives p < ``alpha``. JSD compares the two
    bin histograms with the natural log, so it lies in [0, ln 2].
    """
    if real.dim() != 2 or generated.dim() != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(
            f"ndb_jsd expects real (N, D) and generated (M, D) with the same D, "
            f"got {tuple(real.shape)} and {tuple(generated.shape)}"
        )
    if generated.shape[0] == 0:
        raise ValueError("ndb_jsd got no generated samples; pass at least one row")
    if not 0 < alpha < 1:
        raise ValueError(f"ndb_jsd got alpha={alpha}; pass a significance level between 0 and 1, such as 0.05")

    centroids = kmeans(real, k, seed=seed)
    real_counts = torch.bincount(_nearest(real, centroids), minlength=k).double()
    generated_counts = torch.bincount(_nearest(generated.to(real.device), centroids), minlength=k).double()

    real_proportions = real_counts / real.shape[0]
    generated_proportions = generated_counts / generated.shape[0]
    p_values = _two_proportion_p_values(real_counts, real.shape[0], generated_counts, generated.shape[0])
    different = p_values < alpha
    ndb = int(different.sum())

    return NDBResult(
        ndb=ndb,
        k=k,
        ndb_fraction=ndb / k,
        jsd=jensen_shannon_divergence(real_proportions, generated_proportions),
        real_proportions=real_proportions,
        generated_proportions=generated_proportions,
        different=different,
    )
