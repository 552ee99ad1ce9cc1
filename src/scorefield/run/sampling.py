"""How a finished run samples: the score functions of a label or of each row's cluster (``Scores``), and the
samplers ``Run.sample`` dispatches to by name (``SAMPLERS``: probability-flow ODE, DPM-Solver++, the
few-step ``sample_fast``, predictor-corrector, Euler-Maruyama, annealed Langevin), each taking prior draws
in standardised units and the run's settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..gaussian import DataMoments
from ..langevin import annealed_langevin
from ..multistep import sample_fast
from ..samplers import sample_dpm, sample_ode, sample_pc

if TYPE_CHECKING:
    from .finished import Run

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
    """The score functions a sampler of ``SAMPLERS`` uses: of ``p_t`` (``t``) and of ``p_sigma`` (``sigma``,
    annealed Langevin); a class's guided ones for a label."""

    t: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sigma: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    moments: DataMoments | None = None  # the Gaussian of what ``t`` models, when known: sample_fast's start
    components: int | torch.Tensor | None = None  # with a stack of Gaussians: each sample's


def _sample_ode(run: Run, x_T: torch.Tensor, steps: int, generator, score: Scores) -> torch.Tensor:
    s = run.config.sample
    n_steps = None if s.ode_method == "dopri5" else steps
    x, _ = sample_ode(
        score.t, run.setup.sde, run.setup.sde.prior_std * x_T, method=s.ode_method,
        n_steps=n_steps, rtol=s.rtol, atol=s.atol, eps=s.eps,
    )  # fmt: skip
    return x


def _sample_dpm(run: Run, x_T: torch.Tensor, steps: int, generator, score: Scores) -> torch.Tensor:
    x, _ = sample_dpm(score.t, run.setup.sde, run.setup.sde.prior_std * x_T, steps)
    return x


def _sample_fast(run: Run, x_T: torch.Tensor, steps: int, generator, score: Scores) -> torch.Tensor:
    """``sample_fast`` with a budget of ``steps`` score evaluations (``scorefield sample --nfe``), on the
    run's tuned grid for that budget when ``tune_grid`` stored one (not for a class's or a cluster's samples
    when it starts from the data's Gaussian, which is not theirs)."""
    grid = run.fast_grid(steps)
    if grid is not None and float(grid[0]) < 1 and score.moments is None:
        grid = None
    x_T = run.setup.sde.prior_std * x_T
    x, _ = sample_fast(
        score.t, run.setup.sde, x_T, steps, time_grid=grid, moments=score.moments, components=score.components
    )
    return x


def _sample_pc(
    run: Run,
    x_T: torch.Tensor,
    steps: int,
    generator,
    score: Scores,
    predictor="reverse_diffusion",
    corrector=True,
):
    s = run.config.sample
    use_corrector = corrector and s.n_corrector > 0
    return sample_pc(
        score.t, run.setup.sde, run.setup.sde.prior_std * x_T, steps, predictor=predictor,
        corrector="langevin" if use_corrector else None, snr=s.snr, n_corrector_steps=max(s.n_corrector, 1),
        denoise=s.denoise, eps=s.eps, generator=generator,
    )  # fmt: skip


def _sample_em(run: Run, x_T: torch.Tensor, steps: int, generator, score: Scores) -> torch.Tensor:
    return _sample_pc(run, x_T, steps, generator, score, predictor="euler_maruyama", corrector=False)


def _sample_ald(run: Run, x_T: torch.Tensor, steps: int, generator, score: Scores) -> torch.Tensor:
    s, sigmas = run.config.sample, run.setup.sigmas
    return annealed_langevin(
        score.sigma,
        float(sigmas[0]) * x_T,
        sigmas,
        s.step_lr,
        steps,
        denoise=s.denoise,
        generator=generator,
    )


# (run, x_T, steps, generator, score functions) -> samples in standardised units
SAMPLERS: dict[str, Callable[[Run, torch.Tensor, int, torch.Generator, Scores], torch.Tensor]] = {
    "ode": _sample_ode,
    "dpm": _sample_dpm,
    "fast": _sample_fast,
    "pc": _sample_pc,
    "em": _sample_em,
    "ald": _sample_ald,
}
