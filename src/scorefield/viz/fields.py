"""Figures of a score field: the field over its density (true beside learned), the learned field's
error against the true one, its divergence (sinks at the data), and the one-dimensional Gaussian
score line; plus ``at_level``, which fixes a conditional model's noise level or time so that its
field can be drawn.

Each figure that evaluates a model or a distribution puts its grid on ``device`` (default the CPU)
in ``dtype`` (default float32), as ``scorefield.viz.base`` describes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib import colors, ticker
from matplotlib.axes import Axes
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
    draw_density_contours,
    draw_density_image,
    evaluate_on,
    is_density,
    label_plane,
    new_figure,
    plane_grid,
    resolve_extent,
    scatter_points,
    score_of,
    set_window,
    to_numpy,
)

ERROR_LABEL = r"$\|s_\theta(x) - \nabla_x \log p(x)\|$"

__all__ = [
    "at_level",
    "plot_interfering_sinks",
    "plot_score_slice",
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
    dist = true_dist_or_score if is_density(true_dist_or_score) else None
    extent = resolve_extent(extent, dist, data, device=device)
    xs, ys, points = plane_grid(extent, grid)
    compared = is_density(true_dist_or_score) or learned_score is not None
    first = evaluate_on(score_of(true_dist_or_score), points, device, dtype)
    fields = {"true score" if compared else "score": first}
    if learned_score is not None:
        fields["learned score"] = evaluate_on(learned_score, points, device, dtype)
    cell = np.array([extent[1] - extent[0], extent[3] - extent[2]]) / max(grid - 1, 1)

    def in_cells(field: np.ndarray) -> np.ndarray:  # an arrow's length counted in grid cells per axis
        return np.linalg.norm(field / cell, axis=1)

    longest = float(in_cells(first).max()) or 1.0
    fig, axes = new_figure(1, len(fields))
    for ax, (title, field) in zip(axes[0], fields.items(), strict=True):
        if dist is not None:
            draw_density_image(ax, dist, extent, density_grid, device, dtype)
        if normalize:
            field = field / np.maximum(in_cells(field), 1e-12)[:, None]
            scale = 1 / 0.8
        else:
            scale = longest / 0.9
        u, v = field[:, 0].reshape(xs.shape), field[:, 1].reshape(xs.shape)
        ax.quiver(xs, ys, u, v, angles="xy", scale_units="xy", scale=scale, width=0.004, color="k")
        if data is not None:
            scatter_points(ax, to_numpy(data), "data", SAMPLE_COLOR, size=2.0, alpha=0.5)
        set_window(ax, extent)
        label_plane(ax, columns)
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
    extent = resolve_extent(extent, true_dist, data, device=device)
    _, _, points = plane_grid(extent, grid)
    true = evaluate_on(true_dist.score, points, device, dtype)
    error = np.linalg.norm(evaluate_on(learned_score, points, device, dtype) - true, axis=1)
    log_p = evaluate_on(true_dist.log_prob, points, device, dtype)
    weights = np.exp(log_p - log_p.max())
    weighted = float((weights * error**2).sum() / weights.sum())
    fig, axes = new_figure(1, 2)
    fig.get_layout_engine().set(wspace=0.08)
    ax_map, ax_scatter = axes[0]
    image = ax_map.imshow(
        error.reshape(grid, grid), origin="lower", extent=extent, cmap="magma", aspect="auto"
    )
    fig.colorbar(image, ax=ax_map, shrink=0.8, label=ERROR_LABEL)
    draw_density_contours(ax_map, true_dist, extent, grid, device, dtype)
    if data is not None:
        scatter_points(ax_map, to_numpy(data), "data", "c", size=2.0, alpha=0.4)
    set_window(ax_map, extent)
    label_plane(ax_map, None)
    ax_map.set_title("score error")
    ax_scatter.scatter(log_p, error, s=3, c="C0", alpha=0.5, linewidths=0, label="grid points")
    ax_scatter.set_xlabel(r"$\log p(x)$")
    ax_scatter.set_ylabel(ERROR_LABEL)
    ax_scatter.set_title("error against density")
    fig.suptitle(
        f"Eₚ‖error‖² = {weighted:.3g}    mean over the window ‖error‖² = {float((error**2).mean()):.3g}"
    )
    return fig


def plot_gaussian_score_line(
    mean: float = 0.0,
    std: float = 1.0,
    extent: tuple[float, float] | None = None,
    n: int = 201,
    *,
    ax: Axes | None = None,
) -> Figure:
    """The diffusion tutorial's aside "the score function of a gaussian": ``s(x) = -(x - μ)/σ²``, with the density.

    The score (left axis) is drawn from ``scorefield.distributions.Gaussian`` in one dimension; the
    density ``N(x; μ, σ²)`` shares the x axis on a second y axis. The score crosses zero at the mean.
    Drawn into ``ax`` if given (its figure is returned), else into a new figure.
    """
    dist = Gaussian(torch.tensor([mean], dtype=torch.float64), torch.tensor([[std**2]], dtype=torch.float64))
    lo, hi = extent if extent is not None else (mean - 4 * std, mean + 4 * std)
    x = torch.linspace(lo, hi, n, dtype=torch.float64)[:, None]
    if ax is None:
        ax = new_figure(1, 1, size=4.0)[1][0, 0]
    (score_line,) = ax.plot(
        x[:, 0], dist.score(x)[:, 0], color="C3", label=r"score $s(x) = -(x - \mu)/\sigma^2$"
    )
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.axvline(mean, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel("x")
    ax.set_ylabel("score", color="C3")
    ax_density = ax.twinx()
    (density_line,) = ax_density.plot(
        x[:, 0], dist.log_prob(x).exp(), color="C0", label=r"density $N(x; \mu, \sigma^2)$"
    )
    ax_density.set_ylabel("density", color="C0")
    ax_density.set_ylim(bottom=0)
    ax.set_title(f"one Gaussian: μ = {mean:g}, σ = {std:g}")
    ax_density.legend(handles=[score_line, density_line], loc="lower left", fontsize="small")
    return ax.figure


def plot_score_slice(
    dist: Density,
    start: ArrayLike,
    end: ArrayLike,
    n: int = 401,
    *,
    ax: Axes | None = None,
    dtype: torch.dtype = torch.float64,
) -> Figure:
    """A one-dimensional slice of a mixture's score: along the segment from ``start`` to ``end``,
    the component of ``∇log p`` along the segment, each component's own linear score (dashed), and
    the density on a second axis.

    Near each mode the mixture's score follows that mode's line ``-(u - u_k)/σ_k²``; where the
    responsibilities cross it switches from one line to the other: piecewise nearly linear, the
    shape a ReLU network fits well (the score-functions tutorial, "Score function of Mixture of
    Gaussians"). ``dist`` is a ``GaussianMixture`` (its components give the dashed lines); drawn into
    ``ax`` if given (its figure is returned).
    """
    a = torch.as_tensor(to_numpy(start), dtype=dtype)
    b = torch.as_tensor(to_numpy(end), dtype=dtype)
    length = float(torch.linalg.norm(b - a))
    direction = (b - a) / length
    u = torch.linspace(0.0, length, n, dtype=dtype)
    x = a + u[:, None] * direction
    mixture = dist.to(dtype) if hasattr(dist, "to") else dist
    along = (mixture.score(x) @ direction).numpy()
    density = mixture.log_prob(x).exp().numpy()
    if ax is None:
        ax = new_figure(1, 1, size=4.0)[1][0, 0]
    means = getattr(mixture, "means", None)
    if means is not None:
        precisions = torch.linalg.inv(mixture.covs)
        for k in range(means.shape[0]):
            component = -((x - means[k]) @ precisions[k] @ direction).numpy()
            ax.plot(u, component, color="0.6", linestyle="--", linewidth=1.0,
                    label="each component's own score" if k == 0 else None)  # fmt: skip
        r = mixture.responsibilities(x).numpy()
        crossings = np.nonzero(np.diff(np.argmax(r, axis=1)))[0]
        for i in crossings:
            ax.axvline(float(u[i]), color="0.4", linewidth=0.8, linestyle=":")
    ax.plot(u, along, color="C3", linewidth=2.0, label="mixture's score along the line")
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    span = float(np.abs(along).max())
    ax.set_ylim(-1.3 * span, 1.3 * span)
    ax.set_xlabel("u: position along the line (start at 0)")
    ax.set_ylabel(r"$\nabla \log p \cdot e$ (score along the line)", color="C3")
    ax_density = ax.twinx()
    ax_density.fill_between(u, density, color="C0", alpha=0.25, linewidth=0)
    ax_density.set_ylabel("density p", color="C0")
    ax_density.set_ylim(0, 1.1 * float(density.max()))
    ax.set_zorder(ax_density.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title("the mixture along the line through its modes")
    return ax.figure


def _divergence_grid(score_fn: ScoreFn, points: np.ndarray, device: Device, dtype: torch.dtype) -> np.ndarray:
    """The exact divergence ``∇·s`` at ``points`` (the trace of the autograd Jacobian)."""
    x = torch.as_tensor(points, dtype=dtype, device=device)
    unused_time = torch.zeros(x.shape[0], dtype=dtype, device=device)
    return to_numpy(divergence(lambda y, _: score_fn(y), x, unused_time, kind="exact"))


def _sink_norm(values: np.ndarray) -> colors.Normalize:
    """A colour scale with 0 white, sinks (negative) in blue saturating at the deepest sink and
    sources (positive) in red at the highest source, each side on its own scale, so a sink of -2
    beside a ridge of +30 is still plainly blue."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if lo < 0 < hi:
        return colors.TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi)
    bound = max(abs(lo), abs(hi)) or 1.0
    return colors.Normalize(vmin=-bound, vmax=bound)


