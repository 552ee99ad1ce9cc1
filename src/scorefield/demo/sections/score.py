"""1. The score of a mixture: the exact score of the tutorials' two-Gaussian mixture, its field, a
slice through its modes, its divergence, and the sinks of three close components that interfere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from ... import viz
from ...distributions import GaussianMixture, Parzen
from ...likelihood import divergence
from ..document import Page
from ..settings import EXTENT, Budget, Streams
from .common import Section, doc, m, uniform_grid

__all__ = [
    "ANCHOR",
    "OPENING",
    "TITLE",
    "Bumps",
    "Interfering",
    "ScoreNumbers",
    "compute",
    "interfering_mixture",
    "write",
]

ANCHOR, TITLE = "score", "The score of a mixture"
OPENING = (
    "The score function is the gradient of the log of the probability density function. [...] "
    "Modeling the score function does not require knowing the normalizing constant.",
    "Score Functions, Definition",
)


@dataclass(frozen=True)
class Bumps:
    """The divergence of the score of the samples' own density, a Gaussian bump of width ``sigma`` on
    each: its median at the points, a lone bump's ``-d/σ²``, and its largest value over the window."""

    sigma: float
    at_points_median: float
    single_bump: float
    max: float


@dataclass(frozen=True)
class Interfering:
    """Three close components: their weights, standard deviations and own sinks ``-d/σ_k²``, and the
    whole divergence at their means and its largest value."""

    weights: list[float]
    stds: list[float]
    sinks: list[float]
    divergence_at_means: list[float]
    divergence_max: float


@dataclass(frozen=True)
class ScoreNumbers:
    """The mixture's weights; how far the boundary between the modes sits from their midpoint; the
    exact score's divergence at the modes and its largest value over the window."""

    true_weights: list[float]
    boundary_shift: float
    divergence_at_modes: list[float]
    divergence_max: float
    bumps: Bumps
    interfering: Interfering


def interfering_mixture() -> GaussianMixture:
    """Three close components of different widths and weights, whose sinks interfere: standard
    deviations 0.5, 1 and 0.7, weights 0.5, 0.3 and 0.2."""
    stds = torch.tensor([0.5, 1.0, 0.7], dtype=torch.float64)
    means = torch.tensor([[-1.5, -0.5], [1.5, -0.5], [0.0, 1.8]], dtype=torch.float64)
    covs = stds[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64)
    return GaussianMixture(means, covs, [0.5, 0.3, 0.2])


DATA_BUMP = 0.4  # width of the Gaussian bump on each sample in the divergence of the samples' density


def _divergence_at(score_fn: Callable, x: torch.Tensor) -> list[float]:
    """The exact divergence of ``score_fn`` at the points ``x``."""
    unused_time = torch.zeros(x.shape[0], dtype=x.dtype)
    return divergence(lambda y, _: score_fn(y), x, unused_time, kind="exact").tolist()


