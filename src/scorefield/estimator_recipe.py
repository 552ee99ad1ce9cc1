"""The recipe behind the scikit-learn estimators (``estimator.py``): the network they build, how they
train it and how they evaluate its log-densities. Every number of the recipe is a named constant
below, with the reason or the trial behind it where one is known.

On whitened rows ``z``, split into training and held-out rows:

1. ``build_model``: an MLP (with random Fourier features of its input up to ``FOURIER_MAX_DIM``
   features) inside ``nets.Squashed``, whose ``bound`` (``squash_bound``) is twice the reach of the
   noisy training inputs, as a ``ScoreModel`` of the SDE (``make_sde``; an exploding one takes its
   ``sigma_max`` from ``auto_sigma_max``). The initialisation is seeded without touching the global
   random state.
2. ``train``: AdamW on ``sde_dsm`` for ``planned_steps`` steps, warming up over ``WARMUP_STEPS``,
   then the full rate, then ``LOW_RATE`` times it for the last ``LR_DROP`` of the planned steps; the
   EMA of the weights is the model kept. Every ``EVAL_EVERY`` steps (and at the last one) the EMA's
   loss on the held-out rows is checked, with the same noise each time. ``PATIENCE`` checks without
   improvement at the full rate start the low-rate phase early (for ``LR_DROP`` of the planned steps,
   with a fresh patience); within the low-rate phase they end training. The best EMA weights checked
   are the result.
3. ``log_density``: ``log p_eps`` through the probability-flow ODE at the diffusion time ``eps``,
   which ``choose_eps`` picks from ``EPS_CANDIDATES`` by the held-out mean log-density.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .fit import EMA, EarlyStopping, Trainer, fit
from .likelihood import log_likelihood
from .nets.mlp import MLP
from .nets.squashed import Squashed
from .noise import resolve_sigma_max
from .score import ScoreModel
from .sde import KINDS, SDE
from .utils import make_generator

__all__ = [
    "Phases",
    "Trained",
    "auto_sigma_max",
    "build_model",
    "choose_eps",
    "log_density",
    "make_sde",
    "planned_steps",
    "squash_bound",
    "train",
]

# -- the model ------------------------------------------------------------------------------------
# MLP width (``hidden=None``) up to WIDTH_MAX_DIM features and beyond.
NARROW, WIDE, WIDTH_MAX_DIM = 128, 256, 8
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
# Training length: about EPOCHS passes over the training rows up to EPOCH_ROWS rows, and
# EPOCHS * sqrt(n / EPOCH_ROWS) passes beyond, within [MIN_STEPS, MAX_STEPS]. Counting passes rather
# than steps is the regulariser that small tables need: on ~100 rows of 64 lattice-valued pixels the
# held-out loss keeps improving long after the density has started to memorise the pixel lattice
# (held-out rows share it), which ranks anomalies worse. A larger table takes more passes before it is
# memorised and has finer detail to learn: 5,000 rows of a 2-D toy are still improving after 300
# passes, while ~1,000 rows or fewer train exactly as with a flat EPOCHS.
MIN_STEPS, MAX_STEPS, EPOCHS, EPOCH_ROWS = 300, 20_000, 300, 1000
BATCH = 256  # rows per step (``batch_size=None``), or every training row when there are fewer
WARMUP_STEPS = 200  # linear warm-up of the learning rate from lr / WARMUP_STEPS
# The last LR_DROP of the planned steps run at LOW_RATE times the rate, which averages the gradient
# noise away; a plateau at the full rate (its noise floor) starts that phase early instead of ending
# the run. (A cosine decay to zero gained ~0.02 nat on two 2-D toys but lost ~1.3 nats on digits.)
LR_DROP, LOW_RATE = 0.2, 0.1
GRAD_CLIP = 1.0  # the largest gradient norm a step applies: one rare, huge gradient cannot throw the weights
# EMA of the weights (the evaluated model): decay max(EMA_DECAY, 1 - EMA_SPAN / steps), a half-life of
# ~140 steps for a short run and ~7% of the run (~700 steps at 10,000) for a long one.
EMA_DECAY, EMA_SPAN = 0.995, 10
EVAL_EVERY = 250  # steps between held-out checks (each: VALIDATION_REPEATS passes over the held-out rows)
PATIENCE = 8  # checks without improvement that end a phase (2,000 steps at EVAL_EVERY)
VALIDATION_REPEATS = 8  # noise draws per held-out row at each check: a low-variance loss

# -- log-densities ----------------------------------------------------------------------------------
# Diffusion times at which log-densities may be evaluated; the held-out split picks one. The larger
# ones smooth a small or discrete (lattice) data set into a density that generalises.
EPS_CANDIDATES = (1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 2e-1)
EPS_ROWS = 256  # held-out rows that choose eps (an ODE solve per row and candidate)
# The exact divergence costs one vector-Jacobian product per feature, Hutchinson's estimate N_PROBES
# whatever the dimension (unbiased; its standard error shrinks as 1/sqrt(N_PROBES)), so beyond
# EXACT_MAX_DIM features the estimate is used. ODE_TOL: dopri5's rtol and atol.
EXACT_MAX_DIM, N_PROBES, ODE_TOL = 8, 8, 1e-4
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


def build_model(
    sde: SDE, bound: torch.Tensor, hidden: int | None, depth: int, param: str, seed: int
) -> ScoreModel:
    """The estimator's network for ``len(bound)`` features, initialised from ``seed`` (on the CPU).

    ``hidden=None`` is ``NARROW`` up to ``WIDTH_MAX_DIM`` features and ``WIDE`` beyond. The global
    random state is left as it was: the initialisation draws from the CPU's default generator inside
    ``torch.random.fork_rng``, seeded with ``seed``.
    """
    dim = len(bound)
    width = hidden or (NARROW if dim <= WIDTH_MAX_DIM else WIDE)
    n_freq = FOURIER_FREQUENCIES if dim <= FOURIER_MAX_DIM else 0
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        mlp = MLP(dim + 2 * n_freq, hidden=width, depth=depth, out_dim=dim)
    net = Squashed(mlp, bound, n_frequencies=n_freq, scale=FOURIER_SCALE, seed=seed)
    return ScoreModel(net, sde, param=param)


# -- training -------------------------------------------------------------------------------------
Loss = Callable[[ScoreModel, torch.Tensor, torch.Generator], torch.Tensor]  # (model, rows, generator) -> [B]


class Trained(NamedTuple):
    """What ``train`` reports: the steps taken, the best held-out loss, every ``(step, loss)`` checked."""

    n_steps: int
    best: float
    curve: list[tuple[int, float]]


def planned_steps(n: int, batch: int, steps: int | None = None) -> int:
    """``steps``, else about ``EPOCHS`` passes over ``n`` rows (``EPOCHS * sqrt(n / EPOCH_ROWS)`` beyond
    ``EPOCH_ROWS`` rows) in batches of ``batch``, within ``[MIN_STEPS, MAX_STEPS]``."""
    if steps:
        return int(steps)
    epochs = EPOCHS * max(1.0, math.sqrt(n / EPOCH_ROWS))
    return int(min(MAX_STEPS, max(MIN_STEPS, epochs * n / batch)))


class Phases:
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
    loss: Loss,
    *,
    lr: float,
    weight_decay: float,
    batch_size: int | None,
    steps: int | None,
    seed: int,
    progress: bool = False,
) -> Trained:
    """Train ``model`` in place by the recipe (module docstring, step 2) and load its best EMA weights.

    ``loss(model, rows, generator)`` is the per-row training loss; ``batch_size=None`` is
    ``min(BATCH, len(z_train))`` and ``steps=None`` is ``planned_steps``. The batches and their noise
    come from a generator seeded with ``seed + 2``, the held-out noise from one seeded with ``seed + 1``.
    """
    n = len(z_train)
    batch = batch_size or min(BATCH, n)
    phases = Phases(planned_steps(n, batch, steps))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = EMA(model, max(EMA_DECAY, 1 - EMA_SPAN / phases.planned), warmup=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, phases.lr_factor)
    trainer = Trainer(model, opt, schedule, grad_clip=GRAD_CLIP, ema=ema)

    def held_out_loss() -> float:  # the same noise at every check, so the checks compare
        averaged, g = ema.averaged(model), make_generator(seed + 1, z_val.device)
        with torch.no_grad():
            return float(loss(averaged, z_val.repeat(VALIDATION_REPEATS, 1), g).mean())

    stopper = EarlyStopping(held_out_loss, lambda: ema.state_dict(model), PATIENCE)
    gen = make_generator(seed + 2, z_train.device)

    def batch_loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, n, (batch,), generator=gen, device=z_train.device)
        return loss(model, z_train[idx], gen).mean()

    def after_step(done: int, _loss: torch.Tensor, bar) -> bool:
        if phases.drops_after(done):
            stopper.restart_patience()  # the low-rate phase gets its own patience
        if done % EVAL_EVERY == 0 or done == phases.end:  # the last step too: a short run is kept
            plateau = stopper.check(done)
            bar.set_postfix(held_out_loss=f"{stopper.curve[-1][1]:.4f}")
            if plateau and phases.at_low_rate(done):
                return True
            if plateau:  # the full rate's gradient-noise floor: go on at the low rate
                phases.drop_early(done)
                stopper.restart_patience()
        return done >= phases.end

    n_steps = fit(trainer, batch_loss, phases.planned, after_step, progress=progress)
    model.load_state_dict(stopper.best_state)
    return Trained(n_steps, stopper.best, stopper.curve)


# -- log-densities ----------------------------------------------------------------------------------
def log_density(model: ScoreModel, z: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """``log p_eps`` of whitened rows through the probability-flow ODE, in nats: ``[N]``.

    The divergence is exact up to ``EXACT_MAX_DIM`` features, else Hutchinson's estimate with
    ``N_PROBES`` probes drawn from a generator seeded with ``seed``.
    """
    kind = "exact" if z.shape[1] <= EXACT_MAX_DIM else "hutchinson"
    g = make_generator(seed, z.device)
    out = [
        log_likelihood(
            model,
            model.sde,
            chunk,
            divergence=kind,
            n_probes=N_PROBES,
            eps=eps,
            rtol=ODE_TOL,
            atol=ODE_TOL,
            generator=g,
        )[0]
        for chunk in z.split(ODE_BATCH)
    ]
    return torch.cat(out)


def choose_eps(model: ScoreModel, z_val: torch.Tensor, seed: int) -> dict[float, float]:
    """The mean ``log_density`` of (up to ``EPS_ROWS``) held-out rows at each of ``EPS_CANDIDATES``;
    the best is ``max(scores, key=scores.get)``."""
    z_val = z_val[:EPS_ROWS]
    return {eps: float(log_density(model, z_val, eps, seed).mean()) for eps in EPS_CANDIDATES}
