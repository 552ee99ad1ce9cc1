"""Multistep exponential integrators of the probability-flow ODE in the log-SNR: DPM-Solver++ of orders 1-3
(Lu et al. 2022b) and UniPC (Zhao et al. 2023), each with the UniC corrector on request.

With ``x_t = m_t x_0 + std_t z`` and the data prediction ``D = E[x_0 | x_t]`` (Tweedie), every linear
SDE's probability-flow ODE reads ``d(x / std)/dλ = e^λ D`` in ``λ = log(m / std)``, so a step from ``s``
to ``t`` (``h = λ_t - λ_s > 0``) is exactly ``x_t = (std_t / std_s) x_s + std_t ∫_{λ_s}^{λ_t} e^λ D dλ``;
a solver only approximates ``D`` along the step, from the values it has already paid for at the last
grid times (docs/math.md#dpm-solver). Only ``sde.marginal`` is used, so VE, VP and sub-VP share the code.

A run on the grid ``t_0 = 1 > t_1 > ... > t_K`` evaluates the score once per grid time, ``K + 1``
evaluations in all: at ``t_i`` it computes ``D_i``, optionally corrects ``x_i`` with UniC (which reuses
``D_i``, at no extra cost), then predicts ``x_{i+1}``; the answer is ``D_K``, the denoised state at the
last time (the step from ``t_K`` to ``std = 0``, where every solver reduces to ``D``).

- ``"dpm++"``: DPM-Solver++(pM): ``D`` extrapolated by its divided differences in ``λ`` (order 2 is
  the midpoint form of Lu et al.'s Alg. 2, order 3 their multistep third-order update).
- ``"unipc"``: UniP-p, the predictor of Zhao et al. (Alg. 2 and 3 in the data-prediction form) with
  ``B(h) = h`` (``"bh1"``) or ``e^h - 1`` (``"bh2"``); UniP-2 with ``bh2`` equals DPM-Solver++(2M).

The order ramps up over the first steps (only ``i + 1`` values exist at step ``i``) and, with
``lower_order_final``, down over the last ones (a step of order ``p`` needs ``p`` steps left, counting
the final step to ``std = 0``), as in diffusers' schedulers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from . import noise
from .distributions import GaussianMixture
from .gaussian import gaussian_flow, gaussian_start
from .ode import counted
from .score import posterior_mean
from .sde import SDE, ScoreFn

__all__ = [
    "FAST_GRIDS",
    "FAST_SOLVERS",
    "GAUSSIAN_GRIDS",
    "GAUSSIAN_START_MAX_NFE",
    "SOLVERS",
    "VARIANTS",
    "fast_grid",
    "log_snr_coefficients",
    "optimize_grid",
    "sample_fast",
    "sde_family",
    "sample_multistep",
]

SOLVERS = ("dpm++", "unipc")
VARIANTS = ("bh1", "bh2")


def log_snr_coefficients(sde: SDE, grid: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
    """Per grid time, as float64 Python numbers: ``m``, ``std`` and ``λ = log(m / std)``."""
    scale, std = sde.marginal(grid.detach().to("cpu", torch.float64))
    lam = torch.log(scale) - torch.log(std)
    return scale.tolist(), std.tolist(), lam.tolist()


def _unipc_weights(
    h: float, rks: list[float], variant: str
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """``h φ_1(-h) = e^{-h} - 1``, ``B(h)``, the matrix ``R`` (rows ``r_k^{i-1}``) and the vector ``b`` of
    UniPC's order conditions (Zhao et al. 2023, eq. 8 and Alg. 2/3), in the data-prediction form."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k, factorial = h_phi_1 / hh - 1.0, 1
    r = torch.tensor(rks, dtype=torch.float64)
    rows, b = [], []
    for i in range(1, len(rks) + 1):
        rows.append(r ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, torch.stack(rows), torch.tensor(b, dtype=torch.float64)


def _differences(lam: list[float], history: list[tuple[int, torch.Tensor]], s0: int, h: float, n: int):
    """``r_k = (λ_{s_k} - λ_{s0}) / h`` and ``(D_{s_k} - D_{s0}) / r_k`` for the ``n`` values before ``D_{s0}``."""
    _, d0 = history[-1]
    rks, diffs = [], []
    for index, value in reversed(history[-1 - n : -1]):
        rk = (lam[index] - lam[s0]) / h
        rks.append(rk)
        diffs.append((value - d0) / rk)
    return rks, diffs


def _combine(weights: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor | float:
    return sum(float(w) * term for w, term in zip(weights, terms, strict=True)) if terms else 0.0


def _unipc_predict(x, lam, scale, std, history, s0: int, t: int, order: int, variant: str):
    """UniP-``order`` from grid time ``s0`` (whose ``D`` is the last of ``history``) to ``t``."""
    h = lam[t] - lam[s0]
    rks, diffs = _differences(lam, history, s0, h, order - 1)
    h_phi_1, b_h, rows, b = _unipc_weights(h, [*rks, 1.0], variant)
    if order == 2:
        rhos = torch.tensor([0.5], dtype=torch.float64)
    elif order > 2:
        rhos = torch.linalg.solve(rows[:-1, :-1], b[:-1])
    else:
        rhos = torch.zeros(0, dtype=torch.float64)
    d0 = history[-1][1]
    base = (std[t] / std[s0]) * x - (scale[t] * h_phi_1) * d0
    return base - (scale[t] * b_h) * _combine(rhos, diffs)


def _unic_correct(x_prev, d_t, lam, scale, std, history, s0: int, t: int, order: int, variant: str):
    """UniC-``order`` (Zhao et al. 2023, Alg. 1): the step ``s0 → t`` redone with ``D_t`` as well, which
    raises its order of accuracy by one; ``history`` still ends with ``D_{s0}``."""
    h = lam[t] - lam[s0]
    rks, diffs = _differences(lam, history, s0, h, order - 1)
    h_phi_1, b_h, rows, b = _unipc_weights(h, [*rks, 1.0], variant)
    rhos = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(rows, b)
    d0 = history[-1][1]
    base = (std[t] / std[s0]) * x_prev - (scale[t] * h_phi_1) * d0
    return base - (scale[t] * b_h) * (_combine(rhos[:-1], diffs) + float(rhos[-1]) * (d_t - d0))


def _dpmpp_predict(x, lam, scale, std, history, s0: int, t: int, order: int, variant: str):
    """DPM-Solver++(``order``M) from ``s0`` to ``t`` (Lu et al. 2022b; orders 1-3)."""
    h = lam[t] - lam[s0]
    d0 = history[-1][1]
    e = math.expm1(-h)  # e^{-h} - 1
    out = (std[t] / std[s0]) * x - (scale[t] * e) * d0
    if order == 1:
        return out
    (i1, d1), r0 = history[-2], (lam[s0] - lam[history[-2][0]]) / h
    first_0 = (d0 - d1) / r0
    if order == 2:
        return out - (0.5 * scale[t] * e) * first_0
    (i2, d2) = history[-3]
    r1 = (lam[i1] - lam[i2]) / h
    first_1 = (d1 - d2) / r1
    first = first_0 + (r0 / (r0 + r1)) * (first_0 - first_1)
    second = (first_0 - first_1) / (r0 + r1)
    return out + (scale[t] * (e / h + 1.0)) * first - (scale[t] * ((e + h) / h**2 - 0.5)) * second


PREDICT = {"dpm++": _dpmpp_predict, "unipc": _unipc_predict}


@torch.no_grad()
def sample_multistep(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    nfe_or_grid: int | torch.Tensor,
    *,
    solver: str = "unipc",
    order: int = 3,
    variant: str = "bh2",
    corrector: bool = True,
    lower_order_final: bool = True,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Sample by a multistep log-SNR solver (DPM-Solver++, Lu et al. 2022b; UniPC, Zhao et al. 2023) on a
    decreasing time grid from 1: ``nfe_or_grid`` is the grid, or a number of score evaluations on
    ``fast_grid(nfe, sde)``. One evaluation per grid time; returns the denoised ``D`` at the last time
    and ``info`` (``"nfe"``, ``"times"``). Deterministic: it draws no random numbers.

    ``solver``: ``"unipc"`` (UniP, ``variant`` ``"bh1"`` or ``"bh2"``) or ``"dpm++"``; ``order`` 1-3;
    ``corrector``: apply UniC after every predictor step (free: it reuses the next evaluation).
    ``callback`` receives ``{"i", "t", "x", "x_mean"}`` after each evaluation (``x_mean`` is ``x``).
    """
    if solver not in PREDICT:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if not isinstance(nfe_or_grid, torch.Tensor):
        nfe_or_grid = fast_grid(nfe_or_grid, sde)
    times = noise.as_grid(nfe_or_grid, x_T)
    scale, std, lam = log_snr_coefficients(sde, times)
    score, nfe = counted(score_fn)
    predict = PREDICT[solver]
    last = len(lam) - 1
    x, x_prev, history, used = x_T, None, [], 0  # history: (grid index, D) of the last `order` times
    for i in tqdm(range(last + 1), disable=not progress, desc="sampling"):
        denoised = posterior_mean(x, score(x, times[i].expand(x.shape[0])), scale[i], std[i])
        if corrector and 0 < i < last:  # at the last time the answer is D_K itself
            x = _unic_correct(x_prev, denoised, lam, scale, std, history, i - 1, i, used, variant)
        history = [*history, (i, denoised)][-order:]
        if callback is not None:
            callback({"i": i, "t": float(times[i]), "x": x, "x_mean": x})
        if i == last:
            break
        used = min(order, len(history), last - i + 1 if lower_order_final else order)  # + the step to 0
        x_prev, x = x, predict(x, lam, scale, std, history, i, i + 1, used, variant)
    return history[-1][1], {"nfe": nfe[0], "times": times}


# sample_fast's solvers by name. "unipc" (UniP with UniC, of the order and variant FAST_GRIDS gives the
# budget) is the default.
FAST_SOLVERS: dict[str, dict] = {
    "unipc": {"solver": "unipc", "corrector": True},
    "unipc2": {"solver": "unipc", "order": 2, "corrector": True},
    "unipc3": {"solver": "unipc", "order": 3, "corrector": True},
    "dpm++": {"solver": "dpm++", "order": 3, "corrector": False},
    "dpm++2": {"solver": "dpm++", "order": 2, "corrector": False},
    "ddim": {"solver": "dpm++", "order": 1, "corrector": False},
}
# By SDE family (sde_family: "VE" leaves the data unscaled; "VP" holds VP and sub-VP, which both start at
# the noise level 152) and budget (NFE): the default UniPC's order and variant, and the grid's noise
# levels sigma = std / m (noise.noise_level), a ladder from the SDE's level at the start to sigma_end
# spaced as Karras et al.'s with exponent rho (math.inf: equal steps in log-SNR), of which only the first
# level lies above sigma_cap (fast_grid). Levels, not times: what sets a step's error is the noise against
# the data's scale, and the SDEs reach a level at unrelated times. The cap spends one evaluation on the
# stretch where the noise dwarfs data of unit scale and D is nearly their mean (a VE SDE's sigma_max of a
# few tens stays below it). The answer is D at sigma_end, Tweedie's step there: stopping early shrinks
# the samples towards their posterior means, and sigma_end falls as the budget grows and the solver's
# error over the last steps with it. Chosen on bench_samplers' tuning problems (a 2-D and a 16-D mixture
# under each SDE) by the smallest worst ratio to the best peer's RMS over the family's problems; its
# confirmation problems played no part. That RMS forgives a high sigma_end: D there is a posterior mean,
# which hedges between the modes a few draws switch to; a trained model's samples lose their detail to
# it instead (bench_digits, started at t = 1: Fréchet distance 2.3x the floor at 5 evaluations with
# sigma_end 0.8, 1.6x with 0.4). VP's row 8 is the level where both held (0.3: the digits' distance from
# 1.36x to 1.20x its floor, the tuning problems' worst ratio from 0.92 to 0.99); at 5 the RMS wanted
# 0.6-0.8 (1.26-1.29 against 1.42 at 0.4), and a run's samples take the Gaussian start (GAUSSIAN_GRIDS).
# Order 2 at 5 evaluations: order 3's extrapolation over so few, long steps sent a guided trained
# model's samples of one class to the other (tests/test_guidance.py), and e^h - 1 there for the same
# reason. Rows 30 and 50 continue sigma_end's fall (not benchmarked against peers). Levels are
# absolute: data of about unit scale, as the SDEs' own levels assume.
FAST_GRIDS: dict[str, dict[int, tuple[int, str, float, float, float]]] = {
    "VE": {
        5: (2, "bh2", 30.0, 0.3, math.inf),
        8: (3, "bh2", 30.0, 0.3, math.inf),
        10: (3, "bh2", 30.0, 0.2, 12.0),
        15: (3, "bh2", 30.0, 0.1, 7.0),
        20: (3, "bh2", 30.0, 0.05, 5.0),
        30: (3, "bh2", 30.0, 0.025, 5.0),
        50: (3, "bh2", 30.0, 0.01, 5.0),
    },
    "VP": {
        5: (2, "bh2", 20.0, 0.8, 7.0),
        8: (3, "bh2", 20.0, 0.3, math.inf),
        10: (3, "bh2", 30.0, 0.2, math.inf),
        15: (3, "bh2", 30.0, 0.15, math.inf),
        20: (3, "bh2", 30.0, 0.1, math.inf),
        30: (3, "bh2", 30.0, 0.05, math.inf),
        50: (3, "bh2", 30.0, 0.02, math.inf),
    },
}
# With the data's moments, up to GAUSSIAN_START_MAX_NFE evaluations (a budget GAUSSIAN_GRIDS tabulates or
# one between), the Gaussian start hands over where the data's largest variance is snr times the noise's
# (gaussian_start), and the ladder runs from the hand-over's level, sqrt(largest variance / snr) on every
# SDE, to sigma_end with exponent rho: per SDE family and budget (snr, sigma_end, rho); order, variant
# and cap as in FAST_GRIDS. The hand-over leaves the budget a short stretch of levels, whose steps are
# short enough to end lower than FAST_GRIDS' rows from t = 1. Under VP the rows were chosen on
# bench_samplers' tuning problems given their moments together with the digits preset's trained model
# (bench_digits, which samples this way), whose Fréchet distance to the test split rises with sigma_end
# (at 5 evaluations 2.2x its floor at 0.8, 1.35x at 0.4, 1.14x at 0.2, measured with snr 0.1 and rho
# 7): sigma_end 0.25 with rho 3 (steps spread towards the hand-over) and a later hand-over (snr 0.3)
# took the tuning problems' worst ratio at 5 evaluations from 1.08 to 0.92 and the digits to 1.17x;
# at 8, 0.2 in equal log-SNR steps held the worst ratio (0.74 to 0.73) and the digits fell from 1.35x
# to 1.16x. Under VE (not measured on a trained model) the rows repeat FAST_GRIDS' with snr 0.1. From
# 10 evaluations the start at 1 did better on the 16-D tuning problems, whose flow departs from their
# Gaussian's at the hand-over by more than the solver's error.
GAUSSIAN_GRIDS: dict[str, dict[int, tuple[float, float, float]]] = {
    "VE": {5: (0.1, 0.3, math.inf), 8: (0.1, 0.3, math.inf)},
    "VP": {5: (0.3, 0.25, 3.0), 8: (0.1, 0.2, math.inf)},
}
GAUSSIAN_START_MAX_NFE = 8


def _interpolate(table: dict[int, tuple], nfe: int) -> tuple[float, tuple, tuple]:
    """The weight of ``nfe`` between its neighbouring budgets of ``table`` (linear in ``log nfe``, held at
    the ends) and those budgets' rows."""
    budgets = sorted(table)
    lo = max([b for b in budgets if b <= nfe], default=budgets[0])
    hi = min([b for b in budgets if b >= nfe], default=budgets[-1])
    w = 0.0 if lo == hi else (math.log(nfe) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return w, table[lo], table[hi]


def sde_family(sde: SDE) -> str:
    """``"VE"`` for an SDE that leaves the data unscaled (``m = 1``), ``"VP"`` for one that shrinks them
    (VP, sub-VP): the row of ``FAST_GRIDS`` it samples with."""
    scale, _ = sde.marginal(torch.tensor(1.0, dtype=torch.float64))
    return "VE" if float(scale) == 1.0 else "VP"


def _log_between(w: float, a: float, b: float) -> float:
    return math.exp((1 - w) * math.log(a) + w * math.log(b))


def _rho_between(w: float, a: float, b: float) -> float:
    inv_rho = (1 - w) / a + w / b
    return math.inf if inv_rho == 0 else 1 / inv_rho


def _fast_setting(nfe: int, sde: SDE) -> tuple[int, str, float, float, float]:
    """``sample_fast``'s order, variant, ``sigma_cap``, ``sigma_end`` and ``rho`` at ``nfe`` on ``sde``
    (``FAST_GRIDS[sde_family(sde)]``):
    ``log sigma_cap``, ``log sigma_end`` and ``1 / rho`` interpolated linearly in ``log nfe`` between the
    tabulated budgets, the order and variant of the budget below."""
    if int(nfe) != nfe or nfe < 2:
        raise ValueError(f"nfe must be an integer >= 2, got {nfe}")
    w, (order, variant, cap_lo, end_lo, rho_lo), (_, _, cap_hi, end_hi, rho_hi) = _interpolate(
        FAST_GRIDS[sde_family(sde)], nfe
    )
    return (
        order,
        variant,
        _log_between(w, cap_lo, cap_hi),
        _log_between(w, end_lo, end_hi),
        _rho_between(w, rho_lo, rho_hi),
    )


def _gaussian_setting(nfe: int, sde: SDE) -> tuple[float, float, float]:
    """The Gaussian start's ``snr``, ``sigma_end`` and ``rho`` at ``nfe`` on ``sde``
    (``GAUSSIAN_GRIDS[sde_family(sde)]``), interpolated as ``_fast_setting``'s (``log snr`` too)."""
    w, (snr_lo, end_lo, rho_lo), (snr_hi, end_hi, rho_hi) = _interpolate(GAUSSIAN_GRIDS[sde_family(sde)], nfe)
    return _log_between(w, snr_lo, snr_hi), _log_between(w, end_lo, end_hi), _rho_between(w, rho_lo, rho_hi)


def fast_grid(
    nfe: int,
    sde: SDE,
    *,
    moments: GaussianMixture | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``sample_fast``'s default grid of ``nfe`` times, placed by noise level so that it holds on every SDE
    (docs/math.md#multistep-solvers-and-few-step-sampling).

    The first time is 1, where the levels follow Karras et al.'s ladder ``noise.time_grid(kind="edm")``
    from the SDE's level there to ``sigma_end`` with the exponent ``rho`` of ``FAST_GRIDS``; when that
    ladder's second level lies above ``sigma_cap``, the other ``nfe - 1`` levels are the ladder from
    ``sigma_cap`` instead, so a long stretch of noise that dwarfs the data costs one step. With the
    data's ``moments`` (up to ``GAUSSIAN_START_MAX_NFE`` evaluations) the first time is the Gaussian
    start's hand-over ``gaussian_start(sde, moments, snr)`` and the ladder runs from the level there to
    the ``sigma_end`` with the ``rho`` of ``GAUSSIAN_GRIDS``. The last time is where ``sde`` reaches
    ``sigma_end``, held at or above ``noise.T_END``."""
    _, _, cap, sigma_end, rho = _fast_setting(nfe, sde)
    start = 1.0
    if moments is not None and nfe <= GAUSSIAN_START_MAX_NFE:
        snr, sigma_end, rho = _gaussian_setting(nfe, sde)
        start = gaussian_start(sde, moments, snr)
    return _ladder(sde, nfe, start, cap, sigma_end, rho).to(dtype=dtype, device=device)


def _ladder(sde: SDE, nfe: int, start: float, cap: float, sigma_end: float, rho: float) -> torch.Tensor:
    """``nfe`` times (float64) from ``start`` whose noise levels follow Karras et al.'s ladder to
    ``sigma_end`` (``fast_grid``), the levels after the first held at or below ``cap``."""
    t_end = max(
        float(noise.time_at_noise_level(sde, torch.tensor(sigma_end, dtype=torch.float64))), noise.T_END
    )
    if start <= t_end:
        start = 1.0  # data so narrow that the Gaussian would carry them past the grid's end: start at 1
    top = float(noise.noise_level(sde, torch.tensor(start, dtype=torch.float64)))
    if not top > sigma_end:
        raise ValueError(
            f"the SDE's noise level at t = {start:.3g} ({top:.3g}) is below the level where few-step "
            f"sampling ends ({sigma_end:.3g}); raise sigma_max or pass a time grid"
        )

    def ladder(n_steps: int, t_start: float) -> torch.Tensor:
        return noise.time_grid(
            n_steps, sde, kind="edm", t_start=t_start, t_end=t_end, rho=rho, dtype=torch.float64
        )

    times = ladder(int(nfe) - 1, start)
    if nfe > 2 and float(noise.noise_level(sde, times[1])) > cap:
        t_cap = float(noise.time_at_noise_level(sde, torch.tensor(cap, dtype=torch.float64), t_end, start))
        times = torch.cat([times[:1], ladder(int(nfe) - 2, t_cap)])
    return times


@torch.no_grad()
def sample_fast(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    nfe_or_grid: int | torch.Tensor,
    *,
    solver: str | None = None,
    moments: GaussianMixture | None = None,
    components: int | torch.Tensor | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Samples for a budget of score evaluations (UniPC, Zhao et al. 2023, on a tuned grid): denoised
    ``x_0`` from prior draws ``x_T`` (at ``t = 1``, already scaled by ``sde.prior_std``) and ``info`` with
    the honest count ``"nfe"`` (never more than the budget), ``"solver"``, ``"order"``, ``"variant"``,
    ``"times"`` and ``"start"``.

    ``nfe_or_grid``: the budget ``nfe`` (at least 2; one evaluation at ``t = 1`` only returns the data's
    mean), spent on ``fast_grid(nfe, sde, moments=moments)``, or a grid of ``nfe`` decreasing times from
    1 or below (one ``optimize_grid`` fitted to a model). ``solver=None`` takes UniPC with the UniC
    corrector of the order and variant ``FAST_GRIDS`` gives the budget. Other names: ``FAST_SOLVERS``
    (``"unipc2"``, ``"unipc3"``, ``"dpm++"`` for DPM-Solver++(3M), ``"dpm++2"``, ``"ddim"``). Every
    solver here is deterministic: it takes no generator.

    ``moments`` (the data's mean and covariance, ``gaussian.data_moments``; a run stores them) turn on
    the Gaussian start: ``x_T`` is carried from 1 to the grid's first time by the exact flow of the data's
    Gaussian (``gaussian_flow``, no evaluation), and the budget is spent from there
    (docs/math.md#the-gaussian-start). A grid that starts below 1 needs them. ``moments`` may be a stack
    of Gaussians, one per class or cluster (``gaussian.component_moments``), with ``components`` naming
    each row's (for samples of a class-conditional ``score_fn``). ``callback`` and ``progress`` as in
    ``sample_multistep``.
    """
    name = "unipc" if solver is None else solver
    if name not in FAST_SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(FAST_SOLVERS)}")
    if isinstance(nfe_or_grid, torch.Tensor):
        time_grid = nfe_or_grid
        nfe = time_grid.numel()
    else:
        nfe = nfe_or_grid
        time_grid = fast_grid(nfe, sde, moments=moments, dtype=x_T.dtype, device=x_T.device)
    start = float(time_grid[0])
    if start < 1.0:
        if moments is None:
            raise ValueError(
                f"the grid starts at t = {start:.4g} < 1: pass the data's moments to carry x_T there"
            )
        x_T = gaussian_flow(sde, x_T, 1.0, start, moments, components)
    order, variant, *_ = _fast_setting(nfe, sde)
    options = {"order": order, "variant": variant, **FAST_SOLVERS[name]}
    x, info = sample_multistep(score_fn, sde, x_T, time_grid, callback=callback, progress=progress, **options)
    variant = options["variant"] if options["solver"] == "unipc" else None
    return x, {**info, "solver": name, "order": options["order"], "variant": variant, "start": start}


# optimize_grid's starting grids besides fast_grid(nfe): the ladders (fast_grid's, with its start and
# cap) to these sigma_end with these rho. At a few evaluations the RMS is dominated by the few draws that
# change mode, a landscape of plateaus in which one Nelder-Mead run from the default grid stops early;
# runs from the best of several shapes go further.
# optimize_grid returns the fitted grid only when its mean squared error on the held-out draws is below
# the default's by this many standard errors of the paired per-draw differences: at a few evaluations
# those differences are a handful of large mode switches, and a plain "lower on the held-out draws"
# passes fits that lose on fresh ones.
HELD_OUT_Z = 2.0
# ... and searches only grids whose parameters (softplus^-1 of the log-time steps) lie within GRID_TRUST of
# the default's: each step within about 16% of the default's. With a few hundred draws the fit cannot see
# the rare draws that switch mode, and on bench_samplers' tuning problems (fitted to 256 draws, scored on
# 2,000 others) unbounded fits that beat the default on their own draws by 50-90% were up to 3.2x worse
# on the others; within 0.15 the worst was 1.22x (0.3: 1.17x, with more losses).
GRID_TRUST = 0.15
GRID_STARTS = tuple((sigma_end, rho) for sigma_end in (0.05, 0.1, 0.2, 0.4) for rho in (3.0, 7.0, math.inf))


def optimize_grid(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    nfe: int,
    *,
    solver: str | None = None,
    max_iter: int = 300,
    rtol: float = 1e-5,
    n_starts: int = 3,
    moments: GaussianMixture | None = None,
    components: int | torch.Tensor | None = None,
    held_out: float = 0.25,
) -> tuple[torch.Tensor, dict]:
    """A grid of ``nfe`` times for one model and budget, in the spirit of "align your steps" (Sabour et
    al. 2024): the times that minimise ``sample_fast``'s RMS distance, over the prior draws ``x_T`` (a few
    hundred suffice), to the converged probability-flow solution from the same draws (dopri5 at ``rtol``,
    then Tweedie at its last time).

    The grid is parameterised by its log-time decrements (softplus of free numbers, so it always
    decreases from 1); with the data's ``moments`` its first time is free too, below 1, where
    ``sample_fast`` hands over from the Gaussian start, so the fit places the hand-over as well. The
    search scores ``fast_grid(nfe)`` and the noise-level ladders of ``GRID_STARTS`` (from the default
    start), each held within ``GRID_TRUST`` of the default's parameters, then runs Nelder-Mead (``max_iter``
    iterations each, bounded to the same region) from the ``n_starts`` best of them; it keeps the best grid
    it saw on the draws it fits. At a few evaluations the RMS is set by the handful of draws that
    switch mode, so a grid can fit those draws and lose elsewhere: the last ``held_out`` share of ``x_T``
    is kept out of the fit, and the default grid is returned (``info["kept_default"]``) unless the fitted
    one beats it there by ``HELD_OUT_Z`` standard errors of the paired per-draw differences, so that a
    fit that wins by a lucky mode switch or two is not returned. Cost:
    one dopri5 solve and about ``(13 + n_starts * max_iter) * nfe`` score evaluations on ``x_T``.
    Returns the grid (float64) and ``info`` with the RMS on the fitted draws before and after
    (``"rms_default"``, ``"rms"``) and on the held-out ones (``"rms_held_out_default"``,
    ``"rms_held_out"``). Store the grid with the model (a run does) and pass it to
    ``sample_fast(score_fn, sde, x_T, grid)``.
    """
    import numpy as np
    from scipy.optimize import minimize

    from .samplers import sample_ode, tweedie

    if int(n_starts) != n_starts or n_starts < 1:
        raise ValueError(f"n_starts must be a positive integer, got {n_starts}")
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must lie in [0, 1), got {held_out}")
    x_T = x_T.detach()
    reference, info = sample_ode(score_fn, sde, x_T, rtol=rtol, atol=rtol)
    reference = tweedie(score_fn, sde, reference, info["times"][-1].expand(x_T.shape[0]))
    start = fast_grid(nfe, sde, moments=moments, dtype=torch.float64)
    first = [] if moments is not None else [0.0]  # with moments the first decrement (from 1) is free

    def grid_of(params: np.ndarray) -> torch.Tensor:
        decrements = np.logaddexp(0.0, params)  # softplus: positive steps in log t
        return torch.tensor(np.exp(-np.concatenate([first, np.cumsum(decrements)])), dtype=torch.float64)

    def params_of(grid: torch.Tensor) -> np.ndarray:
        times = grid.numpy() if first else np.concatenate([[1.0], grid.numpy()])
        return np.log(np.expm1(np.maximum(-np.diff(np.log(times)), 1e-6)))

    n_check = int(x_T.shape[0] * held_out)
    fit_rows, check_rows = slice(0, x_T.shape[0] - n_check), slice(x_T.shape[0] - n_check, None)

    def squared_errors(grid: torch.Tensor) -> torch.Tensor | None:
        """Each draw's squared distance to the reference (all draws: a score may be bound to its rows)."""
        if not float(grid[-1]) > 1e-5:
            return None
        x, _ = sample_fast(
            score_fn, sde, x_T, grid.to(x_T.dtype), solver=solver, moments=moments, components=components
        )
        errors = (x - reference).flatten(1).square().sum(1)
        return errors if bool(torch.isfinite(errors).all()) else None

    def rms(errors: torch.Tensor | None, rows: slice = fit_rows) -> float:
        return math.inf if errors is None else float(errors[rows].mean().sqrt())

    start_errors = squared_errors(start)
    best = {"rms": rms(start_errors), "grid": start, "errors": start_errors}
    default = best["rms"]

    def objective(params: np.ndarray) -> float:
        grid = grid_of(params)
        errors = squared_errors(grid)
        value = rms(errors)
        if value < best["rms"]:
            best.update(rms=value, grid=grid, errors=errors)
        return value

    t_0, cap = float(start[0]), _fast_setting(nfe, sde)[2]
    centre = params_of(start)
    low, high = centre - GRID_TRUST, centre + GRID_TRUST
    candidates = [start] + [_ladder(sde, nfe, t_0, cap, sigma_end, rho) for sigma_end, rho in GRID_STARTS]
    starts = [np.clip(params_of(grid), low, high) for grid in candidates]
    scored = sorted(range(len(starts)), key=lambda i: default if i == 0 else objective(starts[i]))
    for i in scored[: int(n_starts)]:
        minimize(
            objective,
            starts[i],
            method="Nelder-Mead",
            bounds=list(zip(low, high, strict=True)),
            options={"maxiter": max_iter, "xatol": 1e-3, "fatol": 1e-6},
        )
    info = {"rms_default": default, "rms": best["rms"]}
    if n_check:  # the fitted grid must also beat the default on the draws it was not fitted to
        info.update(
            rms_held_out_default=rms(start_errors, check_rows), rms_held_out=rms(best["errors"], check_rows)
        )
        gain = (start_errors - best["errors"])[check_rows]  # per held-out draw; > 0 where the fit is better
        if n_check < 2 or not float(gain.mean()) > HELD_OUT_Z * float(gain.std()) / math.sqrt(n_check):
            return start, {**info, "rms": default, "kept_default": True}
    return best["grid"], {**info, "kept_default": best["grid"] is start}
