"""Reverse-time samplers for SDE score models (Song et al. 2021): predictor-corrector and probability-flow ODE.

A step function has the signature ``step(score_fn, sde, x, t, t_next, generator) -> (x, x_mean)``:
it moves ``x`` from time ``t`` to the earlier time ``t_next`` (both ``[B]``) and also returns the
step's mean (the state without the fresh noise). Predictors and correctors live in the plain dicts
``PREDICTORS`` and ``CORRECTORS``; correctors take the extra keyword ``snr``.

Every discrete step is derived from ``sde.marginal`` alone: between grid times ``t_next < t`` the
forward process has the exact Gaussian transition ``x_t = a x_{t_next} + G z`` with
``a = m(t) / m(t_next)`` and ``G² = std(t)² - a² std(t_next)²``. For VE that is SMLD's
``a = 1, G² = σ_t² - σ_{t_next}²``; for VP it is DDPM's ``a = sqrt(1 - β_i), G² = β_i``.
So no sampler asks which SDE it runs.

``score_fn(x, t[B]) -> [B, ...]`` is the score of ``p_t``; time runs from 1 (prior) down to ``t_end``.
Every sampler of the library has one shape, ``sample_x(score_fn, sde, x_T, budget_or_grid, *, ...,
callback=None, progress=False) -> (x, info)``: a number (of steps or evaluations, as each says) or a
time grid built by ``noise.time_grid``; ``info["nfe"]`` the counted score evaluations; ``callback``
receives ``{"i", "t", "x", "x_mean"}`` (``x_mean``: the state without the step's fresh noise).
For a class-conditional model, ``guided(score_fn, y, w)`` (from ``score``, re-exported here) is the
classifier-free guided score of label ``y``, a score function like any other; the samplers' ``nfe``
then counts guided evaluations, each of which costs two network evaluations when ``w != 0``.
Samplers run under ``torch.no_grad()`` (not ``inference_mode``), so a score that differentiates an
energy locally under ``torch.enable_grad()`` still works, and no autograd graph grows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from . import noise
from .noise import T_END
from .ode import ODE_METHODS, counted, ode_times, solve_ode
from .score import guided, posterior_mean
from .sde import SDE, ScoreFn
from .utils import Generator, append_dims, randn_like

__all__ = [
    "CORRECTORS",
    "ODE_METHODS",
    "PREDICTORS",
    "ancestral",
    "euler_maruyama",
    "guided",
    "langevin",
    "langevin_batch",
    "reverse_diffusion",
    "sample_ode",
    "sample_pc",
    "step_function",
    "transition",
    "tweedie",
]

StepFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _against(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example ``[B]`` (or 0-d) quantity as ``x``'s dtype, broadcast against ``x`` (``[B, 1, ...]``)."""
    return append_dims(value.to(x.dtype), x.ndim)


def transition(sde: SDE, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor):
    """The exact forward transition ``x_t = a x_{t_next} + G z`` between grid times ``t_next < t`` (both
    ``[B]``): ``a``, ``G²``, ``std(t)²`` and ``std(t_next)²``, each broadcast against ``x``."""
    scale, std = sde.marginal(t)
    scale_next, std_next = sde.marginal(t_next)
    a = scale / scale_next
    var, var_next = std**2, std_next**2
    g2 = var - a**2 * var_next
    return tuple(_against(v, x) for v in (a, g2, var, var_next))


