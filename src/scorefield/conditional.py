"""Conditional sampling: fill the missing entries of ``x`` given the observed ones with a score model of the
joint law. By default sequential Monte Carlo (Trippe et al. 2023, "SMCDiff";
docs/math.md#conditional-sampling-by-sequential-monte-carlo), exact as the particles grow for an exact
score; the replacement method with RePaint's resampling (Song et al. 2021, appendix I.2; Lugmayr et al.
2022; docs/math.md#conditional-sampling) on request, whose bias falls as ``resample`` grows but is not
zero at any finite ``resample``.

Replacement runs the reverse SDE on the whole ``x`` and, after every step, replaces the observed entries
by a draw of the forward process at the new time, ``m(t) x_obs + std(t) z``; alone it conditions on a
fresh noisy copy of the observed entries at each step and leans towards the unconditional law.
SMC instead lets the observed entries follow one noisy path of the forward process and weighs the
particles by how well they predict it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from . import noise
from .noise import T_END
from .ode import counted
from .samplers import PREDICTORS, StepFn, step_function, transition, tweedie
from .sde import SDE, ScoreFn
from .utils import Generator, rand_like, randn_like

__all__ = ["inpaint_settings", "sample_conditional"]

# The defaults of conditional sampling (sample_conditional, Run.inpaint, scorefield inpaint): about this
# many network evaluations per row, spent as sequential Monte Carlo with INPAINT_PARTICLES particles (51
# score evaluations), or, when resample is given, as RePaint's resampling of INPAINT_RESAMPLE per step.
# On the exact 2-D conditionals of tests/test_conditional.py (20,000 rows) the weight of the mixture's
# larger mode is off by +0.015 (VP) and +0.013 (VE) at 16 particles and 51 evaluations, and a correlated
# Gaussian's conditional mean by 0.009-0.015 (0.6 sd wide); at the same budget 8 particles and 101
# evaluations give -0.013 / -0.008 on the weight but 0.05-0.07 on the mean, 32 and 26 give +0.036 /
# +0.022 on the weight: too few particles bias the weights one way, too few steps the other.
INPAINT_BUDGET, INPAINT_PARTICLES, INPAINT_RESAMPLE = 800, 16, 4


def inpaint_settings(nfe: int | None, resample: int | None, particles: int | None) -> tuple[int, int, int]:
    """``(nfe, resample, particles)`` for inpainting, the ones not given (None) filled in: sequential Monte
    Carlo with ``INPAINT_PARTICLES`` particles unless ``resample`` is given (RePaint, one particle),
    ``resample`` 1 with particles and ``INPAINT_RESAMPLE`` without, and ``nfe`` that keeps about
    ``INPAINT_BUDGET`` network evaluations per row (``nfe * particles``)."""
    if particles is None:
        particles = 1 if resample is not None else INPAINT_PARTICLES
    if resample is None:
        resample = 1 if particles > 1 else INPAINT_RESAMPLE
    if nfe is None:
        nfe = INPAINT_BUDGET // particles + 1 if particles > 1 else INPAINT_BUDGET
    return nfe, resample, particles


def _check_mask(x_obs: torch.Tensor, mask) -> torch.Tensor:
    """``mask`` as a boolean tensor broadcast to ``x_obs``'s shape (True = observed), after checking that
    it broadcasts, holds only 0/1 values and leaves every observed entry finite."""
    if not isinstance(x_obs, torch.Tensor) or not x_obs.is_floating_point():
        raise ValueError(f"x_obs must be a floating-point tensor [B, ...], got {type(x_obs).__name__}")
    if x_obs.ndim < 2 or x_obs.shape[0] < 1:
        raise ValueError(f"x_obs must be [B, ...] with B >= 1 and a feature axis, got {tuple(x_obs.shape)}")
    mask = torch.as_tensor(mask, device=x_obs.device)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be boolean (True = observed) or hold only the integers 0 and 1")
        mask = mask.bool()
    try:
        shape = torch.broadcast_shapes(mask.shape, x_obs.shape)
    except RuntimeError:
        shape = None
    if shape != x_obs.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to x_obs's shape {tuple(x_obs.shape)}; "
            "pass a mask shaped like x_obs (or like one example, [d] or [C, H, W])"
        )
    mask = mask.expand(x_obs.shape)
    if not bool(torch.isfinite(x_obs[mask]).all()):
        raise ValueError(
            "x_obs has NaN or infinite values at observed entries (mask True); mark them missing"
        )
    return mask


@torch.no_grad()
def sample_conditional(
    score_fn: ScoreFn,
    sde: SDE,
    x_obs: torch.Tensor,
    mask,
    nfe_or_grid: int | torch.Tensor | None = None,
    *,
    particles: int | None = None,
    resample: int | None = None,
    predictor: str | StepFn = "ancestral",
    t_end: float = T_END,
    generator: Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    allow_unobserved: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Samples of ``p(x_missing | x_observed)``: sequential Monte Carlo by default (Trippe et al. 2023;
    docs/math.md#conditional-sampling-by-sequential-monte-carlo), exact as ``particles`` grows for an
    exact score, or the replacement method with RePaint's resampling (Song et al. 2021, appendix I.2;
    Lugmayr et al. 2022, Alg. 1 with jumps of one step; docs/math.md#conditional-sampling).

    Args:
        score_fn: ``score_fn(x, t[B])``, the score of the joint marginal ``p_t``.
        x_obs: ``[B, ...]`` (``[B, d]`` or ``[B, C, H, W]``); only the observed entries are read, so the
            missing ones may hold anything, NaN included.
        mask: True where observed, any shape that broadcasts to ``x_obs`` (``[B, d]``, ``[d]``,
            ``[B, 1, H, W]``, ...); booleans or the integers 0/1.
        nfe_or_grid: the budget of score evaluations (calls of ``score_fn``), or a time grid from 1 (its
            steps on ``noise.time_grid``'s log-SNR grid to ``t_end`` otherwise). ``N = (nfe - 1) //
            resample`` steps, each costing ``resample`` evaluations, then one for Tweedie's denoising,
            so ``info["nfe"] = N * resample + 1 <= nfe``; ``nfe`` must be at least ``resample + 1``.
            Unset, ``inpaint_settings`` fills it in with ``particles`` and ``resample``: about
            ``INPAINT_BUDGET`` network evaluations per row.
        particles: ``K``: each row runs ``K`` particles along one noisy path of its observed entries,
            drawn by the forward process itself; at every step the particles are weighed by how well
            they predict the path's next point and resampled when the weights' effective sample size
            falls below ``K / 2``; one particle of each row, drawn by its weight, is returned. Each score
            evaluation is one call on ``K`` copies of the batch. Default ``INPAINT_PARTICLES``, or 1 when
            ``resample`` is given.
        resample: ``R > 1`` (with one particle): the replacement method, each step taken ``R`` times,
            going back one step with the exact forward transition between takes (RePaint's ``U`` with
            jump length 1); ``1`` with one particle is plain replacement.
        predictor: a name of ``samplers.PREDICTORS`` (default ``"ancestral"``) or a step function, for the
            replacement method (SMC moves by the ancestral kernel, whose density it weighs).
        t_end: the last time of the grid; the result is Tweedie's ``E[x_0 | x_{t_end}]``.
        generator: a ``torch.Generator`` or a ``KeyedNoise`` (each sample then gets the same draws
            whatever its batch: every draw is shaped like ``x_obs``, or ``[B, K, ...]``).
        callback: ``{"i", "t", "x", "x_mean"}`` after every step (with particles, each row's first).
        allow_unobserved: accept a mask with no observed entry at all and sample the joint law with the
            same steps, as the rows without one are sampled within a batch; for callers that split a
            larger batch into blocks (``Run.inpaint``).

    Returns ``(x, info)``: ``x`` shaped like ``x_obs`` whose observed entries are exactly ``x_obs``'s,
    and ``info`` with ``"nfe"`` (counted), ``"n_steps"``, ``"resample"``, ``"particles"`` and
    ``"times"``. When every entry is observed, ``x_obs`` comes back (a copy) with ``nfe = 0``. A mask
    with no observed entry at all raises ``ValueError`` (that is unconditional sampling: ``sample_pc``)
    unless ``allow_unobserved``. Raises ``ValueError`` for a mask that does not broadcast, a non-finite
    observed entry, ``resample < 1``, too small a budget, or particles with ``resample > 1``.
    """
    mask = _check_mask(x_obs, mask)
    given = isinstance(nfe_or_grid, torch.Tensor)
    nfe, resample, particles = inpaint_settings(None if given else nfe_or_grid, resample, particles)
    if int(resample) != resample or resample < 1:
        raise ValueError(f"resample must be an integer >= 1, got {resample}")
    if int(particles) != particles or particles < 1:
        raise ValueError(f"particles must be an integer >= 1, got {particles}")
    if particles > 1 and resample != 1:
        raise ValueError(
            f"particles={particles} replaces RePaint's resampling; pass resample=1 (got {resample})"
        )
    if given:
        grid = noise.as_grid(nfe_or_grid, x_obs)
        n_steps = grid.numel() - 1
    else:
        if int(nfe) != nfe or nfe < resample + 1:
            raise ValueError(
                f"nfe={nfe} is too small for resample={resample}: each step costs resample evaluations and "
                f"the final denoising one more, so pass nfe >= {resample + 1}"
            )
        n_steps = (int(nfe) - 1) // int(resample)
        grid = noise.as_grid(n_steps, x_obs, sde, kind="log_snr", t_end=t_end)
    info = {
        "nfe": 0,
        "n_steps": n_steps,
        "resample": int(resample),
        "particles": int(particles),
        "times": grid,
    }
    if bool(mask.all()):
        return x_obs.clone(), {**info, "n_steps": 0, "times": None}
    if not (allow_unobserved or bool(mask.any())):
        raise ValueError("mask has no observed entry: that is unconditional sampling, use sample_pc")
    score, count = counted(score_fn)
    x0 = torch.where(mask, x_obs, torch.zeros((), dtype=x_obs.dtype, device=x_obs.device))  # no NaN leaks
    if particles > 1:
        x = _smc(score, sde, x0, mask, grid, int(particles), generator, callback, progress)
    else:
        x = _replacement(score, sde, x0, mask, grid, int(resample), predictor, generator, callback, progress)
    return torch.where(mask, x_obs, x), {**info, "nfe": count[0]}


