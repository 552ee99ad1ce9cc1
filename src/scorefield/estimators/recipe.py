"""The recipe behind the scikit-learn estimators (``density``): the network they build, how they
train it and how they evaluate its log-densities. Every number of the recipe is a named constant
below, with the reason or the trial behind it where one is known.

On whitened rows ``z``, split into training and held-out rows:

1. ``build_model``: an MLP (with random Fourier features of its input up to ``FOURIER_MAX_DIM``
   features) inside ``nets.Squashed``, whose ``bound`` (``squash_bound``) is twice the reach of the
   noisy training inputs, as a ``ScoreModel`` of the SDE (``make_sde``; an exploding one takes its
   ``sigma_max`` from ``auto_sigma_max``). The initialisation is seeded without touching the global
   random state.
2. ``train``: AdamW on ``sde_dsm`` within a budget of ``planned_steps`` steps, warming up over
   ``WARMUP_STEPS``, then the full rate, then ``LOW_RATE`` times it for the last ``LR_DROP`` of the
   budget; the EMA of the weights is the model kept. The rate, the EMA's decay and the checks follow
   the ``pace`` of the data's size: every ``eval_every`` steps (and at the last one) the EMA's
   loss on the held-out rows is checked, with the same noise each time. ``PATIENCE`` checks without
   improvement at the full rate start the low-rate phase early (for ``LR_DROP`` of the planned steps,
   with a fresh patience); within the low-rate phase they end training. Until some check beats the
   base's own held-out loss (``BEAT_BASE_SES``), a plateau after ``base_trial_steps`` ends training
   with the base alone. The best EMA weights checked are the result.
3. ``fit_mixture``: the fitted density is ``(1 - a) p_corr + a p_base``, the corrected model mixed with its
   base, every row at least ``log a + log p_base``; ``a`` and the evaluation time ``t`` are chosen on the
   held-out rows, and K-fold cross-validation of their log-densities decides whether the correction
   is kept (``choose_mixture``). ``log_density``: ``log p_t`` of the corrected model through the
   probability-flow ODE on a fixed grid, a function of each row alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..distributions import GaussianMixture
from ..fit import EMA, EarlyStopping, Trainer, fit
from ..keyed import KeyedNoise
from ..likelihood import log_likelihood
from ..losses import importance_times
from ..nets.mlp import MLP
from ..nets.squashed import Squashed
from ..noise import resolve_sigma_max, time_grid
from ..score import ScoreModel, batch_marginal
from ..sde import KINDS, SDE
from .bases import (  # noqa: F401  (part of the recipe's namespace: recipe.choose_base, ...)
    BASES,
    BIC_COMPONENTS,
    KDE_BANDWIDTHS,
    MAX_KERNELS,
    TIES_FRACTION,
    MixtureBase,
    choose_base,
    dequantiser,
    fit_gmm,
    fit_kde,
    lattice_steps,
    refit_base,
)
from .io import Streams
from .optim import AdamW, Schedule

__all__ = [
    "LearningRatePlan",
    "fit_mixture",
    "Targets",
    "Trained",
    "auto_sigma_max",
    "build_model",
    "choose_mixture",
    "dsm_loss",
    "log_density",
    "Mixture",
    "make_sde",
    "Pace",
    "pace",
    "planned_steps",
    "squash_bound",
    "targets",
    "train",
    "size",
]

# -- the model ------------------------------------------------------------------------------------
# MLP size (``hidden=None``, ``depth=None``: ``size``): SMALL (width, depth) below WIDE_MIN_ROWS training
# rows; from there NARROW wide up to WIDTH_MAX_DIM features and WIDE beyond, DEEP layers. On the
# benchmark's wine, diabetes and breast_cancer (125-400 rows) 64 x 2 trained ~2.5x faster per step than
# 128 x 3 and matched its held-out log-likelihood (-18.63 / -18.60, -26.09 / -26.03, 32.2 / 31.5 nats);
# on digits' anomaly classes (~115 rows, 64 features) the narrow net had fitted 2-2.5x faster than the
# wide one, within 0.2 nat and 0.002 AUROC.
SMALL, NARROW, WIDE, DEEP, WIDTH_MAX_DIM, WIDE_MIN_ROWS = (64, 2), 128, 256, 3, 8, 1000
# Up to FOURIER_MAX_DIM features the network also sees FOURIER_FREQUENCIES random Fourier features of
# its (whitened, unit-variance) input, frequencies ~ N(0, FOURIER_SCALE^2) cycles per unit: a 2-D
# density has detail (the checkerboard's edges, rings 0.08 wide) far finer than its unit scale, which
# a plain MLP learns slowly; beyond it a table has no such detail per feature and they would only
# widen the first layer. On checkerboard and rings (10,000 steps) they gained 0.11-0.17 nat at scale 1
# and 0.17-0.27 at scale 0.5; at scale 2 (32 frequencies) they overfit.
FOURIER_MAX_DIM, FOURIER_FREQUENCIES, FOURIER_SCALE = 8, 16, 0.5
# Squashed's bound: BOUND_FACTOR times the reach of the training inputs x_t = m x_0 + std z, the data's
# range plus BOUND_NOISE_STDS noise stds, so the network sees what it trained on almost unsquashed.
BOUND_FACTOR, BOUND_NOISE_STDS = 2.0, 3.0
# VE: sigma_min, and sigma_max = SIGMA_MAX_FACTOR * (largest distance among the first SIGMA_MAX_ROWS
# training rows) + SIGMA_MAX_PAD: a margin above Song & Ermon's rule, since the prior must also cover
# the held-out and test rows whose log-densities the estimator reports.
VE_SIGMA_MIN, SIGMA_MAX_ROWS, SIGMA_MAX_FACTOR, SIGMA_MAX_PAD = 0.01, 2000, 1.5, 1.0

# -- training -------------------------------------------------------------------------------------
# Training length: held-out rows decide (``train``: early stopping), within a budget of MAX_STEPS
# steps that ``fit`` warns about when it ends the run while the held-out loss is still improving.
# Lattice columns are dequantised first: on ~100 rows of 64 lattice-valued pixels the held-out loss
# would otherwise go on improving while the density memorises the lattice the held-out rows share.
MAX_STEPS = 20_000
BATCH = 256  # rows per step (``batch_size=None``), or every training row when there are fewer
WARMUP_STEPS = 50  # linear warm-up of the learning rate from lr / WARMUP_STEPS
# The last LR_DROP of the planned steps run at LOW_RATE times the rate, which averages the gradient
# noise away; a plateau at the full rate (its noise floor) starts that phase early instead of ending
# the run. (A cosine decay to zero gained ~0.02 nat on two 2-D toys but lost ~1.3 nats on digits.)
LR_DROP, LOW_RATE = 0.2, 0.1
GRAD_CLIP = 1.0  # the largest gradient norm a step applies: one rare, huge gradient cannot throw the weights
# EMA of the weights (the evaluated model) with a fixed decay, from the start (no warm-up): it begins
# at the untrained model, which with a base is the base itself. The fitted mixture's weight on the base
# bounds every row's fall below the base, so the average need not shrink towards the base for long as
# well. The learning rate, the decay, the steps between held-out checks and the trial against the base
# (below) make the pace of training, ``pace``: LARGE_PACE from WIDE_MIN_ROWS training rows, SMALL_PACE
# below. At LARGE_PACE (an average over ~200 steps, checks every 50), against 0.999 with checks every
# 200 steps after a 200-step warm-up, breast_cancer's test log-likelihood matched (32.02 nats both) in
# 950 steps instead of 3,000 and digits lost 1.0 nat of 123 in 750 instead of 2,600; a decay of 0.99
# lost 1.9 nats on digits. The small network of a small table learns faster: at SMALL_PACE (2.5x the
# rate, an average over ~100 steps, checks every 25 and a trial of 300 steps) the 16 fits of the
# benchmark's eight real tables of at most 1,000 rows (both protocols) took 250-1,375 steps instead of
# 600-2,250, with held-out log-likelihoods within 0.6 nat of LARGE_PACE's or better (protocol (a):
# diabetes -26.04 both, macrodata -37.4 / -39.3, star98 -110.0 / -110.1, breast_cancer 31.7 / 32.0,
# anes96 -25.31 / -24.95; (b): star98 -111.5 / -110.9 nats).
# A check beats the base when its held-out loss is below the base's (the check at step 0) by more than
# BEAT_BASE_SES standard errors of the per-row differences (the same rows and noise: a paired test).
# Until one does, a plateau after the pace's ``base_trial_steps`` ends training with the base alone, and
# the correction is no candidate of the fitted mixture (no log-density ODE is solved for it): on rows
# the base already matches, the noise of the held-out loss alone would otherwise keep a correction. A
# correction from a zero output layer may first lose to the base for a few hundred steps.
BEAT_BASE_SES = 2.0
PATIENCE = 3  # checks without improvement that end a phase


class Pace(NamedTuple):
    """How fast training goes (``pace``): the default learning rate, the EMA's decay, the steps between
    held-out checks and the steps of the trial against the base."""

    lr: float
    ema_decay: float
    eval_every: int
    base_trial_steps: int


LARGE_PACE, SMALL_PACE = Pace(2e-3, 0.995, 50, 600), Pace(5e-3, 0.99, 25, 300)
# noise draws per held-out row at each check (a low-variance loss): VALIDATION_REPEATS, fewer where
# the held-out rows number more than VALIDATION_ROWS / VALIDATION_REPEATS (at least one draw each), so
# a check of 750 held-out rows against a 4,250-kernel base costs 2 passes, not 8
VALIDATION_REPEATS, VALIDATION_ROWS = 8, 2048
# rows whose ``targets`` are drawn in one call (the batches of CHUNK_ROWS // batch steps), and the
# smallest diffusion time trained on (``losses.sde_dsm``'s default)
CHUNK_ROWS, DSM_T_MIN = 4096, 1e-5

# -- log-densities ----------------------------------------------------------------------------------
# Diffusion times at which log-densities may be evaluated; the held-out split picks one. The larger
# ones smooth a small or discrete (lattice) data set into a density that generalises.
EPS_CANDIDATES = (1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 2e-1)
EPS_ROWS = 256  # held-out rows that choose the mixture (an ODE solve per row and candidate time)
# The corrected model's log-density ODE is solved at one time, the smallest of the base's ODE_TIMES
# best (closed form, cheap): a correction adds detail that smoothing blurs, so it needs less smoothing
# than its base. In the ten fits of the benchmark's small tables that kept a correction, solving at
# each of the base's best three, the smallest of them was the best every time (by 0.003-2.1 nats),
# and one solve costs a third of three.
ODE_TIMES = 3
# The fitted density is (1 - a) p_corr + a p_base with a among MIXTURE_WEIGHTS (1: the base alone), so
# no row falls more than -log(MIXTURE_WEIGHTS[0]) = 4.6 nats below the base; CV_FOLDS-fold
# cross-validation of the held-out rows' log-densities decides whether the correction is kept.
MIXTURE_WEIGHTS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
# The cross-validated gain must exceed CV_SES standard errors of its per-row values: on 400 Gaussian
# rows under their exact base a mean gain of 0.005 nat would otherwise keep a correction that lost
# 0.007 nat on fresh rows.
CV_FOLDS, CV_SES = 5, 2.0
# The exact divergence costs one vector-Jacobian product per feature, Hutchinson's estimate N_PROBES
# whatever the dimension (unbiased; its standard error shrinks as 1/sqrt(N_PROBES)), so beyond
# EXACT_MAX_DIM features the estimate is used.
EXACT_MAX_DIM, N_PROBES = 8, 8
# The probability-flow ODE is solved by ODE_METHOD on ODE_STEPS steps even in log-SNR: a fixed grid,
# so a row's log-density does not depend on the rows solved beside it (dopri5 adapts its steps to the
# whole batch). On diabetes (10 features) rk4 on 16 log-SNR steps (64 evaluations) was within 0.01 nat
# of dopri5 at tolerance 1e-6 on every held-out row, closer than dopri5 at 1e-4 (56 evaluations, 0.02).
ODE_METHOD, ODE_STEPS = "rk4", 16
ODE_BATCH = 1024  # rows per probability-flow solve


# -- the model ------------------------------------------------------------------------------------
def make_sde(kind: str, sigma_max: float | None = None) -> SDE:
    """The SDE ``sde.KINDS[kind]``; an exploding one (VE) runs from ``VE_SIGMA_MIN`` to ``sigma_max``."""
    if kind not in KINDS:
        raise ValueError(f"unknown sde {kind!r}; choose one of {', '.join(KINDS)}")
    cls = KINDS[kind]
    return cls(sigma_min=VE_SIGMA_MIN, sigma_max=sigma_max) if cls.explodes else cls()


def auto_sigma_max(z_train: torch.Tensor) -> float:
    """``sigma_max`` for an exploding SDE: ``noise.resolve_sigma_max("auto")`` with the recipe's margin.

    The training rows come in a seeded random order, so the first ``SIGMA_MAX_ROWS`` of them are the
    random subset the rule measures.
    """
    rows = z_train[:SIGMA_MAX_ROWS]
    return resolve_sigma_max(
        "auto", rows, max_points=SIGMA_MAX_ROWS, factor=SIGMA_MAX_FACTOR, pad=SIGMA_MAX_PAD
    )


def squash_bound(z_train: torch.Tensor) -> torch.Tensor:
    """``Squashed``'s bound per feature: ``BOUND_FACTOR * (max |z| + BOUND_NOISE_STDS)`` over the training rows."""
    return BOUND_FACTOR * (z_train.abs().amax(0) + BOUND_NOISE_STDS)


