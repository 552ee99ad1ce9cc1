"""The data's Gaussian, and the probability-flow ODE solved exactly for it: ``sample_fast``'s Gaussian start.

While the noise dwarfs the data (early in sampling, ``t`` near 1), ``p_t`` is close to the Gaussian with
the data's mean ``μ`` and covariance ``Σ`` pushed through the SDE, ``N(m_t μ, m_t² Σ + std_t² I)``, and
the probability-flow ODE of that Gaussian has a closed-form solution: in the eigenbasis of ``Σ`` each
coordinate of ``x_t - m_t μ`` scales as ``sqrt(m_t² λ + std_t²)`` (docs/math.md#the-gaussian-start).
Solving that stretch in closed form costs no score evaluation, so a sampler with a budget of ``B``
evaluations spends all of them where the data's shape matters (Wang & Vastola 2023 show the early
phase is this linear, Gaussian one). ``gaussian_start`` picks where to hand over: the time at which the
data's largest variance reaches ``snr`` times the noise's. Only ``sde.marginal`` is used, so VE, VP and
sub-VP share the code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .distributions import gaussian_log_density
from .sde import SDE

__all__ = [
    "FULL_COVARIANCE_MAX_DIM",
    "STACK_MAX_ENTRIES",
    "DataMoments",
    "component_log_probs",
    "component_moments",
    "data_moments",
    "gaussian_flow",
    "gaussian_start",
]

# data_moments keeps the full covariance up to this many dimensions (a 1024 x 1024 matrix is 8 MB in
# float64) and the per-coordinate variances above it: the flow is then that of the diagonal Gaussian.
FULL_COVARIANCE_MAX_DIM = 1024
# component_moments keeps full covariances while the stack holds at most this many numbers (32 MB in
# float64: 40 clusters of 64 pixels need 164k), the diagonals above.
STACK_MAX_ENTRIES = 2**22


class DataMoments(NamedTuple):
    """The data's mean ``[D]`` and covariance, ``[D, D]`` or its diagonal ``[D]`` (float64, flattened
    coordinates); or a stack of ``k`` such Gaussians, one per class or cluster (``[k, D]`` and
    ``[k, D, D]`` or ``[k, D]``: ``component_moments``)."""

    mean: torch.Tensor
    cov: torch.Tensor

    @property
    def stacked(self) -> bool:
        return self.mean.ndim == 2

    def eigen(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The covariance's eigenvalues (clamped at 0) and eigenvectors (None for a diagonal one)."""
        if self.cov.ndim == self.mean.ndim:
            return self.cov.clamp_min(0), None
        values, vectors = torch.linalg.eigh(self.cov)
        return values.clamp_min(0), vectors

    def component(self, k: int) -> DataMoments:
        """The ``k``-th Gaussian of a stack."""
        return DataMoments(self.mean[k], self.cov[k])

    def plus_uniform(self, width: float) -> DataMoments:
        """The moments of ``x + width u`` with ``u ~ U[0, 1)`` in every coordinate, independent of ``x``
        (dequantisation): the mean moves by ``width / 2`` and each variance grows by ``width² / 12``."""
        if self.cov.ndim == self.mean.ndim:
            return DataMoments(self.mean + width / 2, self.cov + width**2 / 12)
        eye = torch.eye(self.mean.shape[-1], dtype=self.cov.dtype)
        return DataMoments(self.mean + width / 2, self.cov + width**2 / 12 * eye)


def data_moments(x: torch.Tensor, full_max_dim: int = FULL_COVARIANCE_MAX_DIM) -> DataMoments:
    """The mean and covariance (float64, on the CPU) of the examples ``x`` (``[N, ...]``, flattened): the full
    covariance up to ``full_max_dim`` coordinates, the per-coordinate variances above."""
    flat = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)
    if flat.shape[0] < 2:
        raise ValueError(f"the moments of data need at least 2 examples, got {flat.shape[0]}")
    mean = flat.mean(0)
    centred = flat - mean
    if flat.shape[1] > full_max_dim:
        return DataMoments(mean, centred.square().sum(0) / (flat.shape[0] - 1))
    return DataMoments(mean, centred.T @ centred / (flat.shape[0] - 1))


def component_moments(
    x: torch.Tensor, labels: torch.Tensor, k: int, full_max_dim: int | None = None
) -> DataMoments:
    """One Gaussian per class or cluster ``0 .. k - 1`` of the examples ``x`` (``[N, ...]``, flattened;
    ``labels`` ``[N]``): each one's mean, and its covariance shrunk toward the pooled within-class
    covariance ``W`` as a normal-inverse-Wishart prior with ``D`` pseudo-examples would,
    ``(S_k + D W) / (n_k + D)`` (``S_k`` the scatter of its ``n_k`` examples), so that a class of fewer
    examples than dimensions still has a full-rank covariance (docs/math.md#the-gaussian-start). Full
    covariances up to ``full_max_dim`` coordinates (default: ``FULL_COVARIANCE_MAX_DIM``, and no more
    than ``k`` full matrices of ``STACK_MAX_ENTRIES`` numbers in all hold), the diagonals above. A class
    without examples gets the mean of all and the pooled covariance."""
    if full_max_dim is None:
        full_max_dim = min(FULL_COVARIANCE_MAX_DIM, math.isqrt(STACK_MAX_ENTRIES // max(k, 1)))
    flat = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)
    labels = labels.detach().cpu()
    if flat.shape[0] <= k:
        raise ValueError(
            f"{k} classes need more than {k} examples for their covariances, got {flat.shape[0]}"
        )
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    sums = torch.zeros(k, flat.shape[1], dtype=torch.float64).index_add_(0, labels, flat)
    means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], flat.mean(0))
    centred = flat - means[labels]
    dim = flat.shape[1]
    if dim > full_max_dim:
        scatter = torch.zeros(k, dim, dtype=torch.float64).index_add_(0, labels, centred.square())
    else:
        scatter = torch.stack([centred[labels == j].T @ centred[labels == j] for j in range(k)])
    pooled = scatter.sum(0) / (flat.shape[0] - k)
    shape = (k,) + (1,) * (scatter.ndim - 1)
    return DataMoments(means, (scatter + dim * pooled) / (counts + dim).reshape(shape))


