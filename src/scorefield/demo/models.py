"""The demo's small models and their training: 2-D MLPs whose initial weights depend on the seed
alone, a short in-memory fit (``fit.py``'s core step, no run directory), the VP score model of
the diffusion, likelihood and moons sections on standardised data, and that model seen in data
units as a density.

The VP model is preconditioned as a denoiser (``ScoreModel(param="denoiser")``, Karras et al.
2022): the network predicts a correction to the best Gaussian denoiser, so an untrained network
is already the standardised data's Gaussian, and at ``t = 1``, where ``m(t)`` is 0.0066, the
denoiser is predicted directly instead of recovered from a noise estimate divided by ``m(t)``.
On moons, predicting the noise (``param="eps"``, learning rate 2e-3, 4000 steps) spreads samples
into the gap between the arcs; this recipe with a learning rate of 5e-3 and 6000 steps puts them on
the arcs (the moons section's numbers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .. import losses
from ..fit import Trainer, fit
from ..likelihood import log_likelihood
from ..nets.mlp import MLP
from ..scalers import Standardizer
from ..score import ScoreModel
from ..sde import VPSDE
from .settings import VP_T_MIN, Budget, Streams

__all__ = ["VP_LR", "LearnedDensity", "fit_model", "mlp", "train_vp"]


def fit_model(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    data: torch.Tensor,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    lr: float = 3e-3,
) -> float:
    """Minimise ``loss_fn(batch, generator).mean()`` over random batches of ``data`` (Adam with cosine
    decay, which stands in for an average of the weights in runs this short); returns the wall time.

    The models here are tiny and live in memory, so the run-directory machinery of ``scorefield.run.train``
    (checkpoints, EMA, resumption) would cost more than the training itself: only the core step runs.
    """
    start = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # one kernel per step: faster
    trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps))

    def loss(step: int) -> torch.Tensor:
        batch = data[torch.randint(0, data.shape[0], (batch_size,), generator=generator)]
        return loss_fn(batch, generator).mean()

    fit(trainer, loss, steps)
    model.eval().requires_grad_(False)
    return time.perf_counter() - start


def mlp(seed: int, hidden: int, depth: int, cond: bool) -> MLP:
    """A fresh 2-D MLP whose initial weights (and Fourier frequencies) depend on ``seed`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(2, hidden=hidden, depth=depth, cond=cond)


VP_LR = 5e-3  # Adam's learning rate for the VP models, decayed to 0 by a cosine schedule


def train_vp(
    data: torch.Tensor, steps: int, budget: Budget, streams: Streams, purpose: int
) -> tuple[ScoreModel, Standardizer, float]:
    """A VP score model (an MLP of depth 3 preconditioned as a denoiser) fitted by continuous-time
    DSM (weighting ``std²``) to standardised ``data``, its batches drawn from the stream ``purpose``:
    ``(model, scaler, wall time)``."""
    scaler = Standardizer().fit(data)
    z = scaler.transform(data)
    sde = VPSDE()
    model = ScoreModel(mlp(streams.seed, budget.hidden, depth=3, cond=True), sde, param="denoiser")
    wall = fit_model(
        model, lambda x, g: losses.sde_dsm(model, sde, x, t_min=VP_T_MIN, generator=g), z, steps, budget.batch_size,
        streams.generator(purpose), lr=VP_LR,
    )  # fmt: skip
    return model, scaler, wall


class LearnedDensity:
    """A VP score model trained on standardised data, seen in data units as a density (``viz``'s protocol):
    ``log_prob`` by the probability-flow ODE plus the scaler's log-determinant, ``score`` at ``t = VP_T_MIN``."""

    def __init__(self, model: ScoreModel, scaler: Standardizer):
        self.model, self.scaler = model, scaler

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.log_prob(
            lambda z: log_likelihood(self.model, self.model.sde, z, t_eval=VP_T_MIN)[0], x
        )

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.score(lambda z: self.model(z, VP_T_MIN), x)
