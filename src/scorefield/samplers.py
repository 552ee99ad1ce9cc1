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

``score_fn(x, t[B]) -> [B, ...]`` is the score of ``p_t``; time runs from 1 (prior) down to ``eps``.
For a class-conditional model, ``guided(score_fn, y, w)`` (from ``score``, re-exported here) is the
classifier-free guided score of label ``y``, a score function like any other; the samplers' ``nfe``
then counts guided evaluations, each of which costs two network evaluations when ``w != 0``.
Samplers run under ``torch.no_grad()`` (not ``inference_mode``), so a score that differentiates an
energy locally under ``torch.enable_grad()`` still works, and no autograd graph grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from . import noise
from .ode import ODE_METHODS, counted, ode_times, sampling_grid, solve_ode
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
    "sample_dpm",
    "sample_ode",
    "sample_pc",
    "tweedie",
]

StepFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _against(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example ``[B]`` (or 0-d) quantity as ``x``'s dtype, broadcast against ``x`` (``[B, 1, ...]``)."""
    return append_dims(value.to(x.dtype), x.ndim)


def _transition(sde: SDE, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor):
    """The exact forward transition ``x_t = a x_{t_next} + G z`` between grid times: ``a``, ``G²``,
    ``std(t)²`` and ``std(t_next)²``, each broadcast against ``x``."""
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
    a, g2, _, _ = _transition(sde, x, t, t_next)
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
    a, g2, var, var_next = _transition(sde, x, t, t_next)
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


def _lookup(table: dict[str, StepFn], kind: str, name: str | StepFn) -> StepFn:
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
    n_steps: int | None,
    predictor: str | StepFn = "reverse_diffusion",
    corrector: str | StepFn | None = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    denoise: bool = True,
    eps: float = 1e-3,
    time_grid: torch.Tensor | None = None,
    generator: Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1) from ``x_T`` (prior samples at ``t = 1``).

    For each grid interval ``t_i > t_{i+1}``: ``n_corrector_steps`` corrector steps at ``t_i``, then
    one predictor step to ``t_{i+1}``. The grid is ``time_grid`` or ``n_steps`` uniform steps from 1
    to ``eps``. With ``denoise`` the result is Tweedie's ``E[x_0 | x_eps]`` at the last time, which
    removes the noise of level ``std(eps)`` left by the last step. ``callback`` receives
    ``{"i", "t", "x", "x_mean"}`` after every predictor step.
    """
    predict = _lookup(PREDICTORS, "predictor", predictor)
    correct = None if corrector is None else _lookup(CORRECTORS, "corrector", corrector)
    grid = sampling_grid(n_steps, eps, time_grid, x_T)
    x = x_T
    for i in tqdm(range(grid.numel() - 1), disable=not progress, desc="sampling"):
        t = grid[i].expand(x.shape[0])
        t_next = grid[i + 1].expand(x.shape[0])
        if correct is not None:
            for _ in range(n_corrector_steps):
                x, _ = correct(score_fn, sde, x, t, t_next, generator, snr=snr)
        x, x_mean = predict(score_fn, sde, x, t, t_next, generator)
        if callback is not None:
            callback({"i": i, "t": float(grid[i + 1]), "x": x, "x_mean": x_mean})
    if denoise:
        x = tweedie(score_fn, sde, x, grid[-1].expand(x.shape[0]))
    return x


@torch.no_grad()
def sample_ode(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    method: str = "dopri5",
    n_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    time_grid: torch.Tensor | None = None,
    return_trajectory: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Probability-flow ODE sampler (Song et al. 2021, eq. 13): integrate ``dx/dt = f - ½ g² s`` from 1 to ``eps``.

    ``method``: ``"dopri5"`` (adaptive, ``rtol``/``atol``), or the fixed-step ``"rk4"``, ``"heun"``,
    ``"euler"`` (orders 4, 2, 1) on ``n_steps`` uniform steps or on ``time_grid``. Returns the
    samples and ``info`` with ``"nfe"`` (score evaluations), ``"times"`` and, with
    ``return_trajectory``, ``"trajectory"`` (the state at every time of the grid, ``[T, B, ...]``).
    """
    times = ode_times(method, n_steps, eps, time_grid, x_T)
    score, nfe = counted(score_fn)

    def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sde.reverse_drift(x, t, score(x, t), probability_flow=True)

    xs = solve_ode(velocity, x_T, times, method, rtol, atol, t_min=float(times.min()))
    info = {"nfe": nfe[0], "times": times}
    if return_trajectory:
        info["trajectory"] = xs
    return xs[-1], info


