"""Score-matching objectives. Each returns one loss per example, ``[B]``; the caller reduces.

Score functions: unconditional ``score_fn(x) -> [B, ...]`` (esm, ism, ssm), noise-conditional
``score_fn(x, sigma[B])`` (dsm, ncsn) and time-conditional ``score_fn(x, t[B])`` (sde_dsm).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.func import jacrev, vmap

from .score import batch_marginal, per_example
from .utils import append_dims, batch_sum, rademacher_like, randn_like

if TYPE_CHECKING:
    from .sde import SDE

ScoreFn = Callable[..., torch.Tensor]

TRACES = ("exact", "hutchinson")
PROBES = {"rademacher": rademacher_like, "gaussian": randn_like}
WEIGHTINGS = ("std2", "likelihood")


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_count(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_positive(name: str, value: torch.Tensor) -> None:
    if not bool((value > 0).all()):
        raise ValueError(f"{name} must be > 0, got a minimum of {value.min().item():g}")


def esm(
    score_fn: ScoreFn,
    x: torch.Tensor,
    target_score: torch.Tensor | ScoreFn,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Explicit score matching (Hyvärinen 2005, eq. 2): ``½ ||s_θ(x) - ∇log p(x)||²``.

    ``target_score`` is the true score at ``x`` (a tensor shaped like ``x``) or a function giving it.
    ``generator`` is accepted so every objective shares one calling convention; this one draws no noise.
    """
    target = target_score(x) if callable(target_score) else target_score
    return 0.5 * batch_sum((score_fn(x) - target) ** 2)