def size(n_features: int, n_rows: int) -> tuple[int, int]:
    """The MLP's ``(width, depth)`` for ``hidden=None``, ``depth=None``: ``SMALL`` below ``WIDE_MIN_ROWS``
    training rows, else ``WIDE`` (beyond ``WIDTH_MAX_DIM`` features) or ``NARROW`` wide and ``DEEP``."""
    if n_rows < WIDE_MIN_ROWS:
        return SMALL
    return (WIDE if n_features > WIDTH_MAX_DIM else NARROW), DEEP


def pace(n_rows: int) -> Pace:
    """The pace of training on ``n_rows`` training rows: ``SMALL_PACE`` below ``WIDE_MIN_ROWS``, else
    ``LARGE_PACE`` (the rows that also size the network, ``size``)."""
    return SMALL_PACE if n_rows < WIDE_MIN_ROWS else LARGE_PACE


def build_model(
    sde: SDE,
    bound: torch.Tensor,
    hidden: int,
    depth: int,
    param: str,
    seed: int,
    base: MixtureBase | None = None,
) -> ScoreModel:
    """The estimator's network for ``len(bound)`` features, initialised from ``seed`` (on the CPU).

    ``hidden`` is the MLP's width (``width`` chooses one from the data). The global
    random state is left as it was: the initialisation draws from the CPU's default generator inside
    ``torch.random.fork_rng``, seeded with ``seed``.
    """
    dim = len(bound)
    width = hidden
    n_freq = FOURIER_FREQUENCIES if dim <= FOURIER_MAX_DIM else 0
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        mlp = MLP(dim + 2 * n_freq, hidden=width, depth=depth, out_dim=dim)
        if base is not None:  # the untrained model is the base density itself
            torch.nn.init.zeros_(mlp.output.weight)
            torch.nn.init.zeros_(mlp.output.bias)
    net = Squashed(mlp, bound, n_frequencies=n_freq, scale=FOURIER_SCALE, seed=seed)
    return ScoreModel(net, sde, param=param, base=base)


