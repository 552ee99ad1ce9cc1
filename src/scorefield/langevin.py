"""Langevin samplers: plain Langevin dynamics, Metropolis-adjusted Langevin (MALA), annealed Langevin.

All three are ``@torch.no_grad()`` functions of a score (or log-density), a starting batch ``x_init``
of shape ``[B, ...]`` and a budget, shaped like the SDE samplers: ``f(score_fn, x_init, budget, *,
step_size, ..., generator=None, callback=None, progress=False) -> (x, info)`` with ``info["nfe"]`` the
counted evaluations of the score (or of the log-density and its gradient), and ``callback`` receiving
``{"i", "t", "x", "x_mean"}`` after every update (``t``: the noise level of annealed Langevin, None
for the others; ``x_mean``: the update without its fresh noise). Score functions that need autograd
inside (an energy model's ``-grad E``) enable it locally; nothing here keeps a graph from one step to
the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .score import posterior_mean
from .utils import Generator, append_dims, batch_sum, rand_like, randn_like

__all__ = ["annealed_langevin", "langevin", "mala"]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
NoiseScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogProbFn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_count(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def _check_start(x_init: torch.Tensor) -> None:
    if not isinstance(x_init, torch.Tensor) or x_init.ndim < 2 or not x_init.is_floating_point():
        raise ValueError(
            "x_init must be a floating-point tensor of shape [B, ...] (a batch of starting points)"
        )


def _langevin_step(
    x: torch.Tensor, score: torch.Tensor, step_size: float, generator: Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Langevin update ``x + ε s(x) + sqrt(2ε) z`` and its mean ``x + ε s(x)``
    (docs/math.md#langevin-dynamics)."""
    mean = x + step_size * score
    return mean + math.sqrt(2 * step_size) * randn_like(x, generator), mean


def _run_chain(
    x: torch.Tensor,
    plan: Sequence[tuple[ScoreFn, float, float | None]],
    generator: Generator | None,
    callback: Callback | None,
    progress: bool,
    desc: str,
) -> torch.Tensor:
    """Langevin updates, one per ``(score_fn, step_size, level)`` entry of ``plan``."""
    for i, (score_fn, step_size, level) in enumerate(tqdm(plan, desc=desc, disable=not progress)):
        x, mean = _langevin_step(x, score_fn(x).detach(), step_size, generator)
        if callback is not None:
            callback({"i": i, "t": level, "x": x, "x_mean": mean})
    return x


