"""Figures of a score field: the field over its density (true beside learned), the learned field's
error against the true one, its divergence (sinks at the data), and the one-dimensional Gaussian
score line; plus ``at_level``, which fixes a conditional model's noise level or time so that its
field can be drawn.

Each figure that evaluates a model or a distribution puts its grid on ``device`` (default the CPU)
in ``dtype`` (default float32), as ``scorefield.viz.base`` describes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..distributions import Gaussian
from ..likelihood import divergence
from .base import (
    CPU,
    SAMPLE_COLOR,
    ArrayLike,
    Density,
    Device,
    Extent,
    ScoreFn,
    _density_contours,
    _density_image,
    _evaluate,
    _figure,
    _frame,
    _grid,
    _is_density,
    _label_plane,
    _numpy,
    _resolve_extent,
    _scatter,
    _score_of,
)

__all__ = [
    "at_level",
    "plot_gaussian_score_line",
    "plot_score_divergence",
    "plot_score_error",
    "plot_score_field",
]


def at_level(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], level: float) -> ScoreFn:
    """A conditional score ``s(x, level)`` (a noise level ``σ`` or a time ``t``) fixed at one level."""

    def score(x: torch.Tensor) -> torch.Tensor:
        return score_fn(x, torch.full((x.shape[0],), float(level), dtype=x.dtype, device=x.device))

    return score


def plot_score_field(
    true_dist_or_score: Density | ScoreFn,
    learned_score: ScoreFn | None = None,
    extent: Extent | None = None,
    grid: int = 20,
    data: ArrayLike | None = None,
    normalize: bool = False,
    density_grid: int = 100,
    columns: Sequence[str] | None = None,
    *,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    """The score-functions tutorial's "score function of a mixture of 2 Gaussians": arrows over the density, true and learned.

    One panel per field (true, then learned if given), ``grid x grid`` arrows each. An arrow at
    ``x`` runs from ``x`` towards ``x + c s(x)`` in the plane's own coordinates, with one constant
    ``c`` for both panels (the longest true arrow spans 0.9 of a grid cell, a cell measured along
    each axis in its own units), so the two compare by eye; with ``normalize`` every arrow spans 0.8
    of a cell and shows only the direction. When the first argument is a distribution its density
    is drawn under both fields; ``data`` is scattered on top; ``columns`` names the axes. Both
    fields (and the density) are evaluated on ``device`` in ``dtype``.
    """
    dist = true_dist_or_score if _is_density(true_dist_or_score) else None
    extent = _resolve_extent(extent, dist, data, device=device)
    xs, ys, points = _grid(extent, grid)
    compared = _is_density(true_dist_or_score) or learned_score is not None
    first = _evaluate(_score_of(true_dist_or_score), points, device, dtype)
    fields = {"true score" if compared else "score": first}
    if learned_score is not None:
        fields["learned score"] = _evaluate(learned_score, points, device, dtype)
    cell = np.array([extent[1] - extent[0], extent[3] - extent[2]]) / max(grid - 1, 1)

    def in_cells(field: np.ndarray) -> np.ndarray:  # an arrow's length counted in grid cells per axis
        return np.linalg.norm(field / cell, axis=1)

    longest = float(in_cells(first).max()) or 1.0
    fig, axes = _figure(1, len(fields))
    for ax, (title, field) in zip(axes[0], fields.items(), strict=True):
        if dist is not None:
            _density_image(ax, dist, extent, density_grid, device, dtype)
        if normalize:
            field = field / np.maximum(in_cells(field), 1e-12)[:, None]
            scale = 1 / 0.8
        else:
            scale = longest / 0.9
        u, v = field[:, 0].reshape(xs.shape), field[:, 1].reshape(xs.shape)
        ax.quiver(xs, ys, u, v, angles="xy", scale_units="xy", scale=scale, width=0.004, color="k")
        if data is not None:
            _scatter(ax, _numpy(data), "data", SAMPLE_COLOR, size=2.0, alpha=0.5)
        _frame(ax, extent)
        _label_plane(ax, columns)
        ax.set_title(title)
    return fig


def plot_score_error(
    true_dist: Density,
    learned_score: ScoreFn,
    extent: Extent | None = None,
    grid: int = 60,
    data: ArrayLike | None = None,
    *,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    """The score-functions tutorial's "inaccurate in low-density regions": the error ``||s_θ - ∇log p||`` under density contours.

    Left: the error map, with the highest-density regions holding 50/90/99% of the mass outlined.
    Right: the error at every grid point against ``log p`` there. The title compares the error
    weighted by ``p`` (the Fisher divergence that training minimises, by quadrature on the grid)
    with its plain average over the window, which the low-density regions dominate. Both scores
    and the density are evaluated on ``device`` in ``dtype``.
    """
    extent = _resolve_extent(extent, true_dist, data, device=device)
    _, _, points = _grid(extent, grid)
    true = _evaluate(true_dist.score, points, device, dtype)
    error = np.linalg.norm(_evaluate(learned_score, points, device, dtype) - true, axis=1)
    log_p = _evaluate(true_dist.log_prob, points, device, dtype)
    weights = np.exp(log_p - log_p.max())
    weighted = float((weights * error**2).sum() / weights.sum())
    fig, axes = _figure(1, 2)
    ax_map, ax_scatter = axes[0]
    image = ax_map.imshow(
        error.reshape(grid, grid), origin="lower", extent=extent, cmap="magma", aspect="auto"
    )
    fig.colorbar(image, ax=ax_map, shrink=0.8, label="‖s_θ − ∇log p‖")
    _density_contours(ax_map, true_dist, extent, grid, device, dtype)
    if data is not None:
        _scatter(ax_map, _numpy(data), "data", "c", size=2.0, alpha=0.4)
    _frame(ax_map, extent)
    ax_map.set_title("score error")
    ax_scatter.scatter(log_p, error, s=3, c="C0", alpha=0.5, linewidths=0, label="grid points")
    ax_scatter.set_xlabel("log p(x)")
    ax_scatter.set_ylabel("‖s_θ(x) − ∇log p(x)‖")
    ax_scatter.set_title("error vs density")
    fig.suptitle(f"E_p‖error‖² = {weighted:.3g}   plane mean ‖error‖² = {float((error**2).mean()):.3g}")
    return fig


def plot_gaussian_score_line(
    mean: float = 0.0, std: float = 1.0, extent: tuple[float, float] | None = None, n: int = 201
) -> Figure:
    """The diffusion tutorial's aside "the score function of a gaussian": ``s(x) = -(x - μ)/σ²``, with the density.

    The score (left axis) is drawn from ``scorefield.distributions.Gaussian`` in one dimension; the
    density ``N(x; μ, σ²)`` shares the x axis on a second y axis. The score crosses zero at the mean.
    """
    dist = Gaussian(torch.tensor([mean], dtype=torch.float64), torch.tensor([[std**2]], dtype=torch.float64))
    lo, hi = extent if extent is not None else (mean - 4 * std, mean + 4 * std)
    x = torch.linspace(lo, hi, n, dtype=torch.float64)[:, None]
    fig, axes = _figure(1, 1, size=4.0)
    ax = axes[0, 0]
    (score_line,) = ax.plot(x[:, 0], dist.score(x)[:, 0], color="C3", label="score s(x) = −(x − μ)/σ²")
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.axvline(mean, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel("x")
    ax.set_ylabel("score", color="C3")
    ax_density = ax.twinx()
    (density_line,) = ax_density.plot(
        x[:, 0], dist.log_prob(x).exp(), color="C0", label="density N(x; μ, σ²)"
    )
    ax_density.set_ylabel("density", color="C0")
    ax_density.set_ylim(bottom=0)
    ax.set_title(f"Gaussian score, μ = {mean:g}, σ = {std:g}")
    ax_density.legend(handles=[score_line, density_line], loc="lower left", fontsize="small")
    return fig


def plot_score_divergence(
    score: Density | ScoreFn,
    extent: Extent | None = None,
    grid: int = 40,
    data: ArrayLike | None = None,
    arrows: int = 15,
    *,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    """The diffusion tutorial's "the score function should be a sink at the data points": ``∇·s(x)`` over the plane.

    The divergence is exact (the trace of the autograd Jacobian, ``scorefield.likelihood.divergence``).
    Negative divergence (blue) is a sink: the score field converges there, at the data. The field's
    arrows (``arrows x arrows``, 0 for none) and the ``data`` are drawn on top. The score is
    evaluated on ``device`` in ``dtype``.
    """
    extent = _resolve_extent(extent, data, score if _is_density(score) else None, device=device)
    score_fn = _score_of(score)
    _, _, points = _grid(extent, grid)
    x = torch.as_tensor(points, dtype=dtype, device=device)
    unused_time = torch.zeros(x.shape[0], dtype=dtype, device=device)
    div = _numpy(divergence(lambda y, _: score_fn(y), x, unused_time, kind="exact"))
    bound = float(np.abs(div).max()) or 1.0
    fig, axes = _figure(1, 1, size=4.2)
    ax = axes[0, 0]
    image = ax.imshow(
        div.reshape(grid, grid),
        origin="lower",
        extent=extent,
        cmap="RdBu_r",
        vmin=-bound,
        vmax=bound,
        aspect="auto",
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label="∇·s(x)")
    if arrows:
        ax_x, ax_y, arrow_points = _grid(extent, arrows)
        field = _evaluate(score_fn, arrow_points, device, dtype)
        ax.quiver(
            ax_x,
            ax_y,
            field[:, 0].reshape(ax_x.shape),
            field[:, 1].reshape(ax_x.shape),
            angles="xy",
            color="k",
            width=0.004,
        )
    if data is not None:
        ax.scatter(*_numpy(data).T, s=30, c="k", edgecolors="w", linewidths=1.0, label="data")
    _frame(ax, extent)
    ax.set_title("∇·s: sinks (blue) at the data")
    return fig
