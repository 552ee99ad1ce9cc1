"""Noise ladders and time grids: where the noise levels and the sampler's discretisation come from.

- ``geometric_sigmas``: the NCSN ladder ``sigma_1 > ... > sigma_L`` (largest first, sampling order).
- ``max_pairwise_distance`` / ``resolve_sigma_max``: ``sigma_max`` about the largest distance between
  two training points (Song & Ermon 2020, technique 1; the score-functions tutorial, "Recommendations"),
  optionally with a margin above it (``factor``, ``pad``; the estimators use one).
- ``level_ratio`` / ``num_levels``: the number of levels from the data dimension
  (Song & Ermon 2020, technique 2).
- ``time_grid``: decreasing times ``t_start = t_0 > ... > t_N = t_end`` for the SDE samplers, the one
  builder of every sampler's grid (``as_grid`` takes a number of steps or checks a given grid);
  ``noise_level`` / ``time_at_noise_level``: ``sigma(t) = std(t) / scale(t)`` and its inverse, so grids
  can be placed by the marginal's noise rather than by ``t`` and hold on every SDE family.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from scipy.optimize import brentq
from scipy.special import ndtr

from .sde import HasMarginal

__all__ = [
    "T_END",
    "as_grid",
    "geometric_sigmas",
    "level_overlap",
    "level_ratio",
    "max_pairwise_distance",
    "noise_level",
    "num_levels",
    "resolve_sigma_max",
    "time_at_noise_level",
    "time_grid",
]

# The samplers' last time by default: Tweedie's step there removes the noise of level std(T_END).
T_END = 1e-3


def _check_sigma_range(sigma_max: float, sigma_min: float) -> None:
    if not (math.isfinite(sigma_min) and sigma_min > 0):
        raise ValueError(f"sigma_min must be a positive number, got {sigma_min}; pass e.g. sigma_min=0.01")
    if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
        raise ValueError(
            f"sigma_max ({sigma_max}) must be larger than sigma_min ({sigma_min}); "
            "swap them or raise sigma_max (the levels are ordered largest first)"
        )


def geometric_sigmas(
    sigma_max: float,
    sigma_min: float,
    n: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """NCSN noise levels (Song & Ermon 2019): ``n`` levels in geometric progression, largest first.

    ``sigma_i = sigma_max (sigma_min / sigma_max)^{i / (n - 1)}`` for ``i = 0 .. n-1``: a constant
    ratio between consecutive levels, the first exactly ``sigma_max`` and the last exactly
    ``sigma_min``. Computed in float64, then cast to ``dtype``.
    """
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    _check_sigma_range(sigma_max, sigma_min)
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2 (one level per noise scale), got {n}")
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), int(n), dtype=torch.float64)
    sigmas = log_sigmas.exp()
    sigmas[0], sigmas[-1] = sigma_max, sigma_min  # exact endpoints, not exp(log(.))
    return sigmas.to(dtype=dtype, device=device)


def max_pairwise_distance(
    data: torch.Tensor,
    max_points: int = 2000,
    generator: torch.Generator | None = None,
    chunk_size: int = 1024,
) -> float:
    """The largest Euclidean distance between two rows of ``data`` (Song & Ermon 2020, technique 1).

    ``data`` is ``[N, ...]`` (images are flattened). When ``N > max_points`` a random subset of
    ``max_points`` rows, drawn with ``generator``, stands in for the data: the answer is then a lower
    bound, usually close, since the largest distance is set by a few extreme points in every
    direction. Distances are computed with ``torch.cdist`` in blocks of ``chunk_size`` rows.
    """
    data = torch.as_tensor(data)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"need data of shape [N, ...] with N >= 2 points, got shape {tuple(data.shape)}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    x = data.flatten(1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("data contains NaN or Inf; clean it before choosing noise levels")
    if x.shape[0] > max_points:
        idx = torch.randperm(
            x.shape[0], generator=generator, device=generator.device if generator is not None else None
        )
        x = x[idx[:max_points].to(x.device)]
    return max(float(torch.cdist(block, x).max()) for block in x.split(chunk_size))


def resolve_sigma_max(
    sigma_max: float | Literal["auto"],
    data: torch.Tensor | None = None,
    max_points: int = 2000,
    generator: torch.Generator | None = None,
    factor: float = 1.0,
    pad: float = 0.0,
) -> float:
    """``sigma_max`` as a number: given, or ``"auto"`` = ``factor * D + pad`` with ``D`` the largest
    pairwise distance in ``data`` (``max_pairwise_distance``; a subset of ``max_points`` rows drawn
    with ``generator`` above that).

    ``factor >= 1`` and ``pad >= 0`` are a margin above the rule (default: none) for a caller whose
    prior ``N(0, sigma_max^2 I)`` must also cover rows that are not in ``data``: ``D`` is a lower
    bound on a larger data set's spread, and a log-likelihood integrated to ``t = 1`` is exact only
    where the diffused data has reached the prior. They apply to ``"auto"`` only; a number is taken as it is.
    """
    if not (math.isfinite(factor) and factor >= 1 and math.isfinite(pad) and pad >= 0):
        raise ValueError(f"the margin needs factor >= 1 and pad >= 0, got factor={factor}, pad={pad}")
    if isinstance(sigma_max, str):
        if sigma_max != "auto":
            raise ValueError(f'sigma_max must be a positive number or "auto", got {sigma_max!r}')
        if data is None:
            raise ValueError('sigma_max="auto" needs the training data; pass data=... or a number')
        return factor * max_pairwise_distance(data, max_points=max_points, generator=generator) + pad
    sigma_max = float(sigma_max)
    if not (math.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f'sigma_max must be a positive number or "auto", got {sigma_max}')
    return sigma_max


def level_overlap(gamma: float, dim: int) -> float:
    """Song & Ermon 2020, technique 2: the overlap of consecutive levels with ratio ``gamma``.

    ``Phi(sqrt(2d)(gamma - 1) + 3 gamma) - Phi(sqrt(2d)(gamma - 1) - 3 gamma)``.

    For ``x ~ N(0, sigma_i^2 I)`` in ``d`` dimensions, ``||x||`` is about ``N(sqrt(d) sigma_i,
    sigma_i^2 / 2)``; this is the (approximate) probability that ``||x||`` falls in the 3-standard-
    deviation shell of the next larger level ``sigma_{i-1} = gamma sigma_i``.
    """
    a = math.sqrt(2 * dim) * (gamma - 1)
    return float(ndtr(a + 3 * gamma) - ndtr(a - 3 * gamma))


def level_ratio(dim: int, overlap: float = 0.5) -> float:
    """Song & Ermon 2020, technique 2: the level ratio ``gamma = sigma_{i-1} / sigma_i`` for an overlap.

    Solves ``level_overlap(gamma, dim) = overlap``. The overlap starts at ``Phi(3) - Phi(-3)`` at
    ``gamma = 1``, and it falls to 0 for large ``gamma`` only when ``sqrt(2d) > 3``: in 4 or fewer
    dimensions the shells of all levels contain the origin, any ratio keeps them overlapping, and
    this returns ``inf`` (the rule puts no limit on the ratio).
    """
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    ceiling = level_overlap(1.0, dim)
    if not 0 < overlap < ceiling:
        raise ValueError(f"overlap must be in (0, {ceiling:.4f}), got {overlap}")
    if math.sqrt(2 * dim) <= 3:
        return math.inf
    hi = 2.0
    while level_overlap(hi, dim) >= overlap:
        hi *= 2
    # the overlap rises a little above its value at gamma=1, then falls: one crossing in (1, hi)
    return float(brentq(lambda g: level_overlap(g, dim) - overlap, 1.0, hi, xtol=1e-14, rtol=1e-14))


def num_levels(
    dim: int,
    sigma_max: float,
    sigma_min: float,
    overlap: float = 0.5,
    min_levels: int = 10,
) -> int:
    """Song & Ermon 2020, technique 2: the number of geometric levels ``L`` for ``dim``-dimensional data.

    ``L = ceil(log(sigma_max / sigma_min) / log gamma) + 1`` with ``gamma = level_ratio(dim, overlap)``:
    the fewest levels whose ratio is at most ``gamma``, so consecutive levels overlap by at least
    ``overlap``. Never fewer than ``min_levels`` (the whole answer in 4 or fewer dimensions, where
    the rule puts no limit on the ratio).
    """
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    _check_sigma_range(sigma_max, sigma_min)
    if min_levels < 2:
        raise ValueError(f"min_levels must be >= 2, got {min_levels}")
    gamma = level_ratio(dim, overlap)
    if math.isinf(gamma):
        return int(min_levels)
    n = math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma)) + 1
    return max(int(min_levels), n)


def noise_level(sde: HasMarginal, t: torch.Tensor) -> torch.Tensor:
    """``sigma(t) = std(t) / scale(t) = exp(-log_snr(t) / 2)``: the VE-equivalent noise level at time ``t``."""
    scale, std = sde.marginal(t)
    return std / scale


def time_at_noise_level(
    sde: HasMarginal, sigma: torch.Tensor, t_lo: float = 0.0, t_hi: float = 1.0, n_iter: int = 64
) -> torch.Tensor:
    """The times at which ``noise_level(sde, t)`` reaches ``sigma`` (float64): the increasing map inverted on
    ``[t_lo, t_hi]`` by bisection (clamped at the ends when ``sigma`` lies outside their levels).

    Uses only ``sde.marginal``, so it serves every SDE (VE, VP, sub-VP) with one code path.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    lo = torch.full_like(sigma, t_lo)
    hi = torch.full_like(sigma, t_hi)
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        below = noise_level(sde, mid) < sigma
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def time_grid(
    n_steps: int,
    sde: HasMarginal | None = None,
    *,
    kind: Literal["uniform", "log_snr", "edm", "power"] = "uniform",
    t_end: float = T_END,
    t_start: float = 1.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sampler time grid: ``n_steps + 1`` decreasing times from exactly ``t_start`` to exactly ``t_end``.

    - ``uniform``: equal steps in ``t`` (Song et al. 2021).
    - ``log_snr``: equal steps in ``log(std(t) / scale(t))``, i.e. in log-SNR (Kingma et al. 2021).
    - ``edm``: Karras et al. 2022, eq. 5, on the noise level ``sigma(t) = std(t) / scale(t)``:
      ``sigma_i = (sigma_max^{1/rho} + i/N (sigma_min^{1/rho} - sigma_max^{1/rho}))^rho``, which
      concentrates steps at low noise for ``rho > 1``; ``rho = math.inf`` is its limit, ``log_snr``.
    - ``power``: ``t_i = t_end + (t_start - t_end) (1 - i/N)^rho``, uniform in ``t`` for ``rho = 1`` and
      denser towards ``t_end`` for ``rho > 1``.

    ``log_snr`` and ``edm`` need ``sde`` (only its ``marginal`` is used); the times are found by
    inverting the noise level in float64. Every sampler builds its grid here (``as_grid``).
    """
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps}")
    t_end, t_start = float(t_end), float(t_start)
    if not 0 < t_end < t_start:
        raise ValueError(f"need 0 < t_end < t_start, got t_end={t_end}, t_start={t_start}")
    n = int(n_steps)
    if kind == "uniform":
        t = torch.linspace(t_start, t_end, n + 1, dtype=torch.float64)
    elif kind == "power":
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        t = t_end + (t_start - t_end) * (1 - torch.arange(n + 1, dtype=torch.float64) / n) ** rho
    elif kind in ("log_snr", "edm"):
        if sde is None:
            raise ValueError(f'time_grid(kind="{kind}") needs the SDE; pass sde=...')
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        ends = noise_level(sde, torch.tensor([t_start, t_end], dtype=torch.float64))
        frac = torch.linspace(0, 1, n + 1, dtype=torch.float64)
        if kind == "log_snr" or math.isinf(rho):
            ratio = torch.exp(ends[0].log() + frac * (ends[1].log() - ends[0].log()))
        else:
            lo, hi = ends[1] ** (1 / rho), ends[0] ** (1 / rho)
            ratio = (hi + frac * (lo - hi)) ** rho
        t = time_at_noise_level(sde, ratio, t_end, t_start)
    else:
        raise ValueError(f'kind must be "uniform", "log_snr", "edm" or "power", got {kind!r}')
    t[0], t[-1] = t_start, t_end
    return t.to(dtype=dtype, device=device)


def as_grid(
    steps_or_grid: int | torch.Tensor,
    x: torch.Tensor,
    sde: HasMarginal | None = None,
    *,
    kind: Literal["uniform", "log_snr", "edm", "power"] = "uniform",
    t_end: float = T_END,
    rho: float = 7.0,
) -> torch.Tensor:
    """A sampler's grid as ``x``'s dtype and device: ``time_grid(steps_or_grid, ...)`` for a number of
    steps, or the given times, checked to decrease strictly within ``(0, 1]``."""
    if not isinstance(steps_or_grid, torch.Tensor):
        return time_grid(steps_or_grid, sde, kind=kind, t_end=t_end, rho=rho, dtype=x.dtype, device=x.device)
    grid = steps_or_grid.to(dtype=x.dtype, device=x.device)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(
            f"a time grid must be a 1-D tensor of at least 2 times, got shape {tuple(grid.shape)}"
        )
    if not bool((grid.diff() < 0).all()) or grid.max() > 1 or grid.min() <= 0:
        raise ValueError("a time grid must decrease strictly and lie in (0, 1]")
    return grid