# -- training -------------------------------------------------------------------------------------
class Targets(NamedTuple):
    """Denoising score matching's per-row terms that do not depend on the weights (``targets``): the
    loss of a row is ``weight * ||residual + gain F(inputs, c_noise)||^2`` for the network's output
    ``F``, Song et al. 2021's ``lambda(t) ||s(x_t, t) + z / std||^2 / 2`` with ``s`` affine in ``F``
    (``ScoreModel.affine``)."""

    inputs: torch.Tensor  # [N, d]
    c_noise: torch.Tensor  # [N]
    residual: torch.Tensor  # [N, d]: std * offset + z
    gain: torch.Tensor  # [N, 1]: std * gain
    weight: torch.Tensor  # [N]

    def rows(self, start: int, stop: int) -> Targets:
        return Targets(*(v[start:stop] for v in self))


def targets(model: ScoreModel, x0: torch.Tensor, weighting: str, generator: torch.Generator) -> Targets:
    """``Targets`` of the rows ``x0`` at fresh times and noise, as ``losses.sde_dsm`` draws them (``t``
    from ``t_min = 1e-5``, importance-sampled with density ``g^2 / std^2`` for ``"likelihood"``).

    Everything but the network is computed here once per row, the base's exact posterior mean included,
    so that a training step evaluates only the network: drawing the rows of ``CHUNK_ROWS`` steps in one
    call cost 28-32% less per step than a loss computed step by step (256-row batches of diabetes,
    breast_cancer and star98).
    """
    sde = model.sde
    if weighting == "likelihood":
        t, w = importance_times(sde, DSM_T_MIN, x0, generator)
    else:
        t = DSM_T_MIN + (1 - DSM_T_MIN) * torch.rand(len(x0), generator=generator, device=x0.device)
        w = torch.ones_like(t)
    scale, std = batch_marginal(sde, t, x0)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    with torch.no_grad():
        inputs, c_noise, offset, gain = model.affine(scale[:, None] * x0 + std[:, None] * z, scale, std)
    residual = z if offset is None else z + std[:, None] * offset
    lam_over_std2 = sde.diffusion(t) ** 2 / std**2 if weighting == "likelihood" else torch.ones_like(t)
    return Targets(inputs, c_noise, residual, std[:, None] * gain, 0.5 * w * lam_over_std2)


