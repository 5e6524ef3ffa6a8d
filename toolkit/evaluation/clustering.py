"""Scores of a clustering against ground-truth labels: accuracy under the best matching, and NMI.

GM-DRIT's q(y|x) assigns each image to a mixture component. Comparing the argmax component
with the domain labels shows whether the components separate the domains.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _assign_rows(cost: np.ndarray) -> np.ndarray:
    """Return, for a cost matrix (R, C) with R <= C, the column (R,) assigned to each row at minimum total cost.

    Shortest augmenting paths with dual potentials (the Hungarian method in the form of
    Jonker & Volgenant): rows are added one at a time, and each addition runs a
    Dijkstra-like search over reduced costs cost[i, j] - u[i] - v[j] >= 0 until it reaches
    a free column, then flips the matching along that path. O(R^2 C).
    """
    rows, columns = cost.shape
    row_potential = np.zeros(rows)
    column_potential = np.zeros(columns)
    # owner[j] is the row matched to column j, or -1.
    owner = np.full(columns, -1)

    for new_row in range(rows):
        # The search tree grows from new_row. distance[j] is the smallest reduced cost of a path
        # from new_row that ends in column j, and parent[j] is the column visited before j on it.
        distance = np.full(columns, np.inf)
        parent = np.full(columns, -1)
        visited = np.zeros(columns, dtype=bool)
        visited_rows = [new_row]
        row, previous = new_row, -1

        while True:
            reduced = cost[row] - row_potential[row] - column_potential
            shorter = ~visited & (reduced < distance)
            distance[shorter] = reduced[shorter]
            parent[shorter] = previous

            candidates = np.where(visited, np.inf, distance)
            column = int(candidates.argmin())
            delta = candidates[column]

            # Shift potentials so that every edge of the tree stays tight and the others stay >= 0.
            row_potential[visited_rows] += delta
            column_potential[visited] -= delta
            distance[~visited] -= delta

            visited[column] = True
            if owner[column] < 0:
                break
            row, previous = int(owner[column]), column
            visited_rows.append(row)

        # Flip the matching along the path from the free column back to new_row.
        while column >= 0:
            before = parent[column]
            owner[column] = owner[before] if before >= 0 else new_row
            column = before

    assignment = np.empty(rows, dtype=np.int64)
    matched = owner >= 0
    assignment[owner[matched]] = np.nonzero(matched)[0]
    return assignment


def linear_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Solve the minimum-cost one-to-one assignment of min(R, C) rows to columns of cost (R, C).

    Returns LongTensors ``rows`` and ``cols`` of length min(R, C), with ``rows`` ascending,
    such that cost[rows, cols].sum() is minimal. Rectangular matrices are allowed. The cost
    must be finite.
    """
    if cost.dim() != 2:
        raise ValueError(f"linear_assignment expects a cost matrix (R, C), got shape {tuple(cost.shape)}")
    matrix = cost.detach().cpu().double().numpy()
    if not np.isfinite(matrix).all():
        raise ValueError("linear_assignment got a cost matrix with NaN or infinite entries; pass finite costs")

    transposed = matrix.shape[0] > matrix.shape[1]
    if transposed:
        matrix = matrix.T
    if matrix.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()

    first = np.arange(matrix.shape[0])
    second = _assign_rows(matrix)
    if transposed:
        order = np.argsort(second)
        first, second = second[order], first[order]
    return torch.from_numpy(first.astype(np.int64)), torch.from_numpy(second.astype(np.int64))


def _contingency(predicted: Tensor, labels: Tensor) -> Tensor:
    """Return the counts (clusters, classes) of items per predicted cluster and label, in float64."""
    if predicted.dim() != 1 or predicted.shape != labels.shape:
        raise ValueError(
            f"expected predicted and labels of one shape (N,), got {tuple(predicted.shape)} and {tuple(labels.shape)}"
        )
    if predicted.numel() == 0:
        raise ValueError("got no items; pass at least one predicted cluster and label")

    _, cluster_index = torch.unique(predicted.cpu(), return_inverse=True)
    _, label_index = torch.unique(labels.cpu(), return_inverse=True)
    clusters = int(cluster_index.max()) + 1
    classes = int(label_index.max()) + 1
    flat = torch.bincount(cluster_index * classes + label_index, minlength=clusters * classes)
    return flat.view(clusters, classes).double()


def clustering_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Return the share of items (N,) whose cluster maps to their label under the best one-to-one matching.

    The matching maximises the matched count over the contingency table. When clusters
    and labels differ in number, the surplus clusters or labels stay unmatched and their
    items count as errors.
    """
    table = _contingency(predicted, labels)
    rows, cols = linear_assignment(-table)
    return float(table[rows, cols].sum() / predicted.numel())


def _entropy(counts: Tensor) -> Tensor:
    shares = counts[counts > 0] / counts.sum()
    return -(shares * shares.log()).sum()


def normalized_mutual_information(predicted: Tensor, labels: Tensor) -> float:
    """Return NMI = I(U; V) / ((H(U) + H(V)) / 2) between a clustering U and labels V, both (N,).

    The value lies in [0, 1] and does not depend on the log base. When both partitions have
    a single group, they are identical and the result is 1.0. When only one of them has a
    single group, I(U; V) = 0 and the result is 0.0.
    """
    table = _contingency(predicted, labels)
    cluster_entropy = _entropy(table.sum(1))
    label_entropy = _entropy(table.sum(0))
    if table.shape == (1, 1):
        return 1.0

    joint = table / table.sum()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    occupied = joint > 0
    mutual_information = (joint[occupied] * (joint[occupied] / outer[occupied]).log()).sum()
    return float(mutual_information / ((cluster_entropy + label_entropy) / 2))