def euler_maruyama(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    generator: Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler-Maruyama step of the reverse SDE (Song et al. 2021, eq. 6): ``x + (f - g² s) dt + g sqrt(|dt|) z``."""
    dt = _against(t_next - t, x)  # negative: time runs backwards
    x_mean = x + sde.reverse_drift(x, t, score_fn(x, t)) * dt
    return x_mean + _against(sde.diffusion(t), x) * (-dt).sqrt() * randn_like(x, generator), x_mean


def reverse_diffusion(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    generator: Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor (Song et al. 2021, eq. 46): ``x - f_i + G_i² s + G_i z``.

    The forward discretisation is the exact transition ``x_t = a x_{t_next} + G z``, so
    ``f_i = (a - 1) x`` and ``G_i² = std(t)² - a² std(t_next)²``.
    """
    a, g2, _, _ = transition(sde, x, t, t_next)
    x_mean = x - (a - 1) * x + g2 * score_fn(x, t)
    return x_mean + g2.sqrt() * randn_like(x, generator), x_mean


def ancestral(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    generator: Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral sampling (Ho et al. 2020, Alg. 2; Song et al. 2021, eqs. 47 and 50) from the posterior
    ``q(x_{t_next} | x_t, x_0)`` of the discretised forward process, ``x_0`` estimated by Tweedie.

    With ``x_t = a x_{t_next} + G z`` and ``x_{t_next} = m_next x_0 + std_next z'``, the posterior is
    Gaussian with variance ``std_next² G² / std²`` and, after substituting Tweedie's
    ``x_0 = (x_t + std² s) / m``, mean ``(x_t + G² s) / a``. VP (``a = sqrt(1 - β_i)``, ``G² = β_i``):
    DDPM's ``(x + β_i s) / sqrt(1 - β_i)`` with its posterior variance ``β̃_i``. VE (``a = 1``): SMLD's
    ``x + (σ_i² - σ_{i-1}²) s`` with variance ``σ_{i-1}² (σ_i² - σ_{i-1}²) / σ_i²``.
    """
    a, g2, var, var_next = transition(sde, x, t, t_next)
    x_mean = (x + g2 * score_fn(x, t)) / a
    return x_mean + (var_next * g2 / var).sqrt() * randn_like(x, generator), x_mean


def langevin(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    generator: Generator | None = None,
    snr: float = 0.16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Langevin corrector at time ``t`` (Song et al. 2021, Alg. 4): ``x + ε s + sqrt(2ε) z`` with the
    signal-to-noise step ``ε = 2 α (r std(t))²``, one per example.

    Song et al.'s rule ``ε = 2 α (r ||z|| / ||s||)²`` needs the typical size of the score. Under the
    forward process ``E||s||² ≤ d / std(t)²`` (the Fisher information of a Gaussian convolution), with
    equality wherever the noise dominates, and ``E||z||² = d``: so ``ε = 2 α (r std)²`` is that rule at
    the score's typical size, and it depends on nothing but ``t``. Per-example norms instead blow up near
    a mode (``||s|| → 0``; in 2-D a few steps jump by tens of units) and batch-averaged ones make each
    sample depend on its batch (``langevin_batch``). ``α = (m(t) / m(t_next))²`` is the squared scale of
    the step to the next grid time: 1 for VE and ``1 - β_i`` for the discretised VP, as in Song et al.
    """
    alpha, std = _corrector_scales(sde, x, t, t_next)
    step = 2 * alpha * (snr * std) ** 2
    x_mean = x + step * score_fn(x, t)
    return x_mean + (2 * step).sqrt() * randn_like(x, generator), x_mean


def langevin_batch(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    generator: Generator | None = None,
    snr: float = 0.16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Langevin corrector with Song et al.'s step ``ε = 2 α (r ||z|| / ||s||)²`` (their Alg. 4 and code),
    the norms averaged over the batch: each sample's step then depends on the rest of its batch."""
    alpha, _ = _corrector_scales(sde, x, t, t_next)
    score = score_fn(x, t)
    z = randn_like(x, generator)
    score_norm = score.flatten(1).norm(dim=1).mean()
    noise_norm = z.flatten(1).norm(dim=1).mean()
    step = 2 * alpha * (snr * noise_norm / score_norm) ** 2
    x_mean = x + step * score
    return x_mean + (2 * step).sqrt() * z, x_mean


def _corrector_scales(sde: SDE, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor):
    """``α = (m(t) / m(t_next))²`` and ``std(t)``, broadcast against ``x``."""
    scale, std = sde.marginal(t)
    scale_next, _ = sde.marginal(t_next)
    return _against((scale / scale_next) ** 2, x), _against(std, x)


PREDICTORS: dict[str, StepFn] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
}
CORRECTORS: dict[str, StepFn] = {"langevin": langevin, "langevin_batch": langevin_batch}


def tweedie(score_fn: ScoreFn, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Tweedie's ``E[x_0 | x_t] = (x_t + std(t)² s(x_t, t)) / m(t)`` of a score function (``posterior_mean``)."""
    return posterior_mean(x, score_fn(x, t), *sde.marginal(t))


def step_function(table: dict[str, StepFn], kind: str, name: str | StepFn) -> StepFn:
    """The step function ``name`` of ``table`` (``PREDICTORS`` or ``CORRECTORS``; ``kind`` names it in the
    error), or ``name`` itself when it is a function."""
    if callable(name):
        return name
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}")
    return table[name]


@torch.no_grad()
def sample_pc(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    steps_or_grid: int | torch.Tensor,
    *,
    predictor: str | StepFn = "reverse_diffusion",
    corrector: str | StepFn | None = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    denoise: bool = True,
    t_end: float = T_END,
    generator: Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1) from ``x_T`` (prior samples at ``t = 1``).

    The grid is ``steps_or_grid``: a number of uniform steps from 1 to ``t_end``, or a time grid. For each
    interval ``t_i > t_{i+1}``: ``n_corrector_steps`` corrector steps at ``t_i``, then one predictor step
    to ``t_{i+1}``. With ``denoise`` the result is Tweedie's ``E[x_0 | x_{t_end}]`` at the last time,
    which removes the noise of level ``std(t_end)`` left by the last step. Returns ``x`` and ``info``
    with ``"nfe"`` and ``"times"``; ``callback`` receives ``{"i", "t", "x", "x_mean"}`` after every
    predictor step.
    """
    predict = step_function(PREDICTORS, "predictor", predictor)
    correct = None if corrector is None else step_function(CORRECTORS, "corrector", corrector)
    grid = noise.as_grid(steps_or_grid, x_T, t_end=t_end)
    score, nfe = counted(score_fn)
    x = x_T
    for i in tqdm(range(grid.numel() - 1), disable=not progress, desc="sampling"):
        t = grid[i].expand(x.shape[0])
        t_next = grid[i + 1].expand(x.shape[0])
        if correct is not None:
            for _ in range(n_corrector_steps):
                x, _ = correct(score, sde, x, t, t_next, generator, snr=snr)
        x, x_mean = predict(score, sde, x, t, t_next, generator)
        if callback is not None:
            callback({"i": i, "t": float(grid[i + 1]), "x": x, "x_mean": x_mean})
    if denoise:
        x = tweedie(score, sde, x, grid[-1].expand(x.shape[0]))
    return x, {"nfe": nfe[0], "times": grid}


@torch.no_grad()
def sample_ode(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    steps_or_grid: int | torch.Tensor | None = None,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float = T_END,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Probability-flow ODE sampler (Song et al. 2021, eq. 13): integrate ``dx/dt = f - ½ g² s`` from 1 to ``t_end``.

    ``method``: ``"dopri5"`` (adaptive, ``rtol``/``atol``; ``steps_or_grid`` None or the times to report
    at), or the fixed-step ``"rk4"``, ``"heun"``, ``"euler"`` (orders 4, 2, 1) on ``steps_or_grid``
    uniform steps or on a time grid. Deterministic: it draws no random numbers. Returns the samples and
    ``info`` with ``"nfe"`` (score evaluations), ``"times"`` and, with ``return_trajectory``,
    ``"trajectory"`` (the state at every time of the grid, ``[T, B, ...]``). ``callback`` receives
    ``{"i", "t", "x", "x_mean"}`` for every grid time after the first, once the solve is done;
    ``progress`` counts the score evaluations.
    """
    times = ode_times(method, steps_or_grid, t_end, x_T)
    score, nfe = counted(score_fn)
    bar = tqdm(disable=not progress, desc="sampling (score evaluations)")

    def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bar.update()
        return sde.reverse_drift(x, t, score(x, t), probability_flow=True)

    xs = solve_ode(velocity, x_T, times, method, rtol, atol, t_min=float(times.min()))
    bar.close()
    if callback is not None:
        for i in range(1, times.numel()):
            callback({"i": i - 1, "t": float(times[i]), "x": xs[i], "x_mean": xs[i]})
    info = {"nfe": nfe[0], "times": times}
    if return_trajectory:
        info["trajectory"] = xs
    return xs[-1], info