def compute(mixture: GaussianMixture, streams: Streams) -> Section[ScoreNumbers]:
    """1. The exact score of the mixture: its field, a slice through its modes beside one Gaussian's
    score line, its divergence, and the interfering sinks of three close components."""
    fig = Figure(figsize=(8.4, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    viz.plot_gaussian_score_line(ax=left)
    lo, hi = EXTENT[0], EXTENT[1]
    viz.plot_score_slice(mixture, [lo, lo], [hi, hi], ax=right)
    shown = mixture.sample(200, generator=streams.generator(10))
    close = interfering_mixture()
    grid = uniform_grid(EXTENT, 120).double()
    close_grid = uniform_grid((-4.5, 4.5, -3.5, 4.5), 120).double()
    exact = mixture.to(torch.float64)
    u = torch.linspace(0.0, 1.0, 100_001, dtype=torch.float64)[:, None]
    line = exact.means[0] + u * (exact.means[1] - exact.means[0])  # from the heavy mode to the light one
    crossing = int(torch.nonzero(exact.responsibilities(line)[:, 1] > 0.5)[0])
    # the data's own density smoothed by a bump of width DATA_BUMP on each point: what denoising score
    # matching learns from these samples at that noise; its score's sinks sit on the points themselves
    bumps = Parzen(shown.double(), DATA_BUMP)
    at_points = _divergence_at(bumps.score, bumps.data)
    numbers = ScoreNumbers(
        true_weights=mixture.weights.tolist(),
        boundary_shift=float((line[crossing] - exact.means.mean(0)).norm()),
        divergence_at_modes=_divergence_at(exact.score, exact.means),
        divergence_max=max(_divergence_at(exact.score, grid)),
        bumps=Bumps(
            sigma=DATA_BUMP,
            at_points_median=float(np.median(at_points)),
            single_bump=-2 / DATA_BUMP**2,
            max=max(_divergence_at(bumps.score, grid)),
        ),
        interfering=Interfering(
            weights=close.weights.tolist(),
            stds=close.covs[:, 0, 0].sqrt().tolist(),
            sinks=(-torch.linalg.inv(close.covs).diagonal(dim1=-2, dim2=-1).sum(-1)).tolist(),
            divergence_at_means=_divergence_at(close.score, close.means),
            divergence_max=max(_divergence_at(close.score, close_grid)),
        ),
    )
    field = viz.plot_score_field(mixture, extent=EXTENT)
    field.set_size_inches(4.6, 4.8)
    figures = {
        "score_field": field,
        "score_lines": fig,
        "score_divergence": viz.plot_score_divergence(
            mixture, extent=EXTENT, grid=120, arrows=15, data=shown
        ),
        "score_divergence_data": viz.plot_score_divergence(
            bumps, extent=EXTENT, grid=160, arrows=0, data=shown
        ),
        "interfering_sinks": viz.plot_interfering_sinks(close, extent=(-4.5, 4.5, -3.5, 4.5)),
    }
    return Section(numbers, figures)


def write(page: Page, sc: ScoreNumbers, budget: Budget) -> None:
    page.para(
        "The target throughout is the tutorials' mixture of two Gaussians in the plane, "
        + m(r"p(x) = 0.8\, \mathcal{N}(x; -(5, 5), I) + 0.2\, \mathcal{N}(x; (5, 5), I)")
        + ". Its score is the gradient of its log-density; for a model written as an energy, the "
        "normalising constant drops out of it:"
    )
    page.equation(
        r"s(x) = \nabla_x \log p(x), \qquad p_\theta(x) = \frac{e^{-f_\theta(x)}}{Z_\theta} \quad \Rightarrow \quad "
        r"\nabla_x \log p_\theta(x) = -\nabla_x f_\theta(x) - \nabla_x \log Z_\theta = -\nabla_x f_\theta(x)"
    )
    page.para(
        "For one Gaussian the score is a straight line through the mean, and for a mixture it is the "
        "responsibility-weighted average of its components' lines (" + doc("gaussians-and-mixtures") + "):"
    )
    page.equation(
        r"\nabla_x \log \mathcal{N}(x; \mu, \sigma^2 I) = -\frac{x - \mu}{\sigma^2}, \qquad "
        r"s(x) = \sum_k r_k(x) \Big(-\frac{x - \mu_k}{\sigma_k^2}\Big), \quad "
        r"r_k(x) = \frac{w_k \mathcal{N}(x; \mu_k, \sigma_k^2 I)}{p(x)}",
        "The score-functions tutorial writes −2(x − μ)/σ²: its exponent lacks the ½ of the Gaussian's.",
    )
    page.figure(
        "score_field",
        "The exact score of the mixture (arrows) over its density (blue): the counterpart of the "
        "score-functions tutorial's <em>score function of a mixture of 2 Gaussians</em>. Every arrow points to "
        "the mode whose basin it lies in and grows linearly with the distance from it; along the diagonal from "
        "top left to bottom right, where the responsibilities cross, the field turns from one mode to the "
        "other.",
        "arrows of the exact score over the two-Gaussian density",
    )
    page.figure(
        "score_lines",
        "Left: the score of one Gaussian, the line −(x − μ)/σ² through zero at the mean (the diffusion "
        "tutorial's aside on the score of a Gaussian). Right: the mixture along the line through both modes. Its "
        "score (red) follows the heavy mode's line (dashed) up to the point where the responsibilities cross "
        "(dotted), then jumps to the light mode's line: piecewise nearly linear, as the score-functions "
        "tutorial says, the kind of function a network of ReLU-like units draws easily.",
        "score of one Gaussian, and the mixture's score along the line through its modes",
    )
    div = sc.divergence_at_modes
    page.para(
        "The diffusion tutorial reads the implicit score-matching objective (next section) as asking for a score "
        "that is a sink at the data, and a larger sink where the density is higher. The divergence "
        + m(r"\nabla \cdot s")
        + " measures sinks (negative) and sources (positive); for a mixture it splits into each component's own "
        "sink and a term that is never negative, the spread of the component scores under the "
        "responsibilities:"
    )
    page.equation(
        r"\nabla \cdot s(x) = \sum_k r_k(x) \Big(-\frac{d}{\sigma_k^2}\Big) + "
        r"\sum_k r_k(x)\, \|s_k(x) - s(x)\|^2, \qquad s_k(x) = -\frac{x - \mu_k}{\sigma_k^2}"
    )
    page.figure(
        "score_divergence",
        f"The divergence of the exact score, sinks in blue and sources in red, each sign on its own colour "
        f"scale. At the two modes it is {div[0]:.3g} and {div[1]:.3g}: the same sink, though one mode holds 0.8 "
        "of the mass and the other 0.2. The divergence of a Gaussian's score is −d/σ² (here −2 in d = 2 "
        "dimensions): it is set by the component's width, not by its weight, and it is the same everywhere in "
        "its basin, so the whole plane is one uniform sink but for a ridge of sources (up to "
        f"{sc.divergence_max:.3g}) along the boundary, where the responsibilities are split and the two "
        "fields point apart. So a denser place is a deeper sink when it is denser because its component is "
        "narrower, not because the component is heavier; the weights only move the boundary, which sits "
        f"{sc.boundary_shift:.2f} from the midpoint of the modes, towards the light one. Black points: "
        "200 samples.",
        "divergence of the exact score: uniform sinks of -2 and a ridge of sources between the modes",
    )
    bumps = sc.bumps
    page.para(
        "Where, then, are the sinks at the data? Implicit score matching is fitted to samples, not to p, and "
        "what samples have is their own density, a spike at each point. Smoothed by a Gaussian bump of width "
        f"σ = {bumps.sigma:g} on each point (what denoising score matching learns from them at that noise), "
        "its score flows into every point, and the points stand out as sinks:"
    )
    page.figure(
        "score_divergence_data",
        "The divergence of the score of the 200 samples above, each smoothed by a Gaussian bump of width "
        f"σ = {bumps.sigma:g}. Look at the black points: each sits in a blue sink (median "
        f"{bumps.at_points_median:.3g} at the points; a lone bump's is −d/σ² = {bumps.single_bump:.3g}, "
        "shallower where bumps overlap), and red sources fill the gaps between them (up to "
        f"{bumps.max:.3g}), where the field points apart towards different points. This is the picture of "
        'the tutorial\'s "the score should be a sink at the data": it holds for the density of the samples '
        "a network sees; the figure above is the limit it approaches as the samples grow and σ shrinks.",
        "divergence of the smoothed samples' score: a sink at every sample, sources between them",
    )
    it = sc.interfering
    stds = ", ".join(f"{v:g}" for v in it.stds)
    sinks = ", ".join(f"{v:.3g}" for v in it.sinks)
    page.figure(
        "interfering_sinks",
        "Sinks that interfere: the diffusion tutorial's figure of sinks drawn alone and then interfering, "
        f"computed exactly for three close components with standard deviations {stds} and weights "
        f"{', '.join(f'{v:g}' for v in it.weights)}. Left: the first term of the equation above, each "
        f"component's own sink −d/σ<sub>k</sub>² ({sinks}) where it is responsible; the narrowest component "
        "has the deepest sink although its weight is not the largest. Right: the whole divergence. Where the "
        "components share the responsibility the second term lifts it, into sources of up to "
        f"{it.divergence_max:.3g} on the rings between them; at the three means it is "
        f"{', '.join(f'{v:.3g}' for v in it.divergence_at_means)}, the components' own sinks.",
        "divergence of three close components alone and together",
    )