def _divergence_image(ax: Axes, values: np.ndarray, extent: Extent, norm: colors.Normalize):
    n = int(round(math.sqrt(values.size)))
    return ax.imshow(values.reshape(n, n), origin="lower", extent=extent, cmap="RdBu_r", norm=norm,
                     aspect="auto")  # fmt: skip


def _arrows(ax: Axes, score_fn: ScoreFn, extent: Extent, arrows: int, device: Device, dtype: torch.dtype):
    ax_x, ax_y, arrow_points = plane_grid(extent, arrows)
    field = evaluate_on(score_fn, arrow_points, device, dtype)
    ax.quiver(
        ax_x, ax_y, field[:, 0].reshape(ax_x.shape), field[:, 1].reshape(ax_x.shape), angles="xy",
        color="k", width=0.004,
    )  # fmt: skip


def plot_score_divergence(
    score: Density | ScoreFn,
    extent: Extent | None = None,
    grid: int = 120,
    data: ArrayLike | None = None,
    arrows: int = 15,
    *,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    """The diffusion tutorial's "the score function should be a sink at the data points": ``∇·s(x)`` over the plane.

    The divergence is exact (the trace of the autograd Jacobian, ``scorefield.likelihood.divergence``).
    Negative divergence (blue) is a sink: the score field converges there, at the data; positive
    (red) is a source. The two signs have their own colour scales (white is 0; the deepest sink is
    full blue, the highest source full red), so shallow sinks show beside tall sources. The field's
    arrows (``arrows x arrows``, 0 for none) and the ``data`` are drawn on top. The score is
    evaluated on ``device`` in ``dtype``.
    """
    extent = resolve_extent(extent, data, score if is_density(score) else None, device=device)
    score_fn = score_of(score)
    _, _, points = plane_grid(extent, grid)
    div = _divergence_grid(score_fn, points, device, dtype)
    fig, axes = new_figure(1, 1, size=4.2)
    ax = axes[0, 0]
    image = _divergence_image(ax, div, extent, _sink_norm(div))
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label=r"$\nabla \cdot s(x)$")
    bar.set_ticks(sorted({float(div.min()), 0.0, float(div.max())}))
    bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    if arrows:
        _arrows(ax, score_fn, extent, arrows, device, dtype)
    if data is not None:
        ax.scatter(*to_numpy(data).T, s=8, c="k", edgecolors="w", linewidths=0.4, label="data")
        ax.legend(loc="lower right", fontsize="small", framealpha=0.9)
    set_window(ax, extent)
    label_plane(ax, None)
    ax.set_title(r"$\nabla \cdot s$: sinks (blue), sources (red)")
    return fig


