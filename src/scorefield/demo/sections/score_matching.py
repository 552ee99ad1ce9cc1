"""2. Score matching: one MLP trained with every objective (explicit, implicit with an exact or a
Hutchinson trace, sliced, denoising), scored by the relative Fisher divergence to the exact score, and
the basins of the learned field against the true one."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ... import losses, viz
from ...distributions import GaussianMixture
from ...metrics import fisher_divergence
from ..document import Page
from ..experiments import flow_basins
from ..models import fit_model, mlp
from ..settings import DSM_SIGMA, EXTENT, Budget, Streams
from .common import LABELS, Section, doc, m, percent, uniform_grid

__all__ = [
    "ANCHOR",
    "OPENING",
    "SHOWN",
    "TITLE",
    "Basins",
    "ObjectiveFit",
    "ScoreError",
    "ScoreMatchingNumbers",
    "compute",
    "write",
]

ANCHOR, TITLE = "score-matching", "Score matching"
OPENING = (
    "[Hyvärinen] show that we can write the gradient of the score matching objective in a way that "
    "doesn't contain the score function. Thus allowing us to estimate the score function without "
    "having access to it.",
    "Score functions, denoising and diffusion, Score matching",
)


@dataclass(frozen=True)
class ObjectiveFit:
    """One objective's model: its relative Fisher divergence to the exact score under p (``fisher``)
    and uniformly over the window (``fisher_plane``), its training time and steps."""

    fisher: float
    fisher_plane: float
    train_s: float
    steps: int


@dataclass(frozen=True)
class Basins:
    """Where gradient ascent along the learned field ends against the true field, on a ``grid`` x
    ``grid`` grid over the window: the share of points sent to the other mode (``wrong_fraction``) or
    to none, the nearest such point's distance from a mode, the share of them in the heavy mode's
    basin, and the mean length of the learned arrows against the true ones far from the data."""

    wrong_fraction: float
    nowhere_fraction: float
    wrong_min_distance: float
    wrong_from_heavy: float
    far_norm_ratio: float
    grid: int


@dataclass(frozen=True)
class ScoreError:
    """The ``SHOWN`` model's error ``‖s_θ - ∇log p‖``: at most in the window's corners, at most and
    in the median over the window."""

    corners: float
    plane_max: float
    plane_median: float


@dataclass(frozen=True)
class ScoreMatchingNumbers:
    objectives: dict[str, ObjectiveFit]
    basins: Basins
    error: ScoreError


SHOWN = "ism_exact"  # the score-matching objective whose learned field section 2 draws


def _score_matching_objectives(mixture: GaussianMixture) -> dict[str, Callable]:
    """``name -> (net, batch, generator) -> [B]`` for each objective; dsm trains at DSM_SIGMA."""
    return {
        "esm": lambda net, x, g: losses.esm(net, x, mixture.score),
        "ism_exact": lambda net, x, g: losses.ism(net, x, trace="exact"),
        "ism_hutchinson": lambda net, x, g: losses.ism(net, x, trace="hutchinson", generator=g),
        "ssm": lambda net, x, g: losses.ssm(net, x, generator=g),
        "dsm": lambda net, x, g: losses.dsm(lambda y, sigma: net(y), x, DSM_SIGMA, generator=g),
    }


BASIN_GRID = 45  # points a side on which the basins of the true and learned fields are compared


def _basins(mixture: GaussianMixture, net: torch.nn.Module) -> tuple[Basins, np.ndarray]:
    """Where the learned field ``net`` sends points (gradient ascent along it) against where the
    exact score does: the numbers, and the mask of disagreement on a ``BASIN_GRID`` grid over the
    window (rows are y)."""
    xs, ys = np.meshgrid(
        np.linspace(EXTENT[0], EXTENT[1], BASIN_GRID), np.linspace(EXTENT[2], EXTENT[3], BASIN_GRID)
    )
    points = torch.as_tensor(np.stack([xs.ravel(), ys.ravel()], 1), dtype=torch.float32)
    truth = flow_basins(mixture.score, points, mixture.means)
    learned = flow_basins(net, points, mixture.means)
    wrong = (learned != truth).numpy()
    distance = torch.cdist(points.double(), mixture.means.double()).min(1).values.numpy()
    far = distance > 4.0  # four standard deviations from both modes: where the data hardly go
    with torch.no_grad():
        true_norm = mixture.score(points).norm(dim=1).numpy()
        learned_norm = net(points).norm(dim=1).numpy()
    numbers = Basins(
        wrong_fraction=float(wrong.mean()),
        nowhere_fraction=float((learned == -1).double().mean()),
        wrong_min_distance=float(distance[wrong].min()) if wrong.any() else math.nan,
        wrong_from_heavy=float((truth[torch.as_tensor(wrong)] == 0).double().mean())
        if wrong.any()
        else math.nan,
        far_norm_ratio=float(learned_norm[far].mean() / true_norm[far].mean()),
        grid=BASIN_GRID,
    )
    return numbers, wrong.reshape(BASIN_GRID, BASIN_GRID)


def compute(
    mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams
) -> Section[ScoreMatchingNumbers]:
    """2. One MLP (the same initial weights) trained on ``data`` with every objective; per objective
    the relative Fisher divergence to the exact score under p and uniformly over the window (dsm:
    to the score of the smoothed mixture); the ``SHOWN`` objective's field with the region whose
    points it sends to the wrong mode, and its error."""
    b = budget
    x_eval = mixture.sample(b.n_eval, generator=streams.generator(20))
    smoothed = mixture.smooth(DSM_SIGMA)
    x_eval_smoothed = smoothed.sample(b.n_eval, generator=streams.generator(21))
    plane = uniform_grid(EXTENT, 60)
    fits, nets = {}, {}
    for i, (name, objective) in enumerate(_score_matching_objectives(mixture).items()):
        net = mlp(streams.seed, b.hidden, depth=2, cond=False)  # the same initial weights for every objective
        wall = fit_model(
            net, lambda x, g, f=objective, n=net: f(n, x, g), data, b.sm_steps, b.batch_size,
            streams.generator(30 + i),
        )  # fmt: skip
        reference, x_ref = (smoothed, x_eval_smoothed) if name == "dsm" else (mixture, x_eval)
        fits[name] = ObjectiveFit(
            fisher=fisher_divergence(net, reference.score, x_ref),
            fisher_plane=fisher_divergence(net, reference.score, plane),
            train_s=wall,
            steps=b.sm_steps,
        )
        nets[name] = net
    basins, wrong = _basins(mixture, nets[SHOWN])
    field = viz.plot_score_field(mixture, learned_score=nets[SHOWN], extent=EXTENT)
    if wrong.any():
        ax = field.axes[1]
        xs = np.linspace(EXTENT[0], EXTENT[1], BASIN_GRID)
        ys = np.linspace(EXTENT[2], EXTENT[3], BASIN_GRID)
        ax.contourf(xs, ys, wrong.astype(float), levels=[0.5, 1.5], colors=["#d62728"], alpha=0.25)
        ax.contour(xs, ys, wrong.astype(float), levels=[0.5], colors=["#d62728"], linewidths=1.2)
        ax.set_title("learned score\n(red: flows to the other mode)", fontsize="medium")
        field.axes[0].set_title("true score\n ", fontsize="medium")
    shown = nets[SHOWN]
    corners = 0.95 * torch.tensor([[EXTENT[0], EXTENT[2]], [EXTENT[1], EXTENT[3]]])  # beyond each mode
    with torch.no_grad():
        plane_error = (shown(plane) - mixture.score(plane)).norm(dim=1)
        corner_error = (shown(corners) - mixture.score(corners)).norm(dim=1)
    error = ScoreError(
        corners=corner_error.max().item(),
        plane_max=plane_error.max().item(),
        plane_median=plane_error.median().item(),
    )
    numbers = ScoreMatchingNumbers(objectives=fits, basins=basins, error=error)
    figures = {
        "learned_score_field": field,
        "score_error": viz.plot_score_error(mixture, nets[SHOWN], extent=EXTENT, data=data[:500]),
    }
    return Section(numbers, figures)


def write(page: Page, sm: ScoreMatchingNumbers, budget: Budget) -> None:
    b = budget
    objectives, basins = sm.objectives, sm.basins
    page.para(
        "Fitting " + m(r"s_\theta") + " to the score by least squares, the explicit objective, needs the "
        "true score. Integrating its cross term by parts removes it (Hyvärinen 2005; "
        + doc("implicit-score-matching")
        + "):"
    )
    page.equation(
        r"J_{\text{ESM}}(\theta) = \tfrac12\, \mathbb{E}_{p(x)} \|s_\theta(x) - \nabla_x \log p(x)\|^2 \quad "
        r"= \mathbb{E}_{p(x)} \Big[\tfrac12 \|s_\theta(x)\|^2 + \operatorname{tr} \nabla_x s_\theta(x)\Big] + C",
        "The score-functions tutorial writes ∇log p<sub>θ</sub> in place of ∇log p (that would compare the "
        "model with itself); the diffusion tutorial writes the implicit form doubled, ‖s‖² + 2∇·s, which has "
        "the same minimiser.",
    )
    page.para(
        "The trace costs one backward pass per dimension; Hutchinson's estimator replaces it by one random "
        "projection, "
        + m(r"\operatorname{tr} A = \mathbb{E}_v [v^\top A v]")
        + " for "
        + m(r"\mathbb{E}[v v^\top] = I")
        + ", and sliced score matching projects the whole objective (Song et al. "
        "2019). Denoising score matching (Vincent 2011) needs no derivative of the network at all: it learns "
        "the score of the data smoothed by a little noise, "
        + m(r"p_\sigma")
        + " (section 4 shows why that is the same problem):"
    )
    page.equation(
        r"J_{\text{DSM}}(\theta) = \tfrac12\, \mathbb{E}_{x \sim p}\, \mathbb{E}_{z \sim \mathcal{N}(0, I)} "
        r"\Big\| s_\theta(x + \sigma z) + \frac{z}{\sigma} \Big\|^2"
    )
    page.para(
        f"The same small MLP (width {b.hidden}, depth 2, one initial set of weights) is trained for "
        f"{b.sm_steps} steps with each objective on {b.n_train} samples. Each is scored by the relative Fisher "
        "divergence, 0 for a perfect fit and 1 for predicting zero (denoising score matching against the exact "
        "score of its smoothed " + m(r"p_\sigma") + "):"
    )
    page.equation(
        r"D(s_\theta) = \frac{\mathbb{E}\, \|s_\theta(x) - \nabla_x \log p(x)\|^2}{\mathbb{E}\, \|\nabla_x \log p(x)\|^2}"
    )
    page.table(
        [
            "objective",
            "relative Fisher divergence, x ∼ p",
            "same, x uniform over the window",
            "train time (s)",
        ],
        [[LABELS[k], v.fisher, v.fisher_plane, v.train_s] for k, v in objectives.items()],
    )
    under = [v.fisher for v in objectives.values()]
    plane = [v.fisher_plane for v in objectives.values()]
    page.para(
        f"Under p the relative Fisher divergences lie between {min(under):.2g} and {max(under):.2g}; uniformly "
        f"over the plotted window [&minus;9, 9]&sup2; the same models score between {min(plane):.2g} and "
        f"{max(plane):.2g}. The expectation under p is what every objective minimises, and p puts almost no "
        "weight on most of the window."
    )
    wrong = basins.wrong_fraction
    if wrong > 0:
        heavy = basins.wrong_from_heavy >= 0.5
        where = (
            f"From {percent(wrong)} of the window (red), gradient ascent along the learned field ends at the other "
            f"mode than along the true field: a band along the boundary, no nearer than "
            f"{basins.wrong_min_distance:.1f} to either mode, where the training data never go; "
            f"{percent(basins.wrong_from_heavy if heavy else 1 - basins.wrong_from_heavy, 0)} of it belongs to "
            f"the {'heavy' if heavy else 'light'} mode's basin, which the learned field hands to the "
            f"{'light' if heavy else 'heavy'} one."
        )
    else:
        where = "Gradient ascent along the learned field ends at the same mode as along the true one from every point of the grid."
    ratio = basins.far_norm_ratio
    page.figure(
        "learned_score_field",
        "True (left) and learned (right; implicit score matching, exact trace) score, drawn to one scale. "
        "Near the data they agree. More than 4 from both modes the learned arrows are on average "
        f"{ratio:.2f} times as long as the true ones, and the learned field has its own basins. {where} Each "
        f"point of a {basins.grid} &times; {basins.grid} grid was moved 300 steps of 0.1 along each field.",
        "true and learned score fields, with the region the learned field sends to the wrong mode",
    )
    page.quote(
        "Modeling the score function naively is difficult, because our estimates of the score function are "
        "inaccurate in low-density regions.",
        "Score Functions, Problems with Naive Langevin Sampling",
    )
    shown, err = objectives[SHOWN], sm.error
    page.figure(
        "score_error",
        "The error ‖s<sub>θ</sub> − ∇log p‖ of the same model. Left: small inside the outlines that hold "
        "50/90/99% of the mass (cyan), and largest along the boundary between the modes (up to "
        f"{err.plane_max:.2g}; the median over the window is {err.plane_median:.2g}), where the true "
        "score turns abruptly from one mode's field to the other's and the network smooths the turn. Far from "
        "the data the error is not uniformly large: in the corners beyond each mode, where no sample lies, it "
        f"is at most {err.corners:.2g}, because there the true score is almost the mode's own linear field, "
        "which the network carries on. What the data leave unconstrained is wrong where the true field is "
        "hard to guess, not merely where it is far. Right: the error at every grid point against log p there: "
        "it tends to grow as the density falls, with a wide spread. Its relative Fisher divergence is "
        f"{shown.fisher:.2g} under p and {shown.fisher_plane:.2g} uniformly over the window.",
        "map of the learned score's error, and the error against the log-density",
    )
