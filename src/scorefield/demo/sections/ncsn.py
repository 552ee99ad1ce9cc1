"""5. Noise-conditional score networks: one network on a geometric ladder of noise levels, its error
at several of them, and naive and annealed Langevin with it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import losses, noise, viz
from ...distributions import GaussianMixture
from ...metrics import fisher_divergence, mmd
from ...score import NoiseConditionalScore
from ..document import Page
from ..experiments import run_naive_vs_annealed
from ..models import fit_model, mlp
from ..settings import EXTENT, SHOWN_LEVELS, Budget, Streams
from .common import ModeShares, Section, doc, m, mode_shares, uniform_grid, weights_text

__all__ = ["ANCHOR", "OPENING", "TITLE", "Chain", "Level", "NcsnNumbers", "compute", "write"]

ANCHOR, TITLE = "ncsn", "Noise-conditional score networks"
OPENING = (
    "We can choose L levels of noise: σ<sub>1</sub> &lt; σ<sub>2</sub> &lt; ⋯ &lt; σ<sub>L</sub>. [...] "
    "We can choose the noise levels in a geometric progression [...]. σ<sub>L</sub> can be the maximum "
    "pairwise distance between two datapoints [...] Usually, the loss weighting is λ(i) = σ<sub>i</sub>².",
    "Score Functions, Improved Score Matching",
)


@dataclass(frozen=True)
class Chain(ModeShares):
    """A chain's mode weights and their error, and the MMD² of its samples to exact samples."""

    mmd: float
    mmd_stderr: float


@dataclass(frozen=True)
class Level:
    """The learned score at one noise level: its index in the tutorial's numbering (``σ_1`` the
    smallest), ``σ``, and its relative Fisher divergence under ``p_σ`` and over the window."""

    index: int
    sigma: float
    fisher: float
    fisher_plane: float


@dataclass(frozen=True)
class NcsnNumbers:
    """The ladder (``sigma_max`` to ``sigma_min`` in ``n_levels`` levels), training and sampling times,
    the naive and annealed chains, the shown levels, and the annealed chain's step ``ε``."""

    sigma_max: float
    sigma_min: float
    n_levels: int
    train_s: float
    sample_s: float
    naive: Chain
    annealed: Chain
    levels: list[Level]
    step_size: float


def _shown_levels(sigmas: torch.Tensor) -> list[int]:
    """``SHOWN_LEVELS`` indices into ``sigmas`` (largest first), evenly spread, both ends included."""
    return sorted({int(round(i)) for i in np.linspace(0, len(sigmas) - 1, SHOWN_LEVELS)}, reverse=True)


def compute(
    mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams, out: Path
) -> Section[NcsnNumbers]:
    """5. A noise-conditional score network on a geometric ladder from the largest distance between
    two training points down to 0.1: its error at ``SHOWN_LEVELS`` levels (under ``p_σ`` and over the
    window), naive and annealed Langevin with it (mode weights, MMD² to exact samples), and an
    animation of annealed Langevin over each level's smoothed density (``out/annealed_langevin.gif``)."""
    b = budget
    sigma_max = noise.max_pairwise_distance(data, generator=streams.generator(50))
    sigma_min = 0.1
    n_levels = noise.num_levels(2, sigma_max, sigma_min)
    sigmas = noise.geometric_sigmas(sigma_max, sigma_min, n_levels)
    model = NoiseConditionalScore(mlp(streams.seed, b.hidden, depth=3, cond=True))
    wall = fit_model(
        model, lambda x, g: losses.ncsn(model, x, sigmas, generator=g), data, b.ncsn_steps, b.batch_size,
        streams.generator(51), lr=2e-3,
    )  # fmt: skip
    start = time.perf_counter()
    _, naive, annealed = run_naive_vs_annealed(
        mixture, n=b.n_samples, noise_score_fn=model, sigmas=sigmas, n_steps=b.langevin_steps,
        n_steps_each=b.n_steps_each, generator=streams.generator(52),
    )  # fmt: skip
    sample_s = time.perf_counter() - start
    truth = mixture.sample(b.n_samples, generator=streams.generator(53))
    plane = uniform_grid(EXTENT, 60)
    shown = _shown_levels(sigmas)
    levels = []
    for i in shown:
        sigma = float(sigmas[i])
        smoothed = mixture.smooth(sigma)
        fixed = viz.at_level(model, sigma)
        on_p = smoothed.sample(b.n_eval, generator=streams.generator(55))
        levels.append(
            Level(
                index=n_levels - i,  # the tutorial's numbering, sigma_1 the smallest
                sigma=sigma,
                fisher=fisher_divergence(fixed, smoothed.score, on_p),
                fisher_plane=fisher_divergence(fixed, smoothed.score, plane),
            )
        )
    numbers = NcsnNumbers(
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        n_levels=n_levels,
        train_s=wall,
        sample_s=sample_s,
        naive=_chain(naive, mixture, truth),
        annealed=_chain(annealed, mixture, truth),
        levels=levels,
        step_size=0.1 * sigma_min**2,
    )
    samples = viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT)
    scores = viz.plot_smoothed_scores(
        mixture, [float(sigmas[i]) for i in shown], model, EXTENT,
        labels=[f"σ{_subscript(n_levels - i)} = {float(sigmas[i]):.3g}" for i in shown],
    )  # fmt: skip
    g = streams.generator(54)
    x_init = -8.0 + 16.0 * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.annealed_langevin_animation(
        model, x_init, out / "annealed_langevin.gif", sigmas, step_size=numbers.step_size,
        n_steps_each=b.n_steps_each, n_frames=b.gif_frames, background_at=mixture.smooth,
        extent=EXTENT, generator=g,
    )  # fmt: skip
    return Section(numbers, {"ncsn_samples": samples, "noise_levels": scores, "annealed_langevin": gif})


