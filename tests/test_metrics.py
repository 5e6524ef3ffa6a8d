"""Metric functions of toolkit.evaluation checked against independent NumPy/SciPy computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.spatial.distance
import scipy.stats
import torch

from toolkit.evaluation.clustering import clustering_accuracy, linear_assignment, normalized_mutual_information
from toolkit.evaluation.diversity import mean_pairwise_distance, mean_pairwise_l1
from toolkit.evaluation.frechet import fid, frechet_distance, gaussian_statistics, kid
from toolkit.evaluation.ndb import kmeans, ndb_jsd, pixel_features


def _mixture(count: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Draw count points (count, 8) from a fixed mixture of 4 Gaussians, optionally shifted along every axis."""
    means = torch.tensor(np.random.default_rng(1234).normal(0.0, 3.0, size=(4, 8)), dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    components = torch.randint(4, (count,), generator=generator)
    return means[components] + torch.randn(count, 8, generator=generator) + shift


# NDB and JSD


def test_pixel_features_shape_and_values():
    images = torch.rand(2, 3, 64, 48) * 2 - 1
    features = pixel_features(images, size=16)
    assert features.shape == (2, 3 * 16 * 16)
    constant = torch.full((1, 3, 40, 40), 0.25)
    assert torch.allclose(pixel_features(constant, size=8), torch.full((1, 192), 0.25))


def test_kmeans_is_deterministic_for_seed():
    points = _mixture(500, seed=0)
    assert torch.equal(kmeans(points, 10, seed=3), kmeans(points, 10, seed=3))


def test_kmeans_finds_separated_clusters():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    generator = torch.Generator().manual_seed(0)
    points = centers.repeat_interleave(100, 0) + 0.1 * torch.randn(300, 2, generator=generator)
    centroids = kmeans(points, 3, seed=0)
    assert centroids.shape == (3, 2)
    # Each true center has a centroid within 0.05, so the three centroids cover the three clusters.
    assert torch.cdist(centers, centroids).min(1).values.max() < 0.05


def test_kmeans_fewer_points_than_clusters_names_values():
    with pytest.raises(ValueError, match="N=3 points for k=5"):
        kmeans(torch.randn(3, 2), 5)


def test_ndb_same_distribution_is_small():
    result = ndb_jsd(_mixture(2000, seed=1), _mixture(2000, seed=2), k=50)
    assert result.k == 50
    assert result.ndb_fraction <= 0.15
    assert result.jsd < 0.01
    assert math.isclose(float(result.real_proportions.sum()), 1.0)
    assert math.isclose(float(result.generated_proportions.sum()), 1.0)


def test_ndb_shifted_distribution_is_large():
    same = ndb_jsd(_mixture(2000, seed=1), _mixture(2000, seed=2), k=50)
    shifted = ndb_jsd(_mixture(2000, seed=1), _mixture(2000, seed=2, shift=1.0), k=50)
    assert shifted.ndb_fraction >= 0.5
    assert shifted.jsd > 0.05
    assert shifted.jsd > 5 * same.jsd
    assert shifted.jsd <= math.log(2)


def test_ndb_matches_numpy_computation():
    real = _mixture(600, seed=5)
    generated = _mixture(400, seed=6, shift=0.4)
    k, alpha = 12, 0.05
    result = ndb_jsd(real, generated, k=k, alpha=alpha, seed=7)

    centroids = kmeans(real, k, seed=7).double().numpy()
    real_np, generated_np = real.double().numpy(), generated.double().numpy()
    real_bins = scipy.spatial.distance.cdist(real_np, centroids, "sqeuclidean").argmin(1)
    generated_bins = scipy.spatial.distance.cdist(generated_np, centroids, "sqeuclidean").argmin(1)
    real_counts = np.bincount(real_bins, minlength=k)
    generated_counts = np.bincount(generated_bins, minlength=k)
    p = real_counts / len(real_np)
    q = generated_counts / len(generated_np)
    pooled = (real_counts + generated_counts) / (len(real_np) + len(generated_np))
    standard_error = np.sqrt(pooled * (1 - pooled) * (1 / len(real_np) + 1 / len(generated_np)))
    z = (p - q) / standard_error
    different = 2 * scipy.stats.norm.sf(np.abs(z)) < alpha
    jsd = scipy.spatial.distance.jensenshannon(p, q) ** 2

    np.testing.assert_allclose(result.real_proportions.numpy(), p)
    np.testing.assert_allclose(result.generated_proportions.numpy(), q)
    np.testing.assert_array_equal(result.different.numpy(), different)
    assert result.ndb == int(different.sum())
    assert result.ndb_fraction == pytest.approx(different.sum() / k)
    assert result.jsd == pytest.approx(jsd, rel=1e-9)


# FID and KID


def _features(seed: int, count: int = 200, size: int = 64, scale: float = 1.0) -> torch.Tensor:
    generator = np.random.default_rng(seed)
    mixing = generator.normal(size=(size, size)) / math.sqrt(size)
    data = generator.normal(size=(count, size)) @ mixing * scale + generator.normal(size=size)
    return torch.from_numpy(data)


def test_gaussian_statistics_match_numpy():
    features = _features(0)
    mean, covariance = gaussian_statistics(features.float())
    assert mean.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), features.numpy().mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(covariance.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-5, atol=1e-6)