@torch.no_grad()
def langevin(
    score_fn: ScoreFn,
    x_init: torch.Tensor,
    n_steps: int,
    *,
    step_size: float,
    generator: Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Unadjusted Langevin dynamics (the score-functions tutorial): ``x_{k+1} = x_k + ε s(x_k) + sqrt(2ε) z_k``.

    Args:
        score_fn: ``x [B, ...] -> grad log p(x) [B, ...]``.
        x_init: ``[B, ...]`` starting points, one chain per row.
        n_steps: number of updates ``K >= 1``.
        step_size: ``ε > 0``. The chain's stationary law is ``p`` only as ``ε -> 0``; its bias is
            ``O(ε)`` (for a Gaussian with covariance ``S`` it is ``S (I - ε S^{-1} / 2)^{-1}``).
        callback: ``{"i", "t": None, "x", "x_mean"}`` after each update.

    Returns:
        ``(x_K, info)``: ``x_K`` shaped like ``x_init``; ``info["nfe"] = K``.
    """
    _check_start(x_init)
    step_size = _check_positive("step_size", step_size)
    n_steps = _check_count("n_steps", n_steps)
    plan = [(score_fn, step_size, None)] * n_steps
    return _run_chain(x_init, plan, generator, callback, progress, "langevin"), {"nfe": n_steps}


@torch.no_grad()
def annealed_langevin(
    score_fn: NoiseScoreFn,
    x_init: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    n_steps_each: int,
    step_size: float,
    denoise: bool = True,
    generator: Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) with an optional final denoising step.

    For each level ``sigma_i`` in ``sigmas`` -- **largest first**, ``sigma_1 > ... > sigma_L``, the
    sampler's grid -- run ``n_steps_each`` Langevin updates with step
    ``alpha_i = step_size * sigma_i^2 / sigma_L^2`` on the score ``score_fn(x, sigma_i)``. With
    ``denoise``, finish with Tweedie's formula at the smallest level, ``x <- x + sigma_L^2 s(x, sigma_L)``
    (docs/math.md#annealed-langevin).

    Args:
        score_fn: ``(x [B, ...], sigma [B]) -> grad log p_sigma(x) [B, ...]``.
        x_init: ``[B, ...]`` starting points (typically uniform noise or ``N(0, sigma_1^2 I)``).
        sigmas: ``[L]`` strictly decreasing positive noise levels.
        n_steps_each: updates per level ``T >= 1``.
        step_size: ``ε > 0``, the step at the smallest level (Song & Ermon's ``ε``).
        callback: ``{"i", "t": sigma_i, "x", "x_mean"}`` after each of the ``L * T`` updates, and once
            more (``i = L * T``, ``t = sigma_L``) after the denoising step.

    Returns:
        ``(x, info)``: the samples, shaped like ``x_init``; ``info["nfe"] = L * T`` (+ 1 with ``denoise``).
    """
    _check_start(x_init)
    step_size = _check_positive("step_size", step_size)
    n_steps_each = _check_count("n_steps_each", n_steps_each)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sigmas.numel() < 1 or not torch.isfinite(sigmas).all() or (sigmas <= 0).any():
        raise ValueError("sigmas must be a non-empty sequence of positive finite noise levels")
    if (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError("sigmas must be strictly decreasing (largest first, the order of sampling)")

    def at_level(sigma: float) -> ScoreFn:
        sigma_batch = torch.full((x_init.shape[0],), sigma, dtype=x_init.dtype, device=x_init.device)
        return lambda x: score_fn(x, sigma_batch)

    sigma_last = float(sigmas[-1])
    plan = [
        (at_level(sigma), step_size * (sigma / sigma_last) ** 2, sigma)
        for sigma in sigmas.tolist()
        for _ in range(n_steps_each)
    ]
    x = _run_chain(x_init, plan, generator, callback, progress, "annealed langevin")
    if denoise:
        x = posterior_mean(x, at_level(sigma_last)(x).detach(), 1.0, sigma_last)
        if callback is not None:
            callback({"i": len(plan), "t": sigma_last, "x": x, "x_mean": x})
    return x, {"nfe": len(plan) + int(denoise)}


def _log_prob_and_grad(log_prob_fn: LogProbFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_prob = log_prob_fn(x)
        (grad,) = torch.autograd.grad(log_prob.sum(), x)
    return log_prob.detach(), grad.detach()


def _log_proposal(x_to: torch.Tensor, x_from: torch.Tensor, grad_from: torch.Tensor, step_size: float):
    """``log q(x_to | x_from)`` up to a constant: ``-||x_to - x_from - ε grad||^2 / (4ε)``, ``[B]``."""
    return -batch_sum((x_to - x_from - step_size * grad_from).square()) / (4 * step_size)


@torch.no_grad()
def mala(
    log_prob_fn: LogProbFn,
    x_init: torch.Tensor,
    n_steps: int,
    *,
    step_size: float,
    generator: Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996): exact for any step size.

    Propose ``x' = x + ε grad log p(x) + sqrt(2ε) z``, so ``q(x'|x) = N(x'; x + ε grad log p(x),
    2ε I)``, and accept each chain independently with probability
    ``min(1, p(x') q(x|x') / (p(x) q(x'|x)))``. The gradient comes from autograd through
    ``log_prob_fn``, which may be unnormalised (an energy ``-E(x)``): the constant cancels.

    Args:
        log_prob_fn: ``x [B, ...] -> log p(x) [B]`` (up to an additive constant).
        x_init: ``[B, ...]`` starting points, one chain per row.
        n_steps: number of proposals ``K >= 1``.
        step_size: ``ε > 0``; larger steps move further and are accepted less often.
        callback: ``{"i", "t": None, "x", "x_mean"}`` after each accept/reject (``x_mean``: the
            proposal's mean from the state before it).

    Returns:
        ``(x_K, info)``: the final states, and ``info`` with ``"nfe"`` (evaluations of the log-density
        and its gradient, ``K + 1``) and ``"acceptance_rate"``, the fraction of accepted proposals over
        all chains and steps. A proposal with a non-finite log-density is rejected.
    """
    _check_start(x_init)
    step_size = _check_positive("step_size", step_size)
    n_steps = _check_count("n_steps", n_steps)
    x = x_init
    log_prob, grad = _log_prob_and_grad(log_prob_fn, x)
    n_accepted = 0
    for step in tqdm(range(n_steps), desc="mala", disable=not progress):
        proposal, mean = _langevin_step(x, grad, step_size, generator)
        log_prob_new, grad_new = _log_prob_and_grad(log_prob_fn, proposal)
        log_ratio = (
            log_prob_new
            - log_prob
            + _log_proposal(x, proposal, grad_new, step_size)
            - _log_proposal(proposal, x, grad, step_size)
        )
        accept = rand_like(log_ratio, generator).log() < log_ratio  # NaN compares False: rejected
        n_accepted += int(accept.sum())
        keep = append_dims(accept, x.ndim)
        x = torch.where(keep, proposal, x)
        grad = torch.where(keep, grad_new, grad)
        log_prob = torch.where(accept, log_prob_new, log_prob)
        if callback is not None:
            callback({"i": step, "t": None, "x": x, "x_mean": mean})
    return x, {"nfe": n_steps + 1, "acceptance_rate": n_accepted / (n_steps * x.shape[0])}