def dsm_loss(model: ScoreModel, rows: Targets) -> torch.Tensor:
    """The per-row denoising score-matching loss of ``rows`` (``targets``) under the current weights: ``[N]``."""
    out = model.net(rows.inputs, rows.c_noise)
    return rows.weight * (rows.residual + rows.gain * out).square().sum(1)


class Trained(NamedTuple):
    """What ``train`` reports: the steps taken, the best held-out loss, every ``(step, loss)`` checked,
    the step of the best, and whether some check beat the base's own held-out loss by more than
    ``BEAT_BASE_SES`` standard errors (always true without a base)."""

    n_steps: int
    best: float
    curve: list[tuple[int, float]]
    best_step: int
    beats_base: bool


def planned_steps(steps: int | None = None) -> int:
    """The step budget: ``steps``, else ``MAX_STEPS``; held-out rows usually end training sooner."""
    return int(steps) if steps else MAX_STEPS


class LearningRatePlan:
    """The learning rate of one run of ``planned`` steps: warm-up, then the full rate until
    ``drop_at``, then ``LOW_RATE`` times it until ``end``.

    ``drop_at`` is ``(1 - LR_DROP) * planned`` unless ``drop_early`` moves it (and ``end`` with it).
    """

    def __init__(self, planned: int):
        self.planned, self.drop_at, self.end = planned, (1 - LR_DROP) * planned, planned

    def lr_factor(self, k: int) -> float:
        """The factor on the base rate for step ``k + 1`` (``LambdaLR`` counts steps from 0)."""
        return min(1.0, (k + 1) / WARMUP_STEPS) * (LOW_RATE if k + 1 > self.drop_at else 1.0)

    def drops_after(self, done: int) -> bool:
        """Whether the step after ``done`` steps is the first of the low-rate phase as planned."""
        return done == int(self.drop_at)

    def at_low_rate(self, done: int) -> bool:
        return done >= self.drop_at

    def drop_early(self, done: int) -> None:
        """Start the low-rate phase after ``done`` steps; it runs ``LR_DROP`` of the planned steps."""
        self.drop_at, self.end = done, min(self.planned, done + int(LR_DROP * self.planned))