def _exact_trace(score_fn: ScoreFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s(x)`` and ``tr ∇_x s(x)`` from the full per-example Jacobian (torch.func vmap of jacrev)."""

    def single(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = score_fn(xi.unsqueeze(0)).squeeze(0)
        return s, s

    jacobian, s = vmap(jacrev(single, has_aux=True))(x)  # (B, *shape, *shape), (B, *shape)
    n = x[0].numel()
    return s, jacobian.reshape(x.shape[0], n, n).diagonal(dim1=1, dim2=2).sum(-1)


def _projections(
    score_fn: ScoreFn, x: torch.Tensor, n: int, probe: str, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``s``, ``v`` and ``vᵀ (∇_x s) v`` for ``n`` random probes per example, batch repeated ``n`` times.

    All vector-Jacobian products come from one backward pass, kept in the graph (create_graph) so
    the loss can be backpropagated to θ. Shapes ``[n B, ...]``, ``[n B, ...]``, ``[n B]``.
    """
    xr = x.detach().repeat(n, *([1] * (x.ndim - 1))).requires_grad_(True)
    s = score_fn(xr)
    v = PROBES[probe](s, generator)
    (vjp,) = torch.autograd.grad(batch_sum(v * s).sum(), xr, create_graph=True)  # vᵀ ∇_x s
    return s, v, batch_sum(vjp * v)


def _mean_over_probes(per_probe: torch.Tensor, n: int) -> torch.Tensor:
    return per_probe.reshape(n, -1).mean(0)


def ism(
    score_fn: ScoreFn,
    x: torch.Tensor,
    trace: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Implicit score matching (Hyvärinen 2005, Theorem 1): ``½ ||s_θ(x)||² + tr(∇_x s_θ(x))``.

    Equals ESM up to a constant independent of θ. ``trace="exact"`` builds the Jacobian with
    ``torch.func`` (d rows, vectorised); ``"hutchinson"`` (Hutchinson 1989) averages
    ``vᵀ (∇_x s) v`` over ``n_probes`` probes ``v`` (``"rademacher"`` or ``"gaussian"``).

    Examples:
        The exact score of ``N(0, I)`` in two dimensions is ``s(x) = -x``, whose trace is ``-2``, so
        the loss is ``½ ||x||² - 2`` per example:

        >>> x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
        >>> ism(lambda x: -x, x)
        tensor([-1.3750,  0.0000])
    """
    _check_choice("trace kind", trace, TRACES)
    _check_choice("probe", probe, PROBES)
    _check_count("n_probes", n_probes)
    with torch.enable_grad():
        if trace == "exact":
            s, divergence = _exact_trace(score_fn, x)
            return 0.5 * batch_sum(s**2) + divergence
        s, _, vjv = _projections(score_fn, x, n_probes, probe, generator)
        return _mean_over_probes(0.5 * batch_sum(s**2) + vjv, n_probes)


def ssm(
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_projections: int = 1,
    variance_reduction: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sliced score matching (Song et al. 2019, SSM and SSM-VR): ``vᵀ ∇_x(vᵀ s_θ) + ½ (vᵀ s_θ)²``.

    Averaged over ``n_projections`` Gaussian directions ``v``. With ``variance_reduction`` the term
    ``½ (vᵀ s)²`` is replaced by its expectation over ``v``, ``½ ||s||²`` (then SSM-VR is ISM with a
    Gaussian Hutchinson trace).
    """
    _check_count("n_projections", n_projections)
    with torch.enable_grad():
        s, v, vjv = _projections(score_fn, x, n_projections, "gaussian", generator)
        square = batch_sum(s**2) if variance_reduction else batch_sum(v * s) ** 2
        return _mean_over_probes(vjv + 0.5 * square, n_projections)


def dsm(
    score_fn: ScoreFn, x: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Denoising score matching (Vincent 2011, J_DSM): ``½ ||s_θ(x + σz, σ) + z/σ||²``.

    ``sigma`` is a number or ``[B]``; ``score_fn(x_noisy, sigma[B])``.
    """
    sigma = per_example(sigma, x)
    _check_positive("sigma", sigma)
    z = randn_like(x, generator)
    sigma_ = append_dims(sigma, x.ndim)
    return 0.5 * batch_sum((score_fn(x + sigma_ * z, sigma) + z / sigma_) ** 2)


def ncsn(
    score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise-conditional score networks (Song & Ermon 2019, eq. 6 with λ(σ) = σ²): ``½ ||σ s_θ(x̃, σ) + z||²``.

    ``sigmas`` is the ladder ``[L]`` in sampling order, largest first (the loss itself does not
    depend on the order); each example draws one level uniformly.
    """
    sigmas = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device)
    if sigmas.ndim != 1 or sigmas.numel() == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D ladder, got shape {tuple(sigmas.shape)}")
    _check_positive("every sigma", sigmas)
    level = torch.randint(sigmas.numel(), (x.shape[0],), generator=generator, device=x.device)
    sigma = sigmas[level]  # (B,)
    return sigma**2 * dsm(score_fn, x, sigma, generator)


@functools.lru_cache(maxsize=16)
def _importance_table(
    sde: SDE, t_min: float, n_grid: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``importance_times``' grid, cell probabilities and their CDF: the same for every batch of a
    run (SDEs are frozen dataclasses, equal by value), so computed once rather than at every step."""
    grid = torch.logspace(math.log10(t_min), 0.0, n_grid, dtype=torch.float64, device=device)
    _, std = sde.marginal(grid)
    ratio = sde.diffusion(grid) ** 2 / std**2
    mass = 0.5 * (ratio[1:] + ratio[:-1]) * grid.diff()
    prob = mass / mass.sum()  # (n_grid - 1,)
    return grid, prob, prob.cumsum(0)


def importance_times(
    sde: SDE, t_min: float, x: torch.Tensor, generator: torch.Generator | None, n_grid: int = 2049
) -> tuple[torch.Tensor, torch.Tensor]:
    """``t ~ q(t) ∝ g(t)²/std(t)²`` on [t_min, 1] by inverting its CDF, and the weights ``U(t) / q(t)``.

    ``q`` is piecewise uniform on a log-spaced grid (cell masses by the trapezoid rule; the ratio
    behaves like 1/t near 0 for VP SDEs). Sampling from this piecewise density is exact and the
    weight uses the same density, so the estimator is unbiased whatever the grid.
    """
    try:
        grid, prob, cdf = _importance_table(sde, t_min, n_grid, x.device)
    except TypeError:  # an SDE that is not hashable (a mutable one): computed afresh
        grid, prob, cdf = _importance_table.__wrapped__(sde, t_min, n_grid, x.device)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
    cell = torch.searchsorted(cdf, u, right=True).clamp(max=prob.numel() - 1)
    width = grid[cell + 1] - grid[cell]
    t = grid[cell] + (u - (cdf[cell] - prob[cell])) / prob[cell] * width
    weight = width / prob[cell] / (1 - t_min)  # uniform density 1/(1-t_min) over q = prob/width
    return t.to(x.dtype), weight.to(x.dtype)


def sde_dsm(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    weighting: str = "std2",
    t_min: float = 1e-5,
    importance_sampling: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continuous-time denoising score matching (Song et al. 2021, eq. 7): ``½ λ(t) ||s_θ(x_t, t) + z/σ||²``.

    ``t ~ U(t_min, 1)``, ``x_t = m(t) x_0 + std(t) z`` from ``sde.marginal``; ``λ = std²`` (``"std2"``)
    or ``λ = g²`` (``"likelihood"``, Song et al. 2021b, bounds the negative log-likelihood).
    ``importance_sampling`` (likelihood weighting only) draws ``t`` with density ``∝ g²/std²`` and
    reweights, same expectation with far less variance. ``score_fn(x_t, t[B])``.
    """
    _check_choice("weighting", weighting, WEIGHTINGS)
    if not 0 < t_min < 1:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    if importance_sampling and weighting != "likelihood":
        raise ValueError("importance_sampling applies to weighting='likelihood' only")
    if importance_sampling:
        t, weight = importance_times(sde, t_min, x, generator)
    else:
        t = t_min + (1 - t_min) * torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        weight = 1.0
    scale, std = batch_marginal(sde, t, x)
    z = randn_like(x, generator)
    std_ = append_dims(std, x.ndim)
    residual = std_ * score_fn(append_dims(scale, x.ndim) * x + std_ * z, t) + z  # std (s + z/std)
    lam_over_std2 = 1.0 if weighting == "std2" else sde.diffusion(t) ** 2 / std**2
    return 0.5 * weight * lam_over_std2 * batch_sum(residual**2)