def _replacement(
    score, sde: SDE, x0, mask, grid, resample: int, predictor, generator, callback, progress
) -> torch.Tensor:
    """The replacement method with RePaint's resampling for ``sample_conditional(resample=R)``."""
    predict = step_function(PREDICTORS, "predictor", predictor)
    batch = x0.shape[0]

    def observed_at(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` with the observed entries replaced by a forward draw ``m(t) x_obs + std(t) z``."""
        scale, std = sde.marginal(t[:1])
        return torch.where(mask, scale * x0 + std * randn_like(x, generator), x)

    x = observed_at(sde.prior_sample(x0.shape, generator, x0.dtype, x0.device), grid[:1])
    for i in tqdm(range(grid.numel() - 1), disable=not progress, desc="conditional sampling"):
        t, t_next = grid[i].expand(batch), grid[i + 1].expand(batch)
        for r in range(resample):
            if r:  # RePaint's jump back: x_t = a x_{t_next} + G z, the exact forward transition
                a, g2, _, _ = transition(sde, x, t, t_next)
                x = a * x + g2.sqrt() * randn_like(x, generator)
            x, x_mean = predict(score, sde, x, t, t_next, generator)
            x = observed_at(x, t_next)
        if callback is not None:
            callback({"i": i, "t": float(grid[i + 1]), "x": x, "x_mean": x_mean})
    return tweedie(score, sde, x, grid[-1].expand(batch))


def _smc(
    score,
    sde: SDE,
    x0: torch.Tensor,
    mask: torch.Tensor,
    grid: torch.Tensor,
    k: int,
    generator,
    callback,
    progress,
):
    """Sequential Monte Carlo for ``sample_conditional(particles=k)``; returns one particle per row at ``t = 0``
    (Tweedie's denoising at the grid's last time).

    The observed entries follow one path of the forward process, drawn from the data upwards: ``y`` at
    the last time ``m x0 + std z``, then ``y_t = a y_{t'} + G z`` (the exact transition) up the grid.
    Each particle moves by the reverse kernel ``N(mu(x_t), v)``, ``mu = (x_t + G^2 s(x_t)) / a`` the exact
    reverse mean; its weight is the narrow kernel's density at the path's next point on the observed
    entries (the predictive likelihood, known before the move: a fully adapted filter), the missing
    entries drawn from the kernel, the observed ones set to the path. The move's variance ``v`` is the
    reverse transition's, averaged over the row's particles (``_reverse_variance``); the particles are
    resampled only when the weights' effective sample size falls below ``k / 2``, and one is drawn by its
    weight at the end (docs/math.md#conditional-sampling-by-sequential-monte-carlo).
    """
    batch, shape = x0.shape[0], x0.shape[1:]
    n_steps = grid.numel() - 1
    path = [None] * (n_steps + 1)  # the observed entries' noisy path, one per row, shared by its particles
    scale, std = sde.marginal(grid[-1:])
    path[-1] = scale * x0 + std * randn_like(x0, generator)
    for i in range(n_steps - 1, -1, -1):
        a, g2, _, _ = transition(sde, x0, grid[i].expand(batch), grid[i + 1].expand(batch))
        path[i] = a * path[i + 1] + g2.sqrt() * randn_like(x0, generator)
    observed = mask.unsqueeze(1).expand(batch, k, *shape)
    x = sde.prior_sample((batch, k, *shape), generator, x0.dtype, x0.device)
    x = torch.where(observed, path[0].unsqueeze(1), x)
    rows = torch.arange(batch, device=x0.device)[:, None]
    log_w = torch.zeros(batch, k, dtype=x0.dtype, device=x0.device)  # normalised, carried between steps
    for i in tqdm(range(n_steps), disable=not progress, desc="conditional sampling (SMC)"):
        flat = x.reshape(batch * k, *shape)
        t, t_next = grid[i].expand(batch * k), grid[i + 1].expand(batch * k)
        a, g2, var, var_next = (float(v.flatten()[0]) for v in transition(sde, flat, t, t_next))
        s = score(flat, t).reshape(batch, k, *shape)
        mean = (x + g2 * s) / a
        narrow = var_next * g2 / var  # the kernel's variance for a point mass (x_0 known)
        target = path[i + 1].unsqueeze(1)
        log_w = log_w - 0.5 * ((target - mean).square() * observed).flatten(2).sum(2) / narrow  # [batch, k]
        log_w = torch.log_softmax(log_w, dim=1)
        u = rand_like(log_w[:, :1], generator)  # systematic resampling, one uniform per row
        positions = (u + torch.arange(k, device=x0.device, dtype=log_w.dtype)) / k
        chosen = torch.searchsorted(log_w.exp().cumsum(1), positions).clamp_(max=k - 1)
        again = log_w.exp().square().sum(1, keepdim=True) * k > 2  # effective sample size below k / 2
        chosen = torch.where(again, chosen, torch.arange(k, device=x0.device))
        log_w = torch.where(again, -math.log(k), log_w)
        sd = _reverse_variance(s, ~observed, a, g2, narrow).sqrt().view(batch, 1, *([1] * len(shape)))
        mean = mean[rows, chosen]
        x = mean + sd * randn_like(mean, generator)
        x = torch.where(observed, target, x)
        if callback is not None:
            callback({"i": i, "t": float(grid[i + 1]), "x": x[:, 0], "x_mean": mean[:, 0]})
    u = rand_like(log_w[:, :1], generator)  # one particle of each row, drawn by its weight
    pick = torch.searchsorted(log_w.exp().cumsum(1), u).clamp_(max=k - 1)
    x = x[rows, pick].reshape(batch, *shape)
    return tweedie(score, sde, x, grid[-1].expand(batch))


def _reverse_variance(
    s: torch.Tensor, missing: torch.Tensor, a: float, g2: float, narrow: float
) -> torch.Tensor:
    """The variance of the reverse step from ``t`` to ``t'`` for each row, ``[batch]``, from the scores
    ``s`` (``[batch, k, ...]``) of its particles on its ``missing`` entries.

    The reverse transition's covariance is ``Cov[x_t' | x_t] = (G^2 / a^2)(I + G^2 H)``, ``H`` the Hessian
    of ``log p_t`` (Tweedie's second moment applied to ``x_t = a x_t' + G z``), and ``E[H] = -E[s s^T]``,
    so its mean variance per entry is ``(G^2 / a^2)(1 - G^2 E[s_j^2])`` (the isotropic variance of
    Bao et al. 2022, "Analytic-DPM"), the expectation taken over the particles. It lies between the point
    mass's ``narrow`` and ``G^2 / a^2`` (a law with no information on ``x_t'``), where it is clamped.
    """
    held = missing.to(s.dtype)
    mean_square = (s.square() * held).flatten(1).sum(1) / held.flatten(1).sum(1).clamp_min(1)
    return ((g2 / a**2) * (1 - g2 * mean_square)).clamp(narrow, g2 / a**2)
