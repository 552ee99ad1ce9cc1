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

from typing import NamedTuple

import torch

from .sde import SDE

__all__ = ["FULL_COVARIANCE_MAX_DIM", "DataMoments", "data_moments", "gaussian_flow", "gaussian_start"]

# data_moments keeps the full covariance up to this many dimensions (a 1024 x 1024 matrix is 8 MB in
# float64) and the per-coordinate variances above it: the flow is then that of the diagonal Gaussian.
FULL_COVARIANCE_MAX_DIM = 1024


class DataMoments(NamedTuple):
    """The data's mean ``[D]`` and covariance, ``[D, D]`` or its diagonal ``[D]`` (float64, flattened
    coordinates)."""

    mean: torch.Tensor
    cov: torch.Tensor

    def eigen(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The covariance's eigenvalues (clamped at 0) and eigenvectors (None for a diagonal one)."""
        if self.cov.ndim == 1:
            return self.cov.clamp_min(0), None
        values, vectors = torch.linalg.eigh(self.cov)
        return values.clamp_min(0), vectors


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


def _marginal(sde: SDE, t: float) -> tuple[float, float]:
    scale, std = sde.marginal(torch.tensor(float(t), dtype=torch.float64))
    return float(scale), float(std)


def gaussian_flow(
    sde: SDE, x: torch.Tensor, t_from: float, t_to: float, moments: DataMoments
) -> torch.Tensor:
    """``x`` at ``t_from`` carried to ``t_to`` along the probability-flow ODE of the data's Gaussian (exact for
    Gaussian data): ``x_to = m_to μ + (C_to)^{1/2} (C_from)^{-1/2} (x - m_from μ)``, ``C_t = m_t² Σ + std_t² I``
    (docs/math.md#the-gaussian-start). No score is evaluated."""
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
    ``std_t²``: where ``sample_fast`` hands over from ``gaussian_flow`` to the score. 1 when the ratio
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