def plot_interfering_sinks(
    mixture,
    extent: Extent | None = None,
    grid: int = 120,
    arrows: int = 13,
    *,
    dtype: torch.dtype = torch.float64,
) -> Figure:
    """The diffusion tutorial's "the sinks interfere with each other", exactly, for a Gaussian mixture.

    With responsibilities ``r_k`` and component scores ``s_k = -Σ_k^{-1}(x - μ_k)``, the mixture's
    score is ``s = Σ_k r_k s_k`` and its divergence is
    ``∇·s = Σ_k r_k (-tr Σ_k^{-1}) + Σ_k r_k ||s_k - s||²``.

    Left, the first term: each component's own sink ``-tr Σ_k^{-1}`` (``-d/σ_k²``: deeper for a
    narrower component, whatever its weight) drawn where that component is responsible. Right, the
    whole divergence (autograd's exact trace): the second term, never negative, is the spread of the
    component scores; it lifts the divergence where several components share the responsibility,
    and between close components it turns into sources (red ridges). Both panels share one colour
    scale; the arrows are the mixture's score.
    """
    mixture = mixture.to(dtype)
    extent = resolve_extent(extent, mixture)
    _, _, points = plane_grid(extent, grid)
    x = torch.as_tensor(points, dtype=dtype)
    r = mixture.responsibilities(x)
    own = -torch.linalg.inv(mixture.covs).diagonal(dim1=-2, dim2=-1).sum(-1)  # -tr Σ_k^{-1}, [K]
    alone = (r * own).sum(1).numpy()
    together = _divergence_grid(mixture.score, points, CPU, dtype)
    norm = _sink_norm(np.concatenate([alone, together, own.numpy()]))  # the sinks' exact depths included
    fig, axes = new_figure(1, 2)
    titles = (r"each sink alone:" "\n" r"$-\mathrm{tr}\,\Sigma_k^{-1}$ weighted by $r_k$",
              r"together: $\nabla \cdot s$" "\n" "(the sinks interfere)")  # fmt: skip
    for ax, values, title in zip(axes[0], (alone, together), titles, strict=True):
        image = _divergence_image(ax, values, extent, norm)
        _arrows(ax, mixture.score, extent, arrows, CPU, dtype)
        ax.scatter(*to_numpy(mixture.means).T, s=40, c="k", marker="+", label="component means")
        set_window(ax, extent)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("x0")
    axes[0, 0].set_ylabel("x1")
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=r"$\nabla \cdot s(x)$")
    bar.set_ticks(sorted({float(v) for v in own} | {0.0, float(together.max())}))
    bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    return fig