def _marginal(sde: SDE, t: float) -> tuple[float, float]:
    scale, std = sde.marginal(torch.tensor(float(t), dtype=torch.float64))
    return float(scale), float(std)


def gaussian_flow(
    sde: SDE,
    x: torch.Tensor,
    t_from: float,
    t_to: float,
    moments: DataMoments,
    components: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` at ``t_from`` carried to ``t_to`` along the probability-flow ODE of the data's Gaussian (exact for
    Gaussian data): ``x_to = m_to μ + (C_to)^{1/2} (C_from)^{-1/2} (x - m_from μ)``, ``C_t = m_t² Σ + std_t² I``
    (docs/math.md#the-gaussian-start). No score is evaluated. With a stack of Gaussians, ``components``
    (one index for every row, or ``[N]``) names each row's."""
    if moments.stacked:
        if components is None:
            raise ValueError("a stack of Gaussians needs components: the index of each row's Gaussian")
        which = torch.as_tensor(components, device=x.device).expand(x.shape[0])
        out = torch.empty_like(x)
        for k in which.unique().tolist():
            rows = which == k
            out[rows] = gaussian_flow(sde, x[rows], t_from, t_to, moments.component(k))
        return out
    mean = moments.mean.to(x.device, torch.float64)
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    if flat.shape[1] != mean.numel():
        raise ValueError(f"the moments are of {mean.numel()} coordinates, the data have {flat.shape[1]}")
    (m_from, s_from), (m_to, s_to) = _marginal(sde, t_from), _marginal(sde, t_to)
    values, vectors = moments.eigen()
    values = values.to(x.device)
    stretch = torch.sqrt((m_to**2 * values + s_to**2) / (m_from**2 * values + s_from**2))
    centred = flat - m_from * mean
    if vectors is None:
        moved = centred * stretch
    else:
        vectors = vectors.to(x.device)
        moved = ((centred @ vectors) * stretch) @ vectors.T
    return (m_to * mean + moved).reshape(x.shape).to(x.dtype)


def gaussian_start(sde: SDE, moments: DataMoments, snr: float, t_min: float = 1e-3) -> float:
    """The time at which the data's largest variance, scaled by ``m_t²``, is ``snr`` times the noise's
    ``std_t²`` (the largest of any Gaussian of a stack): where ``sample_fast`` hands over from
    ``gaussian_flow`` to the score. 1 when the ratio
    already reaches ``snr`` at ``t = 1``; never below ``t_min``. Found by bisection (the ratio falls
    with ``t`` for every SDE here)."""
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    top = float(moments.eigen()[0].max())

    def ratio(t: float) -> float:
        scale, std = _marginal(sde, t)
        return scale**2 * top / std**2

    if ratio(1.0) >= snr:
        return 1.0
    if ratio(t_min) <= snr:
        return t_min
    lo, hi = t_min, 1.0  # ratio(lo) > snr > ratio(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) > snr else (lo, mid)
    return hi


def component_log_probs(
    moments: DataMoments, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``[N, k]``: the log-density of each example of ``x`` (``[N, ...]``, flattened) under each Gaussian of
    the stack ``moments``, of the entries ``mask`` observes (True; all without a mask): the Gaussian's
    marginal on them, its mean and covariance restricted to those entries. Rows that observe the same
    entries share one Cholesky factor per Gaussian. A row that observes nothing scores 0 everywhere."""
    if not moments.stacked:
        raise ValueError("component_log_probs needs a stack of Gaussians (component_moments)")
    flat = x.reshape(x.shape[0], -1).to("cpu", torch.float64)
    seen = (
        torch.ones_like(flat, dtype=torch.bool)
        if mask is None
        else torch.as_tensor(mask).to("cpu", torch.bool).expand(x.shape).reshape(flat.shape)
    )
    out = torch.zeros(flat.shape[0], moments.mean.shape[0], dtype=torch.float64)
    patterns, which = torch.unique(seen, dim=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        rows, idx = which == p, pattern.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        diff = flat[rows][:, None, idx] - moments.mean[:, idx]  # [n, k, d]
        if moments.cov.ndim == 2:  # diagonals
            var = moments.cov[:, idx].clamp_min(1e-12)
            quad, log_det = (diff.square() / var).sum(-1), var.log().sum(-1)
        else:
            cov = moments.cov[:, idx][:, :, idx]  # [k, d, d]
            # a coordinate constant in the training data (an image's always-blank corner) has no variance:
            # a ridge of 1e-9 of the mean variance keeps the factor defined
            ridge = 1e-9 * torch.diagonal(cov, dim1=1, dim2=2).mean(-1) + 1e-12
            chol = torch.linalg.cholesky(cov + ridge[:, None, None] * torch.eye(idx.numel(), dtype=cov.dtype))
            solved = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)  # [k, d, n]
            quad = solved.square().sum(1).T
            log_det = 2 * torch.diagonal(chol, dim1=1, dim2=2).log().sum(-1)
        out[rows] = gaussian_log_density(quad, log_det, idx.numel())
    return out
