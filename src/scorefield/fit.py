"""The one training core: an optimiser step with clipping, a learning-rate schedule and a weight average,
the loop around it, a guard against non-finite losses, and early stopping on a held-out metric.

Every model in the project trains through ``fit``: the command-line trainer (with checkpoints, metrics
and DDP around it), the scikit-learn estimators, the demo's small models and the digits evaluation
classifier. Each caller states only what differs: how the loss of step ``k`` is computed, which
optimiser and schedule (PyTorch's own ``torch.optim.lr_scheduler``), and what happens after a step.

    opt = torch.optim.AdamW(model.parameters(), lr)
    trainer = Trainer(model, opt, schedule=warmup_schedule(opt, 100), grad_clip=1.0, ema=EMA(model, 0.999))
    fit(trainer, lambda k: loss_fn(batch(k)).mean(), stop=2000, after_step=log_every_50)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["EMA", "EarlyStopping", "LossWindow", "Trainer", "fit", "warmup_schedule"]


class EMA:
    """Exponential moving average of the weights (Polyak & Juditsky 1992), decay ``min(decay, (1+k)/(10+k))``
    at step ``k`` (or ``decay`` throughout, without ``warmup``).

    The warm-up of the decay lets a short run's average forget its random initialisation. Written here
    rather than with ``torch.optim.swa_utils.AveragedModel`` because the average lives beside the model
    (``_foreach_lerp_`` over views of its parameters, no second module) and is checkpointed under the
    model's own parameter names, which resumed runs and ``load_run`` read.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.names = [name for name, _ in model.named_parameters()]
        self.sources = [p.detach() for _, p in model.named_parameters()]  # views that follow the weights
        self.shadow = [p.clone() for p in self.sources]

    @staticmethod
    def decay_for_horizon(steps: float) -> float:
        """The decay whose average spans about ``steps`` steps: ``1 - 1 / steps`` (the half-life is
        ``steps · ln 2``)."""
        return 1.0 - 1.0 / max(float(steps), 1.0)

    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        torch._foreach_lerp_(self.shadow, self.sources, 1 - decay)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's ``state_dict`` with the averaged parameters in place of the current ones."""
        state = dict(model.state_dict())
        state.update(zip(self.names, self.shadow, strict=True))
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, shadow in zip(self.names, self.shadow, strict=True):
            shadow.copy_(state[name])

    def averaged(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the averaged weights (for evaluation; gradients off)."""
        copy_ = copy.deepcopy(model).requires_grad_(False)
        copy_.load_state_dict(self.state_dict(model))
        return copy_


def warmup_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, last_step: int = -1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ``lr / warmup`` to ``lr`` over ``warmup`` steps, then constant: step ``k``
    (from 0) runs at ``lr · min(1, (k + 1) / warmup)``. ``last_step``: the last step already taken,
    when resuming (the optimiser's state must then be loaded first)."""
    if last_step >= 0:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup else 1.0, last_epoch=last_step
    )


class Trainer:
    """One optimiser step: ``zero_grad``, ``backward``, gradient clipping, ``optimizer.step``, the
    schedule's step and the weight average's update. ``step(loss)`` returns the gradient norm before
    clipping (a 0-d tensor; ``nan`` when ``grad_clip`` is 0, where it is not computed)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
        grad_clip: float = 0.0,
        ema: EMA | None = None,
        step: int = 0,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.grad_clip, self.ema, self.step_count = grad_clip, ema, step
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.last_grad_norm = torch.full((), math.nan)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def grad_norm(self) -> torch.Tensor:
        """The global gradient norm of the last backward pass (no clipping)."""
        return nn.utils.clip_grad_norm_(self.params, math.inf)

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            norm = torch.full((), math.nan)
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.step_count)
        self.step_count += 1
        self.last_grad_norm = norm
        return norm


AfterStep = Callable[[int, torch.Tensor, tqdm], bool]


def fit(
    trainer: Trainer,
    loss_fn: Callable[[int], torch.Tensor],
    stop: int,
    after_step: AfterStep | None = None,
    progress: bool = False,
    desc: str = "fit",
) -> int:
    """Train from ``trainer.step_count`` up to ``stop`` steps: ``trainer.step(loss_fn(k))`` for each step ``k``.

    ``after_step(done, loss, bar)`` runs after each step (``done`` steps taken, the step's loss, the
    progress bar for a postfix) and returns ``True`` to stop early. Returns the number of steps taken
    in all (including those before this call).
    """
    trainer.model.train()
    bar = tqdm(
        total=stop, initial=trainer.step_count, disable=not progress, desc=desc, unit="step", leave=False
    )
    try:
        while trainer.step_count < stop:
            loss = loss_fn(trainer.step_count)
            trainer.step(loss)
            bar.update()
            if after_step is not None and after_step(trainer.step_count, loss.detach(), bar):
                break
    finally:
        bar.close()
    return trainer.step_count


class LossWindow:
    """Per-step losses since the last check, kept on the device (no host sync per step).

    ``reduce_min`` / ``reduce_sum`` combine a tensor over the processes of a distributed run in place
    (identity on one process), so every process sees the same answer.
    """

    def __init__(self, start: int, reduce_min=None, reduce_sum=None, world: int = 1):
        self.start, self.losses = start, []
        self.reduce_min, self.reduce_sum, self.world = reduce_min, reduce_sum, world

    def add(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)

    def first_non_finite(self) -> int | None:
        """The first step (over all processes) whose loss was not finite, else ``None``."""
        if not self.losses:
            return None
        finite = torch.isfinite(torch.stack(self.losses))
        first_bad = torch.where(~finite)[0]
        bad = torch.tensor(
            [self.start + 1 + int(first_bad[0]) if first_bad.numel() else 2**62], device=finite.device
        )
        if self.reduce_min is not None:
            self.reduce_min(bad)
        return int(bad) if int(bad) < 2**62 else None

    def mean(self) -> float:
        value = torch.stack(self.losses).mean()
        if self.reduce_sum is not None:
            self.reduce_sum(value)
            value = value / self.world
        return float(value)

    def reset(self, start: int) -> None:
        self.start, self.losses = start, []


class EarlyStopping:
    """Early stopping on a held-out metric, lower is better (Prechelt 1998).

    ``check(step)`` evaluates ``metric()``; an improvement by more than ``rel_tol`` of the best value so
    far keeps a copy of ``state()`` as the best (``best_state``, at ``best_step``); ``patience`` checks in a row without one make
    ``check`` return ``True``. ``curve`` holds every ``(step, value)`` checked.
    """

    def __init__(
        self,
        metric: Callable[[], float],
        state: Callable[[], dict[str, torch.Tensor]],
        patience: int,
        rel_tol: float = 1e-4,
    ):
        self.metric, self.state, self.patience, self.rel_tol = metric, state, patience, rel_tol
        self.best, self.best_state, self.bad = math.inf, copy.deepcopy(state()), 0
        self.best_step: int | None = None  # the step of the best value checked
        self.curve: list[tuple[int, float]] = []

    def check(self, step: int) -> bool:
        value = self.metric()
        self.curve.append((step, value))
        if not math.isfinite(self.best) or value < self.best - self.rel_tol * abs(self.best):
            self.best, self.best_state, self.bad = value, copy.deepcopy(self.state()), 0
            self.best_step = step
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restart_patience(self) -> None:
        self.bad = 0
