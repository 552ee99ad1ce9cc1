"""The demo's small models and their training: 2-D MLPs whose initial weights depend on the seed
alone, a short in-memory fit (``fit.py``'s core step, no run directory), the VP score model of
sections 5-7 on standardised data, and that model seen in data units as a density.
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
from .settings import VP_EPS, Budget, Streams

__all__ = ["LearnedDensity", "fit_model", "mlp", "train_vp"]


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
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
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


def train_vp(
    data: torch.Tensor, steps: int, budget: Budget, streams: Streams, purpose: int
) -> tuple[ScoreModel, Standardizer, float]:
    """A VP score model (eps-parameterised MLP) fitted by continuous-time DSM to standardised ``data``,
    its batches drawn from the stream ``purpose``: ``(model, scaler, wall time)``."""
    scaler = Standardizer().fit(data)
    z = scaler.transform(data)
    sde = VPSDE()
    model = ScoreModel(mlp(streams.seed, budget.hidden, depth=3, cond=True), sde, param="eps")
    wall = fit_model(
        model, lambda x, g: losses.sde_dsm(model, sde, x, eps=VP_EPS, generator=g), z, steps, budget.batch_size,
        streams.generator(purpose), lr=2e-3,
    )  # fmt: skip
    return model, scaler, wall


class LearnedDensity:
    """A VP score model trained on standardised data, seen in data units as a density (``viz``'s protocol):
    ``log_prob`` by the probability-flow ODE plus the scaler's log-determinant, ``score`` at ``t = eps``."""

    def __init__(self, model: ScoreModel, scaler: Standardizer):
        self.model, self.scaler = model, scaler

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.log_prob(lambda z: log_likelihood(self.model, self.model.sde, z, eps=VP_EPS)[0], x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.score(lambda z: self.model(z, VP_EPS), x)
