"""How a finished run samples: the score functions of a label or of each row's cluster (``Scores``), and the
samplers ``Run.sample`` dispatches to by name (``SAMPLERS``: probability-flow ODE, DPM-Solver++, the
few-step ``sample_fast``, predictor-corrector, Euler-Maruyama, annealed Langevin), each taking the SDE,
the run's sample settings and its grid, then prior draws in standardised units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .. import noise
from ..distributions import GaussianMixture
from ..langevin import annealed_langevin
from ..multistep import sample_fast, sample_multistep
from ..samplers import sample_ode, sample_pc
from ..sde import SDE
from .config import SampleConfig

Budget = int | torch.Tensor  # a number of steps (of evaluations for fast), or a grid of times or levels

__all__ = ["SAMPLERS", "Scores", "rows_score"]


def rows_score(score_fn: Callable[..., torch.Tensor], y: torch.Tensor) -> Callable[..., torch.Tensor]:
    """``score_fn(x, t, y)`` with one label per row of the block ``y`` (``[B]``), for a sampler whose
    batch holds the block's rows or ``k`` consecutive copies of each (particles): ``y`` repeated to fit."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        copies = x.shape[0] // y.numel()
        if copies * y.numel() != x.shape[0]:
            raise ValueError(f"{y.numel()} labels for a batch of {x.shape[0]} examples")
        return score_fn(x, t, y.to(x.device).repeat_interleave(copies))

    return score


class Scores(NamedTuple):
    """The score functions a sampler of ``SAMPLERS`` uses: of ``p_t`` (``at_time(x, t)``) and of ``p_sigma``
    (``at_sigma(x, sigma)``, annealed Langevin); a class's guided ones for a label."""

    at_time: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    at_sigma: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    moments: GaussianMixture | None = (
        None  # the Gaussian of what ``at_time`` models, when known: sample_fast's start
    )
    components: int | torch.Tensor | None = None  # with a stack of Gaussians: each sample's


def _sample_ode(sde: SDE, s: SampleConfig, grid: Budget, x_T: torch.Tensor, score: Scores, generator):
    steps_or_grid = None if s.ode_method == "dopri5" and not isinstance(grid, torch.Tensor) else grid
    x, _ = sample_ode(
        score.at_time, sde, sde.prior_std * x_T, steps_or_grid, method=s.ode_method, rtol=s.rtol, atol=s.atol,
        t_end=s.t_end,
    )  # fmt: skip
    return x


def _sample_dpm(sde: SDE, s: SampleConfig, grid: Budget, x_T: torch.Tensor, score: Scores, generator):
    """DPM-Solver++(2M) (Lu et al. 2022b) on ``grid``, or ``steps`` steps of Lu et al.'s time-uniform grid:
    ``steps + 1`` times from 1 to ``1 / (steps + 1)``, the last evaluation's denoising the step to 0."""
    if not isinstance(grid, torch.Tensor):
        grid = noise.time_grid(grid, t_end=1 / (grid + 1), dtype=x_T.dtype, device=x_T.device)
    options = {"solver": "dpm++", "order": 2, "corrector": False, "lower_order_final": False}
    x, _ = sample_multistep(score.at_time, sde, sde.prior_std * x_T, grid, **options)
    return x


def _sample_fast(sde: SDE, s: SampleConfig, grid: Budget, x_T: torch.Tensor, score: Scores, generator):
    """``sample_fast`` with a budget of ``grid`` score evaluations (``scorefield sample --nfe``), or on the
    grid ``tune_grid`` stored for it."""
    x, _ = sample_fast(
        score.at_time, sde, sde.prior_std * x_T, grid, moments=score.moments, components=score.components
    )
    return x


def _sample_pc(
    sde: SDE,
    s: SampleConfig,
    grid: Budget,
    x_T: torch.Tensor,
    score: Scores,
    generator,
    predictor="reverse_diffusion",
    corrector=True,
):
    use_corrector = corrector and s.n_corrector > 0
    x, _ = sample_pc(
        score.at_time, sde, sde.prior_std * x_T, grid, predictor=predictor,
        corrector="langevin" if use_corrector else None, snr=s.snr, n_corrector_steps=max(s.n_corrector, 1),
        denoise=s.denoise, t_end=s.t_end, generator=generator,
    )  # fmt: skip
    return x


def _sample_em(sde: SDE, s: SampleConfig, grid: Budget, x_T: torch.Tensor, score: Scores, generator):
    return _sample_pc(sde, s, grid, x_T, score, generator, predictor="euler_maruyama", corrector=False)


def _sample_ald(sde: SDE, s: SampleConfig, grid: Budget, x_T: torch.Tensor, score: Scores, generator):
    """Annealed Langevin on the noise levels ``grid``, ``s.steps`` updates at each."""
    x, _ = annealed_langevin(
        score.at_sigma, float(grid[0]) * x_T, grid, n_steps_each=s.steps, step_size=s.step_size,
        denoise=s.denoise, generator=generator,
    )  # fmt: skip
    return x


# (sde, sample config, steps or grid, x_T, score functions, generator) -> samples in standardised units;
# the grid is a number of steps (of evaluations for fast), a time grid, or annealed Langevin's noise levels
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ode": _sample_ode,
    "dpm": _sample_dpm,
    "fast": _sample_fast,
    "pc": _sample_pc,
    "em": _sample_em,
    "ald": _sample_ald,
}