def _chain(x: torch.Tensor, mixture: GaussianMixture, truth: torch.Tensor) -> Chain:
    shares = mode_shares(x, mixture)
    value, stderr = mmd(x, truth, return_stderr=True)
    return Chain(shares.weights, shares.error, value, stderr)


def _subscript(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def write(page: Page, nc: NcsnNumbers, budget: Budget) -> None:
    b = budget
    L = nc.n_levels
    page.para(
        "One network "
        + m(r"s_\theta(x, \sigma)")
        + " learns the score of every smoothed "
        + m(r"p_{\sigma_i}")
        + f" on L = {L} geometric levels, "
        + m(rf"\sigma_1 = {nc.sigma_min:g} < \sigma_2 < \cdots < \sigma_L = {nc.sigma_max:.3g}")
        + ", σ<sub>L</sub> the largest distance between two training points, with the tutorial's weighting "
        + m(r"\lambda(i) = \sigma_i^2")
        + f" ({b.ncsn_steps} steps, {nc.train_s:.1f} s; "
        + doc("noise-conditional-score-matching")
        + ", where the library lists the levels largest first, the order in which a sampler visits them):"
    )
    page.equation(
        r"J(\theta) = \frac{1}{L} \sum_{i=1}^{L} \lambda(i)\, \mathbb{E}_{x \sim p,\, z} "
        r"\Big[\tfrac12 \Big\| s_\theta(x + \sigma_i z, \sigma_i) + \frac{z}{\sigma_i} \Big\|^2\Big], \qquad "
        r"\lambda(i) = \sigma_i^2"
    )
    levels = nc.levels
    ordered = sorted(levels, key=lambda v: v.index)
    rows = "; ".join(
        f"σ<sub>{v.index}</sub> = {v.sigma:.3g}: {v.fisher:.2g} under p<sub>σ</sub>, "
        f"{v.fisher_plane:.2g} over the window"
        for v in sorted(levels, key=lambda v: v.index)
    )
    page.figure(
        "noise_levels",
        "The core figure of the score-functions tutorial's <em>Adding Noise</em>: at four of the levels, the "
        "smoothed density p<sub>σ</sub> and its exact score (left), and the learned score's error, times σ to "
        "put every level on one scale (right, one colour scale for all rows, with the outlines holding "
        "50/90/99% of p<sub>σ</sub>). At the smallest level the error is small only on the data, as in "
        "section 2; as σ grows p<sub>σ</sub> covers more of the window, the noisy training points reach "
        f"there, and the error over the window falls from {ordered[0].fisher_plane:.2g} (relative Fisher "
        f"divergence at σ<sub>{ordered[0].index}</sub>) to {ordered[-1].fisher_plane:.2g} "
        f"(σ<sub>{ordered[-1].index}</sub>). Per level: {rows}.",
        "smoothed density, its score and the learned score's error at four noise levels",
    )
    page.para(
        "Annealed Langevin runs Langevin dynamics at each level, from the largest to the smallest, each "
        "chain starting where the previous one ended, with a step that scales with the level's variance, and "
        "ends with one denoising step (" + doc("annealed-langevin") + "):"
    )
    page.equation(
        r"\text{for } i = L, L-1, \ldots, 1: \quad x \leftarrow x + \alpha_i\, s_\theta(x, \sigma_i) + "
        r"\sqrt{2 \alpha_i}\, z, \quad \alpha_i = \varepsilon \frac{\sigma_i^2}{\sigma_1^2}; \qquad "
        r"\text{then } x \leftarrow x + \sigma_1^2\, s_\theta(x, \sigma_1)",
        f"Here ε = {nc.step_size:g} and {b.n_steps_each} steps at each level; naive Langevin runs "
        f"{b.langevin_steps} steps at σ<sub>1</sub> alone.",
    )
    page.table(
        ["chain (learned score)", "mode weights", "mode-weight error (TV)", "MMD²", "± s.e."],
        [
            [name, weights_text(chain.weights), chain.error, chain.mmd, chain.mmd_stderr]
            for name, chain in (("naive", nc.naive), ("annealed", nc.annealed))
        ],
    )
    page.figure(
        "ncsn_samples",
        f"Naive and annealed Langevin with the learned noise-conditional score: naive keeps "
        f"{weights_text(nc.naive.weights)}, annealed finds {weights_text(nc.annealed.weights)}; MMD² to fresh exact "
        f"samples {nc.naive.mmd:.2g} &plusmn; {nc.naive.mmd_stderr:.2g} and "
        f"{nc.annealed.mmd:.2g} &plusmn; {nc.annealed.mmd_stderr:.2g}.",
        "samples of naive and annealed Langevin with the learned score",
    )
    page.figure(
        "annealed_langevin",
        f"Annealed Langevin with the learned score, the chain of the table: {b.gif_particles} particles from the "
        f"same uniform square through the L = {L} levels, from σ<sub>L</sub> = {nc.sigma_max:.3g} down to "
        f"σ<sub>1</sub> = {nc.sigma_min:g}, {b.n_steps_each} steps per level. Each frame's background is the "
        "smoothed density p<sub>σ</sub> of its level, on axes that stay fixed around the data: at the largest "
        "levels p<sub>σ</sub> is one bump tens of units across and most particles wander outside the window "
        "(the title counts them); as σ falls they gather where the mass is, then settle into the two modes in "
        "proportion to their weights.",
        "animation: annealed Langevin over the smoothed density of each noise level",
    )