def _dpm_coefficients(sde: SDE, grid: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
    """Per grid time, as float64 python numbers: ``scale``, ``std`` and the steps ``h_i = λ_{i+1} - λ_i``
    of the log-SNR ``λ = log(scale / std)`` (positive: ``λ`` grows towards the data)."""
    scale, std = sde.marginal(grid.detach().to("cpu", torch.float64))
    lam = torch.log(scale) - torch.log(std)
    return scale.tolist(), std.tolist(), lam.diff().tolist()


@torch.no_grad()
def sample_dpm(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    n_steps: int | None,
    order: int = 2,
    eps: float | None = None,
    grid: str = "uniform",
    time_grid: torch.Tensor | None = None,
    denoise: bool = True,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): a multistep exponential integrator of the probability-flow ODE.

    With ``x_t = m(t) x_0 + std(t) z`` and the denoiser ``D = (x + std² s) / m`` (Tweedie), the
    probability-flow ODE of every linear SDE reads ``d(x / std)/dλ = e^λ D`` in the log-SNR
    ``λ = log(m / std)``: the linear part is solved exactly and only ``D`` is extrapolated. A step
    from ``t_i`` to ``t_{i+1}`` (``h = λ_{i+1} - λ_i``) is
    ``x ← (std_{i+1} / std_i) x - m_{i+1} (e^{-h} - 1) D̂``, where ``D̂`` is ``D_i`` (``order=1``:
    DDIM) or the linear extrapolation ``(1 + 1/(2r)) D_i - 1/(2r) D_{i-1}`` with ``r = h_{i-1} / h``
    (``order=2``; its first step is first order). Only ``sde.marginal`` is used, so VE (``m = 1``),
    VP and sub-VP share this code.

    The grid is ``time_grid`` or ``n_steps`` steps of ``noise.time_grid(kind=grid)`` (``"uniform"``
    in ``t``, ``"log_snr"``, ``"edm"``) from 1 to ``eps``. Each step costs one score evaluation.
    With ``denoise`` the result is Tweedie's ``E[x_0 | x_eps]``, one more evaluation: the
    first-order step from ``eps`` to ``std = 0``. ``eps=None`` means ``1 / (n_steps + 1)`` with
    ``denoise`` (the steps and the denoising step then make one uniform grid from 1 to 0, Lu et
    al.'s time-uniform grid; ending the ODE at a small ``eps`` spends steps where ``D`` hardly
    moves) and ``1e-3`` without. Returns ``x`` and ``info`` with ``"nfe"`` and ``"times"``.
    ``callback`` receives ``{"i", "t", "x", "denoised"}`` after every step.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if time_grid is None:
        if n_steps is None:
            raise ValueError("pass n_steps (or an explicit time_grid) for sample_dpm")
        if eps is None:
            eps = 1 / (n_steps + 1) if denoise else 1e-3
        time_grid = noise.time_grid(n_steps, eps=eps, kind=grid, sde=sde, dtype=torch.float64)
    times = sampling_grid(n_steps, 0.0, time_grid, x_T)  # checks the grid; eps is not used once it is given
    scale, std, h = _dpm_coefficients(sde, torch.as_tensor(time_grid, dtype=torch.float64))
    score, nfe = counted(score_fn)
    x, previous = x_T, None  # previous: D_{i-1}
    for i in tqdm(range(len(h)), disable=not progress, desc="sampling"):
        denoised = posterior_mean(x, score(x, times[i].expand(x.shape[0])), scale[i], std[i])  # D_i
        if order == 2 and previous is not None:  # Lu et al. 2022b, Alg. 2
            d_hat = denoised + (denoised - previous) * (h[i] / (2 * h[i - 1]))
        else:
            d_hat = denoised
        x = (std[i + 1] / std[i]) * x - (scale[i + 1] * math.expm1(-h[i])) * d_hat
        previous = denoised
        if callback is not None:
            callback({"i": i, "t": float(times[i + 1]), "x": x, "denoised": denoised})
    if denoise:
        x = tweedie(score, sde, x, times[-1].expand(x.shape[0]))
    return x, {"nfe": nfe[0], "times": times}
