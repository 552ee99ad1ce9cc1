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

import torch

from .distributions import Gaussian, GaussianMixture
from .sde import SDE

__all__ = [
    "FULL_COVARIANCE_MAX_DIM",
    "STACK_MAX_ENTRIES",
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
# A coordinate constant in the training data (an image's always-blank corner) has no variance: every
# variance grows by RIDGE times the mean variance, so that each Gaussian has a density.
RIDGE = 1e-9


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)


def _stack(cls: type[GaussianMixture], means, covs: torch.Tensor, weights) -> GaussianMixture:
    """The ``cls`` of ``covs`` (``[k, D, D]``, or their diagonals ``[k, D]``), each grown by the ridge."""
    diagonals = covs if covs.ndim == 2 else torch.diagonal(covs, dim1=1, dim2=2)
    ridge = RIDGE * diagonals.mean(1, keepdim=True) + 1e-12
    if covs.ndim == 2:
        return cls.diagonal(means, covs.clamp_min(0) + ridge, weights)
    variances, rotations = torch.linalg.eigh(covs)
    return cls.from_eigen(means, (weights / weights.sum()).log(), variances.clamp_min(0) + ridge, rotations)


def data_moments(x: torch.Tensor, full_max_dim: int = FULL_COVARIANCE_MAX_DIM) -> Gaussian:
    """The Gaussian of the examples ``x`` (``[N, ...]``, flattened; float64, on the CPU): their mean and
    covariance, full up to ``full_max_dim`` coordinates, diagonal above."""
    flat = _flat(x)
    if flat.shape[0] < 2:
        raise ValueError(f"the moments of data need at least 2 examples, got {flat.shape[0]}")
    mean = flat.mean(0)
    centred = flat - mean
    scatter = centred.square().sum(0) if flat.shape[1] > full_max_dim else centred.T @ centred
    return _stack(
        Gaussian, mean[None], scatter[None] / (flat.shape[0] - 1), torch.ones(1, dtype=torch.float64)
    )


def component_moments(
    x: torch.Tensor, labels: torch.Tensor, k: int, full_max_dim: int | None = None
) -> GaussianMixture:
    """One Gaussian per class or cluster ``0 .. k - 1`` of the examples ``x`` (``[N, ...]``, flattened;
    ``labels`` ``[N]``), weighted by its share of the examples: each one's mean, and its covariance shrunk
    toward the pooled within-class covariance ``W`` as a normal-inverse-Wishart prior with ``D``
    pseudo-examples would, ``(S_k + D W) / (n_k + D)`` (``S_k`` the scatter of its ``n_k`` examples), so
    that a class of fewer examples than dimensions still has a full-rank covariance
    (docs/math.md#the-gaussian-start). Full covariances up to ``full_max_dim`` coordinates (default:
    ``FULL_COVARIANCE_MAX_DIM``, and no more than ``k`` full matrices of ``STACK_MAX_ENTRIES`` numbers in
    all hold), the diagonals above. A class without examples gets the mean of all, the pooled covariance
    and weight 0."""
    if full_max_dim is None:
        full_max_dim = min(FULL_COVARIANCE_MAX_DIM, math.isqrt(STACK_MAX_ENTRIES // max(k, 1)))
    flat = _flat(x)
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
    return _stack(GaussianMixture, means, (scatter + dim * pooled) / (counts + dim).reshape(shape), counts)


def _marginal(sde: SDE, t: float) -> tuple[float, float]:
    scale, std = sde.marginal(torch.tensor(float(t), dtype=torch.float64))
    return float(scale), float(std)


def gaussian_flow(
    sde: SDE,
    x: torch.Tensor,
    t_from: float,
    t_to: float,
    moments: GaussianMixture,
    components: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` at ``t_from`` carried to ``t_to`` along the probability-flow ODE of the data's Gaussian (exact for
    Gaussian data): ``x_to = m_to μ + (C_to)^{1/2} (C_from)^{-1/2} (x - m_from μ)``, ``C_t = m_t² Σ + std_t² I``
    (docs/math.md#the-gaussian-start). No score is evaluated. With several Gaussians (``component_moments``),
    ``components`` (one index for every row, or ``[N]``) names each row's."""
    if moments.n_components > 1 and components is None:
        raise ValueError("a stack of Gaussians needs components: the index of each row's Gaussian")
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    if flat.shape[1] != moments.dim:
        raise ValueError(f"the moments are of {moments.dim} coordinates, the data have {flat.shape[1]}")
    which = torch.as_tensor(0 if components is None else components, device=x.device).expand(x.shape[0])
    (m_from, s_from), (m_to, s_to) = _marginal(sde, t_from), _marginal(sde, t_to)
    out = torch.empty_like(flat)
    for k in which.unique().tolist():
        rows = which == k
        mean, values = moments.means[k].to(x.device), moments.variances[k].to(x.device)
        stretch = torch.sqrt((m_to**2 * values + s_to**2) / (m_from**2 * values + s_from**2))
        centred = flat[rows] - m_from * mean
        if moments.rotations is None:
            moved = centred * stretch
        else:
            vectors = moments.rotations[k].to(x.device)
            moved = ((centred @ vectors) * stretch) @ vectors.T
        out[rows] = m_to * mean + moved
    return out.reshape(x.shape).to(x.dtype)


def gaussian_start(sde: SDE, moments: GaussianMixture, snr: float, t_min: float = 1e-3) -> float:
    """The time at which the data's largest variance, scaled by ``m_t²``, is ``snr`` times the noise's
    ``std_t²`` (the largest of any Gaussian of a stack): where ``sample_fast`` hands over from
    ``gaussian_flow`` to the score. 1 when the ratio
    already reaches ``snr`` at ``t = 1``; never below ``t_min``. Found by bisection (the ratio falls
    with ``t`` for every SDE here)."""
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    top = float(moments.variances.max())

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