def test_frechet_distance_matches_scipy_sqrtm():
    first, second = _features(1).numpy(), _features(2, scale=1.5).numpy()
    mean1, mean2 = first.mean(0), second.mean(0)
    cov1, cov2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(cov1 @ cov2).real
    expected = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root)

    value = frechet_distance(*(torch.from_numpy(array) for array in (mean1, cov1, mean2, cov2)))
    assert value == pytest.approx(expected, rel=1e-6)
    assert fid(torch.from_numpy(first), torch.from_numpy(second)) == pytest.approx(expected, rel=1e-6)


def test_fid_identical_sets_is_zero():
    features = _features(3)
    assert abs(fid(features, features)) < 1e-6


def test_frechet_distance_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="cov2 has shape"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(4))


def _numpy_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written with explicit off-diagonal masks."""
    n, d = x.shape
    off_diagonal = ~np.eye(n, dtype=bool)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return kxx[off_diagonal].mean() + kyy[off_diagonal].mean() - 2 * kxy.mean()


def test_kid_whole_set_matches_numpy():
    first, second = _features(4, count=150, size=16), _features(5, count=150, size=16, scale=1.3)
    mean, deviation = kid(first, second, subsets=3, subset_size=1000)
    assert mean == pytest.approx(_numpy_mmd2(first.numpy(), second.numpy()), rel=1e-9)
    assert deviation == pytest.approx(0.0, abs=1e-9)


def test_kid_subsets_match_numpy():
    first, second = _features(6, count=120, size=16), _features(7, count=90, size=16, scale=1.3)
    generator = torch.Generator().manual_seed(11)
    estimates = []
    for _ in range(4):
        rows1 = torch.randperm(120, generator=generator)[:50].numpy()
        rows2 = torch.randperm(90, generator=generator)[:50].numpy()
        estimates.append(_numpy_mmd2(first.numpy()[rows1], second.numpy()[rows2]))

    mean, deviation = kid(first, second, subsets=4, subset_size=50, seed=11)
    assert mean == pytest.approx(np.mean(estimates), rel=1e-9)
    assert deviation == pytest.approx(np.std(estimates), rel=1e-9)


def test_kid_needs_two_rows():
    with pytest.raises(ValueError, match="features2 has 1 rows"):
        kid(torch.randn(5, 4), torch.randn(1, 4))


# Clustering scores


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4), (1, 5), (12, 12)])
def test_linear_assignment_matches_scipy(shape):
    generator = np.random.default_rng(shape[0] * 100 + shape[1])
    for trial in range(10):
        if trial % 2:
            cost = generator.normal(size=shape)
        else:
            cost = generator.integers(0, 3, size=shape).astype(float)
        rows, cols = linear_assignment(torch.from_numpy(cost))
        expected_rows, expected_cols = scipy.optimize.linear_sum_assignment(cost)

        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(rows)
        assert len(set(cols.tolist())) == len(cols)
        assert torch.equal(rows, rows.sort().values)
        assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(cost[expected_rows, expected_cols].sum())


def test_linear_assignment_rejects_infinite_cost():
    with pytest.raises(ValueError, match="NaN or infinite"):
        linear_assignment(torch.tensor([[1.0, math.inf], [0.0, 2.0]]))


def _brute_force_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    clusters, classes = np.unique(predicted), np.unique(labels)
    best = 0
    if len(clusters) <= len(classes):
        for chosen in itertools.permutations(classes, len(clusters)):
            mapping = dict(zip(clusters, chosen))
            best = max(best, sum(mapping[c] == label for c, label in zip(predicted, labels)))
    else:
        for chosen in itertools.permutations(clusters, len(classes)):
            mapping = dict(zip(chosen, classes))
            best = max(best, sum(mapping.get(c) == label for c, label in zip(predicted, labels)))
    return best / len(labels)


@pytest.mark.parametrize(("clusters", "classes"), [(3, 3), (2, 4), (5, 3)])
def test_clustering_accuracy_matches_brute_force(clusters, classes):
    generator = np.random.default_rng(clusters * 10 + classes)
    labels = generator.integers(0, classes, size=60)
    predicted = np.where(generator.random(60) < 0.6, labels % clusters, generator.integers(0, clusters, size=60))
    expected = _brute_force_accuracy(predicted, labels)
    assert clustering_accuracy(torch.from_numpy(predicted), torch.from_numpy(labels)) == pytest.approx(expected)


def _numpy_nmi(predicted: np.ndarray, labels: np.ndarray) -> float:
    total = len(labels)
    clusters, classes = np.unique(predicted), np.unique(labels)
    joint = np.array([[np.sum((predicted == c) & (labels == k)) for k in classes] for c in clusters]) / total
    p, q = joint.sum(1), joint.sum(0)
    mutual = sum(
        joint[i, j] * math.log(joint[i, j] / (p[i] * q[j]))
        for i in range(len(clusters))
        for j in range(len(classes))
        if joint[i, j] > 0
    )
    entropy_p = -sum(value * math.log(value) for value in p)
    entropy_q = -sum(value * math.log(value) for value in q)
    return mutual / ((entropy_p + entropy_q) / 2)


def test_nmi_matches_numpy():
    generator = np.random.default_rng(3)
    labels = generator.integers(0, 3, size=80)
    predicted = np.where(generator.random(80) < 0.7, labels, generator.integers(0, 4, size=80))
    expected = _numpy_nmi(predicted, labels)
    assert normalized_mutual_information(torch.from_numpy(predicted), torch.from_numpy(labels)) == pytest.approx(expected)


def test_relabelled_partition_scores_one():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([7, 7, 3, 3, 5, 5, 5])
    assert clustering_accuracy(predicted, labels) == 1.0
    assert normalized_mutual_information(predicted, labels) == pytest.approx(1.0)


def test_nmi_single_cluster_cases():
    assert normalized_mutual_information(torch.zeros(5), torch.zeros(5)) == 1.0
    assert normalized_mutual_information(torch.zeros(4), torch.tensor([0, 0, 1, 1])) == 0.0


def test_clustering_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        clustering_accuracy(torch.zeros(3), torch.zeros(4))


# Diversity


def test_mean_pairwise_l1_matches_pair_loop():
    samples = torch.rand(5, 3, 8, 8) * 2 - 1
    pairs = [
        (samples[i] - samples[j]).abs().mean().item() / 2 for i, j in itertools.combinations(range(len(samples)), 2)
    ]
    assert len(pairs) == 10
    assert mean_pairwise_l1(samples) == pytest.approx(np.mean(pairs), rel=1e-6)


def test_mean_pairwise_distance_batches_pairs():
    samples = torch.rand(6, 3, 4, 4) * 2 - 1
    calls = []

    def mean_squared(x, y):
        calls.append(len(x))
        return (x - y).square().mean((1, 2, 3))

    pairs = [(samples[i] - samples[j]).square().mean().item() for i, j in itertools.combinations(range(6), 2)]
    assert mean_pairwise_distance(samples, mean_squared, batch_size=4) == pytest.approx(np.mean(pairs), rel=1e-6)
    assert calls == [4, 4, 4, 3]


def test_diversity_needs_two_samples():
    with pytest.raises(ValueError, match="S=1 samples"):
        mean_pairwise_l1(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="S=1 samples"):
        mean_pairwise_distance(torch.zeros(1, 3, 4, 4), lambda x, y: x.sum((1, 2, 3)))
