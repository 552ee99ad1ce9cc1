"""Conditional sampling by replacement: fill the missing entries of ``x`` given the observed ones with a
score model of the joint law (Song et al. 2021, appendix I.2; Lugmayr et al. 2022, "RePaint";
docs/math.md#conditional-sampling).

The reverse SDE runs on the whole ``x``. After every step the observed entries are replaced by a draw of
the forward process at the new time, ``m(t) x_obs + std(t) z``, so the missing entries are denoised
next to observed entries carrying the right amount of noise. Replacement alone conditions the missing
entries on a fresh noisy copy of the observed ones at each step, not on the observed values, and leans
towards the unconditional law; RePaint's resampling repeats each step: go back one step with the exact
forward transition and step down again, ``resample - 1`` more times, which lets the missing entries
adapt to the observed ones at each noise level. The bias falls as ``resample`` grows; it is not zero
at any finite ``resample``.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import noise
from .ode import counted
from .samplers import PREDICTORS, StepFn, _lookup, _transition, tweedie
from .sde import SDE, ScoreFn
from .utils import Generator, randn_like

__all__ = ["sample_conditional"]


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
    nfe: int = 1000,
    resample: int = 20,
    generator: Generator | None = None,
    eps: float = 1e-3,
    predictor: str | StepFn = "ancestral",
    grid: str = "log_snr",
    progress: bool = False,
    allow_unobserved: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Samples of ``p(x_missing | x_observed)`` by the replacement method with resampling (Song et al.
    2021, appendix I.2; Lugmayr et al. 2022, Alg. 1 with jumps of one step; docs/math.md#conditional-sampling).

    Plain replacement (``resample=1``) conditions, at each noise level, on a fresh noisy draw of the
    observed entries rather than on the entries themselves, and so leans towards the unconditional
    law; resampling removes that bias only as ``resample`` grows (about as ``1 / resample`` on the
    mixtures of the tests, with ~50 steps needed besides), so the defaults spend a large budget.

    Args:
        score_fn: ``score_fn(x, t[B])``, the score of the joint marginal ``p_t``.
        x_obs: ``[B, ...]`` (``[B, d]`` or ``[B, C, H, W]``); only the observed entries are read, so the
            missing ones may hold anything, NaN included.
        mask: True where observed, any shape that broadcasts to ``x_obs`` (``[B, d]``, ``[d]``,
            ``[B, 1, H, W]``, ...); booleans or the integers 0/1.
        nfe: the budget of score evaluations. ``N = (nfe - 1) // resample`` steps on the time grid,
            each costing ``resample`` evaluations, then one for Tweedie's denoising, so
            ``info["nfe"] = N * resample + 1 <= nfe``; ``nfe`` must be at least ``resample + 1``.
        resample: ``R``: each step is taken ``R`` times, going back one step with the exact forward
            transition between takes (RePaint's ``U`` with jump length 1). ``1`` is plain replacement.
        generator: a ``torch.Generator`` or a ``KeyedNoise`` (each sample then gets the same draws
            whatever its batch: every draw is shaped like ``x_obs``).
        eps: the last time of the grid; the result is Tweedie's ``E[x_0 | x_eps]``.
        predictor: a name of ``samplers.PREDICTORS`` (default ``"ancestral"``) or a step function.
        grid: the kind of ``noise.time_grid`` from 1 to ``eps`` (default ``"log_snr"``: equal steps in
            log-SNR, which spends more of the steps at low noise than ``"uniform"``).
        allow_unobserved: accept a mask with no observed entry at all and sample the joint law with the
            same steps (no replacement), as the rows without one are sampled within a batch; for
            callers that split a larger batch into blocks (``Run.inpaint``).

    Returns ``(x, info)``: ``x`` shaped like ``x_obs`` whose observed entries are exactly ``x_obs``'s,
    and ``info`` with ``"nfe"`` (counted), ``"n_steps"``, ``"resample"`` and ``"times"``. When every
    entry is observed, ``x_obs`` comes back (a copy) with ``nfe = 0``. A mask with no observed entry at
    all raises ``ValueError`` (that is unconditional sampling: ``sample_pc``) unless ``allow_unobserved``;
    single rows without one are sampled from the joint law. Raises ``ValueError`` for a mask that does not broadcast, a
    non-finite observed entry, ``resample < 1`` or ``nfe < resample + 1``.
    """
    mask = _check_mask(x_obs, mask)
    if int(resample) != resample or resample < 1:
        raise ValueError(f"resample must be an integer >= 1, got {resample}")
    if int(nfe) != nfe or nfe < resample + 1:
        raise ValueError(
            f"nfe={nfe} is too small for resample={resample}: each step costs resample evaluations and "
            f"the final denoising one more, so pass nfe >= {resample + 1}"
        )
    if bool(mask.all()):
        return x_obs.clone(), {"nfe": 0, "n_steps": 0, "resample": int(resample), "times": None}
    if not (allow_unobserved or bool(mask.any())):
        raise ValueError("mask has no observed entry: that is unconditional sampling, use sample_pc")
    resample, n_steps = int(resample), (int(nfe) - 1) // int(resample)
    predict = _lookup(PREDICTORS, "predictor", predictor)
    score, count = counted(score_fn)
    x0 = torch.where(mask, x_obs, torch.zeros((), dtype=x_obs.dtype, device=x_obs.device))  # no NaN leaks
    grid = noise.time_grid(n_steps, eps=eps, kind=grid, sde=sde, dtype=x_obs.dtype, device=x_obs.device)
    batch = x_obs.shape[0]

    def observed_at(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` with the observed entries replaced by a forward draw ``m(t) x_obs + std(t) z``."""
        scale, std = sde.marginal(t[:1])
        return torch.where(mask, scale * x0 + std * randn_like(x, generator), x)

    x = observed_at(sde.prior_sample(x_obs.shape, generator, x_obs.dtype, x_obs.device), grid[:1])
    for i in tqdm(range(n_steps), disable=not progress, desc="conditional sampling"):
        t, t_next = grid[i].expand(batch), grid[i + 1].expand(batch)
        for r in range(resample):
            if r:  # RePaint's jump back: x_t = a x_{t_next} + G z, the exact forward transition
                a, g2, _, _ = _transition(sde, x, t, t_next)
                x = a * x + g2.sqrt() * randn_like(x, generator)
            x, _ = predict(score, sde, x, t, t_next, generator)
            x = observed_at(x, t_next)
    x = tweedie(score, sde, x, grid[-1].expand(batch))
    x = torch.where(mask, x_obs, x)
    return x, {"nfe": count[0], "n_steps": n_steps, "resample": resample, "times": grid}
