"""Runs conditioned on k-means clusters (``data.labels = clusters``; docs/math.md#cluster-conditional-models):
the clusters found in the training data, what a run keeps of them, the stratified draw of a sample's
cluster, and the distances that pick the nearest one. ``train`` labels the data with them; ``Run``
samples, scores and inpaints the mixture with them.
"""

from __future__ import annotations

import math

import torch

from ..keyed import KeyedNoise
from ..utils import derive_seed
from .config import ConfigError

__all__ = ["cluster_distances", "cluster_labels", "cluster_state", "draw_clusters"]

INVERSE_GOLDEN_RATIO = (math.sqrt(5) - 1) / 2  # the Weyl sequence frac(i / phi) of draw_clusters


def cluster_labels(z: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The k-means cluster (``[N]`` int64, ``0 .. k - 1``) of each example of ``z`` (model units, flattened),
    seeded by ``seed``: the labels of ``data.labels = clusters`` (docs/math.md#cluster-conditional-models)."""
    from sklearn.cluster import KMeans

    if z.shape[0] < k:
        raise ConfigError(f"model.num_classes = {k} clusters need at least {k} examples, got {z.shape[0]}")
    flat = z.reshape(z.shape[0], -1).double().cpu().numpy()
    labels = KMeans(k, n_init=4, random_state=seed).fit(flat).labels_
    return torch.from_numpy(labels).to(torch.int64)


def cluster_state(z: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """What a clustered run keeps of its clusters: each one's centroid in model units (the mean of its
    examples, flattened, ``[k, D]``) and its share of the training data (``[k]``, float64)."""
    flat, labels = z.reshape(z.shape[0], -1).double().cpu(), labels.cpu()
    counts = torch.bincount(labels, minlength=k).double()
    sums = torch.zeros(k, flat.shape[1], dtype=torch.float64).index_add_(0, labels, flat)
    return {"centroids": (sums / counts.clamp_min(1)[:, None]).float(), "weights": counts / counts.sum()}


def draw_clusters(weights: torch.Tensor, seed: int, rows: torch.Tensor) -> torch.Tensor:
    """The cluster of each sample ``rows`` (global indices): the one whose interval of the cumulative
    ``weights`` holds ``u_i = frac(u_0 + i / phi)`` (phi the golden ratio; ``u_0`` uniform, keyed by
    ``seed``). Each ``u_i`` is uniform, so each sample's cluster is drawn by the weights, and the sequence
    is stratified: any ``n`` consecutive samples hold each cluster ``n w_k`` times up to ``O(log n)``,
    where independent draws would miss by ``sqrt(n w_k)``. Keyed by ``(seed, row)`` alone, not by the
    batch."""
    u0 = KeyedNoise(derive_seed(seed, "cluster", 0), torch.zeros(1, dtype=torch.int64)).rand(
        (1,), dtype=torch.float64
    )
    u = torch.frac(u0.to(rows.device) + rows.to(torch.float64) * INVERSE_GOLDEN_RATIO)
    cdf = weights.to(rows.device, torch.float64).cumsum(0)
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.numel() - 1)


def cluster_distances(
    centroids: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``[N, k]`` mean squared differences of each example of ``z`` to each centroid (``[k, D]``), over
    the entries ``mask`` observes (True; all without a mask)."""
    flat = z.reshape(z.shape[0], -1).float()
    centroids = centroids.to(flat)
    seen = torch.ones_like(flat) if mask is None else mask.expand(z.shape).reshape(flat.shape).to(flat)
    # sum over observed entries of (z - c)^2 = sum(seen z^2) - 2 (seen z) . c + seen . c^2
    d2 = (seen * flat.square()).sum(1, keepdim=True) - 2 * (seen * flat) @ centroids.T
    return (d2 + seen @ centroids.square().T) / seen.sum(1, keepdim=True).clamp_min(1)