def train(
    model: ScoreModel,
    z_train: torch.Tensor,
    z_val: torch.Tensor,
    weighting: str,
    *,
    lr: float | None,
    weight_decay: float,
    batch_size: int | None,
    steps: int | None,
    seeds: Streams,
    progress: bool = False,
    jitter: Callable[[int, torch.Generator], torch.Tensor] | None = None,
) -> Trained:
    """Train ``model`` in place by the recipe (module docstring, step 2) and load its best EMA weights.

    The loss is ``losses.sde_dsm``'s with ``weighting`` (importance-sampled for ``"likelihood"``),
    computed from ``targets`` drawn for ``CHUNK_ROWS`` rows at a time. ``jitter(n, generator)``, when
    given, is added to every batch of ``n`` rows (dequantisation noise, drawn afresh at each step).
    ``batch_size=None`` is ``min(BATCH, len(z_train))``, ``lr=None`` the ``pace``'s rate and
    ``steps=None`` is ``planned_steps``. The
    batches and their noise come from the stream ``"batches"`` of ``seeds``, the held-out noise from
    ``"validation"`` (the same at every check).
    """
    n = len(z_train)
    batch, speed = batch_size or min(BATCH, n), pace(n)
    plan = LearningRatePlan(planned_steps(steps))
    opt = AdamW(model.parameters(), lr=lr or speed.lr, weight_decay=weight_decay, max_norm=GRAD_CLIP)
    ema = EMA(model, speed.ema_decay, warmup=False)
    schedule = Schedule(opt, plan.lr_factor)
    trainer = Trainer(model, opt, schedule, grad_clip=0, ema=ema)  # (the optimiser clips)

    repeats = max(1, min(VALIDATION_REPEATS, VALIDATION_ROWS // len(z_val)))
    # the held-out rows' terms, the same noise at every check, so the checks compare row by row
    val_rows = targets(
        model, z_val.repeat(repeats, 1), weighting, seeds.generator("validation", z_val.device)
    )
    base_rows: list[torch.Tensor] = []  # the base's per-row held-out losses (the check at step 0)
    beats_base = model.base is None  # a model without a base has no closed form to beat

    def held_out_loss() -> float:  # under the EMA weights, swapped in for the check
        nonlocal beats_base
        weights = [p.detach() for p in model.parameters()]
        current = [w.clone() for w in weights]
        with torch.no_grad():
            torch._foreach_copy_(weights, ema.shadow)
            rows = dsm_loss(model, val_rows).view(repeats, -1).double().mean(0)
            torch._foreach_copy_(weights, current)
        if model.base is not None and not base_rows:
            base_rows.append(rows)
        elif not beats_base:  # a paired test: the same rows, times and noise as the base's check
            diff = rows - base_rows[0]
            beats_base = bool(diff.mean() < -BEAT_BASE_SES * diff.std() / math.sqrt(len(diff)))
        return float(rows.mean())

    stopper = EarlyStopping(held_out_loss, lambda: ema.state_dict(model), PATIENCE)
    if model.base is not None:  # the untrained model is the base: it is the first candidate kept
        stopper.check(0)
    gen = seeds.generator("batches", z_train.device)
    per_chunk = max(1, CHUNK_ROWS // batch)
    chunk: list[Targets] = []

    def batch_loss(step: int) -> torch.Tensor:
        if step % per_chunk == 0:  # the next per_chunk batches, each with its own rows, times and noise
            idx = torch.randint(0, n, (per_chunk * batch,), generator=gen, device=z_train.device)
            rows = z_train[idx] if jitter is None else z_train[idx] + jitter(len(idx), gen)
            chunk[:] = [targets(model, rows, weighting, gen)]
        k = step % per_chunk
        return dsm_loss(model, chunk[0].rows(k * batch, (k + 1) * batch)).mean()

    def after_step(done: int, _loss: torch.Tensor, bar) -> bool:
        if plan.drops_after(done):
            stopper.restart_patience()  # the low-rate phase gets its own patience
        if done % speed.eval_every == 0 or done == plan.end:  # the last step too: a short run is kept
            plateau = stopper.check(done)
            bar.set_postfix(held_out_loss=f"{stopper.curve[-1][1]:.4f}")
            if plateau and plan.at_low_rate(done):
                return True
            if plateau and not beats_base:
                if done >= speed.base_trial_steps:
                    return True  # no correction clearly beat the base alone: it is the result
                stopper.restart_patience()  # the trial goes on at the full rate
            elif plateau:  # the full rate's gradient-noise floor: go on at the low rate
                plan.drop_early(done)
                stopper.restart_patience()
        return done >= plan.end

    try:
        n_steps = fit(trainer, batch_loss, plan.planned, after_step, progress=progress)
    finally:
        opt.release()
    if steps is None and n_steps >= plan.planned and stopper.best_step == n_steps:
        warnings.warn(
            f"training used its whole budget of {plan.planned} steps while the held-out loss was still "
            "improving; pass a larger steps= to train longer",
            UserWarning,
            stacklevel=4,
        )
    model.load_state_dict(stopper.best_state)
    return Trained(n_steps, stopper.best, stopper.curve, stopper.best_step, beats_base)


def base_log_density(base: GaussianMixture, sde: SDE, z: torch.Tensor, eps: float) -> torch.Tensor:
    """``log p_eps`` of the base alone, in closed form: ``[N]`` (what the probability-flow ODE of a
    model whose network outputs zero gives, without the solver's error)."""
    scale, std = sde.marginal(torch.full((len(z),), float(eps), dtype=z.dtype, device=z.device))
    with torch.no_grad():
        return torch.cat(
            [
                base.log_prob(c, s, d)
                for c, s, d in zip(
                    z.split(ODE_BATCH), scale.split(ODE_BATCH), std.split(ODE_BATCH), strict=True
                )
            ]
        )


def eps_candidates(
    base: GaussianMixture, sde: SDE, z_val: torch.Tensor, candidates: tuple[float, ...] = EPS_CANDIDATES
) -> dict[float, torch.Tensor]:
    """Each candidate time's closed-form log-density of the base on the held-out rows: ``{eps: [n_val]}``."""
    return {eps: base_log_density(base, sde, z_val, eps) for eps in candidates}


class Mixture(NamedTuple):
    """The fitted density ``(1 - a) p_corr + a p_base`` at the time ``t_eval``; ``a = 1`` is the base alone.

    ``cv_gain`` is the K-fold cross-validated mean gain per held-out row of choosing among mixtures over
    choosing the base alone (nats), ``scores`` the mean held-out log-density of each candidate ``(t, a)``.
    """

    weight: float
    t_eval: float
    cv_gain: float
    scores: dict[tuple[float, float], float]


def _choices(log_corr: dict, log_base: dict) -> tuple[list[tuple[float, float]], torch.Tensor]:
    """Every candidate ``(t, a)`` and its per-row log-density ``[C, n]``: the base alone (``a = 1``) at
    every time of ``log_base``; with the correction at every time of ``log_corr`` and each weight of
    ``MIXTURE_WEIGHTS``."""
    keys, rows = [], []
    for t, lb in log_base.items():
        keys.append((t, 1.0))
        rows.append(lb.double())
        if t in log_corr:
            lc = log_corr[t].double()
            for a in MIXTURE_WEIGHTS[:-1]:
                keys.append((t, a))
                rows.append(torch.logaddexp(math.log1p(-a) + lc, math.log(a) + lb.double()))
    return keys, torch.stack(rows)


def choose_mixture(log_corr: dict, log_base: dict, generator: torch.Generator) -> Mixture:
    """The mixture weight and evaluation time of the fitted density from held-out per-row log-densities
    (docs/math.md#a-density-that-cannot-fall-far-below-its-base).

    ``log_corr`` and ``log_base`` map times to the held-out rows' log-densities ``[n]`` under the
    corrected model and the base. The choice is the candidate with the best mean over every row; it
    keeps the correction (``weight < 1``) only if choosing among mixtures beats choosing among the base
    alone in ``CV_FOLDS``-fold cross-validation of the rows' log-densities (the choice made on the other
    folds, each row scored once), so that the choice's own optimism cannot keep it, by more than
    ``CV_SES`` standard errors of the per-row gains: the same rows also chose when training stopped.
    """
    keys, table = _choices(log_corr, log_base)
    n = table.shape[1]
    alone = torch.tensor([a == 1.0 for _, a in keys])
    fold = torch.randperm(n, generator=generator) % min(CV_FOLDS, n)
    gain = torch.zeros(n, dtype=torch.float64)
    for k in range(int(fold.max()) + 1):
        out, inside = fold == k, fold != k
        means = table[:, inside].mean(1)
        best_any = int(means.argmax())
        best_alone = int(torch.where(alone, means, -math.inf).argmax())
        gain[out] = table[best_any, out] - table[best_alone, out]
    means = table.mean(1)
    cv_gain = float(gain.mean())
    clear = cv_gain > CV_SES * float(gain.std()) / math.sqrt(n) if n > 1 else False
    scores = {key: float(v) for key, v in zip(keys, means, strict=True)}
    pick = int(means.argmax()) if clear else int(torch.where(alone, means, -math.inf).argmax())
    t_eval, weight = keys[pick]
    return Mixture(weight, t_eval, cv_gain, scores)


def standard_normal(d: int, like: torch.Tensor) -> GaussianMixture:
    """The whitened Gaussian ``N(0, I)`` as a one-component mixture (the base of a model without one)."""
    return GaussianMixture.spherical(like.new_zeros(1, d), like.new_ones(1), like.new_ones(1))


def fit_mixture(
    model: ScoreModel,
    name: str,
    trained: Trained,
    z_val: torch.Tensor,
    keys_val: torch.Tensor,
    z_all: torch.Tensor,
    seeds: Streams,
    t_eval: float | None,
) -> Mixture:
    """Choose the fitted density ``(1 - a) p_corr + a p_base`` (``choose_mixture``) on the held-out rows
    ``z_val`` (``keys_val``: their ``row_keys``).

    The correction is a candidate only if training lowered the held-out loss clearly below the base's
    (``trained.beats_base``; a model without a base always is); its probability-flow log-densities
    are computed at the smallest of the base's ``ODE_TIMES`` best times (or at ``t_eval``). Without
    the correction ``model`` becomes the base alone, in place: its output layer zeroed and the base
    fitted again on ``z_all`` (every row, the ``len(z_val)`` held-out ones first, as a KDE or a
    mixture is once its settings are chosen); without a base, a denoiser's zeroed output is the
    whitened Gaussian.
    """
    base = model.base.mixture if model.base is not None else standard_normal(z_val.shape[1], z_val)
    candidates = EPS_CANDIDATES if t_eval is None else (t_eval,)
    z_val, keys_val = z_val[:EPS_ROWS], keys_val[:EPS_ROWS]
    log_base = eps_candidates(base, model.sde, z_val, candidates)
    log_corr = {}
    if trained.beats_base:
        t = min(sorted(log_base, key=lambda t: -float(log_base[t].mean()))[:ODE_TIMES])
        log_corr = {t: log_density(model, z_val, t, keys_val, seeds.seed("probes"))}
    mixture = choose_mixture(log_corr, log_base, seeds.generator("folds"))
    if mixture.weight < 1 or (model.base is None and model.param != "denoiser"):
        return mixture
    if model.base is not None:
        model.base = refit_base(name, model.base, len(z_val), z_all, seeds.seed("base")).to(z_all.device)
    output = model.net.net.output
    torch.nn.init.zeros_(output.weight)
    torch.nn.init.zeros_(output.bias)
    return mixture


# -- log-densities ----------------------------------------------------------------------------------
def log_density(
    model: ScoreModel, z: torch.Tensor, eps: float, keys: torch.Tensor, seed: int
) -> torch.Tensor:
    """``log p_eps`` of whitened rows through the probability-flow ODE, in nats: ``[N]``.

    Every row's value depends on that row alone (to float rounding): the solver steps on a fixed grid
    (``ODE_METHOD``, ``ODE_STEPS`` steps even in log-SNR), and beyond ``EXACT_MAX_DIM`` features the
    divergence is Hutchinson's estimate with ``N_PROBES`` probes keyed by ``(seed, keys)``
    (``KeyedNoise``; ``keys`` are the rows' ``row_keys``), not drawn in batch order.
    """
    kind = "exact" if z.shape[1] <= EXACT_MAX_DIM else "hutchinson"
    grid = time_grid(ODE_STEPS, model.sde, kind="log_snr", t_end=eps, dtype=z.dtype, device=z.device)
    out = [
        log_likelihood(
            model,
            model.sde,
            chunk,
            divergence=kind,
            n_probes=N_PROBES,
            t_eval=eps,
            method=ODE_METHOD,
            steps_or_grid=grid,
            generator=KeyedNoise(seed, chunk_keys.to(z.device)),
        )[0]
        for chunk, chunk_keys in zip(z.split(ODE_BATCH), keys.split(ODE_BATCH), strict=True)
    ]
    return torch.cat(out)
