"""3. Langevin dynamics with the exact score: an animation of particles from a uniform square, and
naive against annealed Langevin, their mode weights and their samples."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import viz
from ...distributions import GaussianMixture
from ..document import Page
from ..experiments import run_naive_vs_annealed
from ..settings import EXTENT, Budget, Streams
from .common import ModeShares, Section, doc, mode_shares, percent, weights_text

__all__ = ["ANCHOR", "OPENING", "TITLE", "LangevinNumbers", "compute", "write"]

ANCHOR, TITLE = "langevin", "Langevin dynamics"
OPENING = (
    "As the step size ε → 0, and the number of steps K → ∞, this will result in a sample from p(x).",
    "Score Functions, Langevin Sampling",
)


@dataclass(frozen=True)
class LangevinNumbers:
    """The mode weights of naive and annealed Langevin against the mixture's ``true_weights``, their
    wall time, and the share of the animation's particles that start on the light mode's side."""

    naive: ModeShares
    annealed: ModeShares
    true_weights: list[float]
    wall_s: float
    gif_start_upper: float


def compute(
    mixture: GaussianMixture, budget: Budget, streams: Streams, out: Path
) -> Section[LangevinNumbers]:
    """3. Langevin dynamics with the exact score: an animation from a uniform square (``out/langevin.gif``,
    frames log-spaced in the step), and naive against annealed Langevin, their mode weights and the samples."""
    b = budget
    lo, hi = -8.0, 8.0
    g = streams.generator(40)
    x_init = lo + (hi - lo) * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.langevin_animation(
        mixture.score, x_init, out / "langevin.gif", step_size=0.05, n_steps=b.gif_steps,
        n_frames=b.gif_frames, background=mixture, extent=EXTENT, generator=g, spacing="log",
    )  # fmt: skip
    start = time.perf_counter()
    _, naive, annealed = run_naive_vs_annealed(
        mixture, n=b.n_samples, n_steps=b.langevin_steps, n_steps_each=b.n_steps_each,
        generator=streams.generator(41),
    )  # fmt: skip
    wall = time.perf_counter() - start
    numbers = LangevinNumbers(
        naive=mode_shares(naive, mixture),
        annealed=mode_shares(annealed, mixture),
        true_weights=mixture.weights.tolist(),
        wall_s=wall,
        gif_start_upper=float(((x_init[:, 0] + x_init[:, 1]) > 0).double().mean()),
    )
    figures = {
        "langevin": gif,
        "naive_vs_annealed": viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT),
    }
    return Section(numbers, figures)


def write(page: Page, lv: LangevinNumbers, budget: Budget) -> None:
    b = budget
    page.equation(
        r"x_{i+1} = x_i + \varepsilon\, \nabla_x \log p(x_i) + \sqrt{2 \varepsilon}\, z_i, \qquad "
        r"z_i \sim \mathcal{N}(0, I)",
        "The chain's law tends to p as ε → 0 and the number of steps grows ("
        + doc("langevin-dynamics")
        + ").",
    )
    page.figure(
        "langevin",
        f"{b.gif_particles} particles, uniform on the square [−8, 8]², follow Langevin dynamics with the exact "
        f"score (ε = 0.05, {b.gif_steps} steps; the frames are log-spaced in the step, as the chains move most "
        "at first): the score-functions tutorial's animation of Langevin sampling. Each particle falls into "
        "the basin it starts in and stays there: "
        f"{percent(lv.gif_start_upper, 0)} of them start on the light mode's side of the diagonal, and end in "
        "the light mode, which holds 20% of the mass.",
        "animation: particles under Langevin dynamics settle into the mode of the basin they start in",
    )
    page.para(
        "With separated modes, &ldquo;as the number of steps grows&rdquo; means waiting for a jump across a "
        "valley of density e<sup>&minus;25</sup> ("
        + doc("naive-versus-annealed-langevin-on-separated-modes")
        + "). Annealed Langevin (Song &amp; Ermon 2019) starts on the mixture smoothed by a noise as wide as the "
        "data, where the modes overlap and the score sees both, and lowers the noise level by level. Here both "
        f"chains use exact scores from the same uniform start: naive Langevin {b.langevin_steps} steps of 0.05 on "
        f"the score of p (smoothed by σ = 0.01), annealed Langevin {b.n_steps_each} steps at each of 20 levels."
    )
    truth = lv.true_weights
    page.table(
        ["chain", "mode weights (measured)", "true weights", "mode-weight error (TV)"],
        [
            [f"naive Langevin ({b.langevin_steps} steps)", weights_text(lv.naive.weights), weights_text(truth),
             lv.naive.error],
            [f"annealed Langevin ({b.n_steps_each} steps per level)", weights_text(lv.annealed.weights), weights_text(truth),
             lv.annealed.error],
        ],
    )  # fmt: skip
    page.figure(
        "naive_vs_annealed",
        f"Naive and annealed Langevin with the exact score, from one uniform start. The naive chain keeps "
        f"about the split of its starting points ({weights_text(lv.naive.weights)}); annealing recovers "
        f"{weights_text(lv.annealed.weights)} against the true {weights_text(truth)}.",
        "samples of naive and annealed Langevin over the density",
    )
