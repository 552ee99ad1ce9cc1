"""Figures of the tutorials' story: score fields, their errors and divergence, Langevin animations,
naive vs annealed sampling, denoising strips, ODE trajectories, sample grids and loss curves.

Every ``plot_*`` function builds and returns a ``matplotlib.figure.Figure`` (no pyplot, so no global
state and no screen: save it with ``fig.savefig(path)``); the ``*_animation`` functions write a GIF
with Pillow and return its path. Score functions are unconditional, ``score_fn(x [N, 2]) -> [N, 2]``:
fix the noise level or time of a conditional model first, e.g. ``at_level(model, t)``.
Where a figure takes ``true_dist``, it is an analytic distribution (``scorefield.distributions``)
with ``log_prob`` and ``score``; ``extent`` is ``(xmin, xmax, ymin, ymax)``.

Each axis is scaled to its own data (an inferred window holds the data's whole range, or 99% of
samples, 0.5%-99.5% per coordinate): no figure forces an equal aspect, so columns in different
units (minutes beside hundreds of metres) both fill their panel. The one exception is ``plot_ode_trajectories`` without an
``extent``, drawn in the model's standardised plane, where both axes share one unit by design.
``columns`` names the coordinates on the axes (default ``x0, x1, ...``).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from .distributions import Gaussian, GaussianMixture, Parzen
from .langevin import annealed_langevin, langevin
from .likelihood import divergence
from .metrics import mode_weights
from .noise import geometric_sigmas
from .samplers import sample_ode, sample_pc
from .score import posterior_mean
from .sde import SDE
from .utils import append_dims

__all__ = [
    "annealed_langevin_animation",
    "at_level",
    "exact_noise_score",
    "grid_scale",
    "image_grid",
    "image_grid_size",
    "langevin_animation",
    "plot_denoising_strip",
    "plot_gaussian_score_line",
    "plot_loss_curve",
    "plot_naive_vs_annealed",
    "plot_ode_trajectories",
    "plot_samples",
    "plot_score_divergence",
    "plot_score_error",
    "plot_score_field",
    "reverse_sde_animation",
    "run_naive_vs_annealed",
    "tweedie_denoiser",
    "write_gif",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
NoiseScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Extent = tuple[float, float, float, float]
ArrayLike = torch.Tensor | np.ndarray

DATA_COLOR = "0.55"
SAMPLE_COLOR = "C3"
PANEL_SIZE = 3.2  # inches per panel
GRID_MIN_SIDE = 64  # pixels per side that grid_scale enlarges an image to, at least
GRID_MAX_SIDE = 16384  # pixels per side of the largest image_grid
BORDER_VALUE = 0.5  # image_grid's border: mid-grey, visible against black and white backgrounds


class Density(Protocol):
    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    def score(self, x: torch.Tensor) -> torch.Tensor: ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# helpers: score functions, grids, extents, figures
# ---------------------------------------------------------------------------------------------
def at_level(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], level: float) -> ScoreFn:
    """A conditional score ``s(x, level)`` (a noise level ``σ`` or a time ``t``) fixed at one level."""

    @functools.wraps(score_fn, assigned=(), updated=())  # sets __wrapped__ (read by _placement)
    def score(x: torch.Tensor) -> torch.Tensor:
        return score_fn(x, torch.full((x.shape[0],), float(level), dtype=x.dtype, device=x.device))

    return score


def exact_noise_score(dist: GaussianMixture | Parzen) -> NoiseScoreFn:
    """Exact noise-conditional score ``∇log (p * N(0, σ²I))`` of an analytic ``dist`` (docs/math.md#smoothing-and-diffusion).

    ``sigma`` is ``[B]`` with one value for the whole batch, as the samplers pass it.
    """
    smoothed: dict[float, GaussianMixture | Parzen] = {}

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma).flatten()
        if bool(sigma.max() != sigma.min()):
            raise ValueError("exact_noise_score needs one noise level for the whole batch")
        level = float(sigma[0])
        if level not in smoothed:
            smoothed[level] = dist.smooth(level)
        return smoothed[level].score(x)

    return score


def tweedie_denoiser(noise_score_fn: NoiseScoreFn) -> NoiseScoreFn:
    """Tweedie's denoiser ``D(x̃, σ) = x̃ + σ² s(x̃, σ)`` of a noise score (``score.posterior_mean``)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return posterior_mean(x, noise_score_fn(x, sigma), 1.0, sigma)

    return denoise


def _placement(obj) -> tuple[torch.device, torch.dtype]:
    """Device and dtype that ``obj`` (a distribution, a module, or a function bound to one) computes in."""
    owner = inspect.unwrap(obj)
    owner = getattr(owner, "__self__", owner)
    if isinstance(owner, nn.Module):
        for tensor in (*owner.parameters(), *owner.buffers()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
    for name in ("means", "data"):
        tensor = getattr(owner, name, None)
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _is_density(obj) -> bool:
    return callable(getattr(obj, "log_prob", None)) and callable(getattr(obj, "score", None))


def _score_of(obj) -> ScoreFn:
    return obj.score if _is_density(obj) else obj


def _evaluate(fn: Callable[[torch.Tensor], torch.Tensor], points: np.ndarray, owner=None) -> np.ndarray:
    """``fn`` on ``points [N, d]`` placed like ``owner`` (default ``fn``), as float64 numpy."""
    device, dtype = _placement(fn if owner is None else owner)
    with torch.no_grad():
        out = fn(torch.as_tensor(points, dtype=dtype, device=device))
    return out.detach().cpu().to(torch.float64).numpy()


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_2d(name: str, x: np.ndarray) -> None:
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must be 2-D points of shape [N, 2], got shape {x.shape}")


def _grid(extent: Extent, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ``n x n`` grid over ``extent``: ``X, Y`` ``[n, n]`` (rows are y) and the points ``[n*n, 2]``."""
    xmin, xmax, ymin, ymax = extent
    xs, ys = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n), indexing="xy")
    return xs, ys, np.stack([xs.ravel(), ys.ravel()], axis=1)


def _limits(*arrays: np.ndarray, pad: float = 0.05, tail: float = 0.005) -> np.ndarray:
    """Plotting limits ``[d, 2]`` per coordinate, each axis scaled to its own data: the span of every
    array's ``tail`` to ``1 - tail`` quantiles (finite rows of ``[N, d]`` arrays; ``tail = 0``: their
    whole range), widened by ``pad`` of it on each side."""
    spans = []
    for array in arrays:
        finite = array[np.isfinite(array).all(axis=1)]
        if len(finite):
            spans.append(np.quantile(finite, [tail, 1 - tail], axis=0))
    if not spans:
        raise ValueError("no finite points to frame: the samples are all NaN or infinite")
    lo, hi = np.min([s[0] for s in spans], axis=0), np.max([s[1] for s in spans], axis=0)
    center = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2, 1e-3 * np.maximum(np.abs(center), 1.0)) * (1 + 2 * pad)
    return np.stack([center - half, center + half], axis=1)


def _outside(points: np.ndarray, limits: np.ndarray) -> int:
    """How many rows of ``points`` lie outside the window ``limits [d, 2]`` (or are not finite)."""
    inside = (points >= limits[:, 0]) & (points <= limits[:, 1])
    return int((~inside.all(axis=1)).sum())


def _extent_of(points: np.ndarray, tail: float = 0.005) -> Extent:
    """The window ``(xmin, xmax, ymin, ymax)`` of 2-D ``points``, each axis scaled to its own data
    (``_limits``)."""
    (xmin, xmax), (ymin, ymax) = _limits(points, tail=tail)
    return (float(xmin), float(xmax), float(ymin), float(ymax))


def _names(columns: Sequence[str] | None, d: int) -> tuple[str, ...]:
    """The names of ``d`` coordinates: ``columns``, or ``x0 .. x{d-1}``."""
    if columns is None:
        return tuple(f"x{i}" for i in range(d))
    if len(columns) != d:
        raise ValueError(f"got {len(columns)} column names for {d} coordinates: {', '.join(columns)}")
    return tuple(columns)


def _label_plane(ax: Axes, columns: Sequence[str] | None) -> None:
    """Name the two axes of a plane after its coordinates."""
    x_name, y_name = _names(columns, 2)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)


def _resolve_extent(extent: Extent | None, *sources, tail: float = 0.0) -> Extent:
    """``extent`` if given, else one around the first source: a point cloud's whole range (with
    ``tail > 0``: its ``tail`` to ``1 - tail`` quantiles), or 99% of a distribution's samples."""
    if extent is not None:
        return tuple(float(v) for v in extent)  # type: ignore[return-value]
    for source in sources:
        if source is None:
            continue
        if callable(getattr(source, "sample", None)):
            generator = torch.Generator(device=_placement(source)[0]).manual_seed(0)
            return _extent_of(_numpy(source.sample(4000, generator=generator)))
        if isinstance(source, torch.Tensor | np.ndarray):
            return _extent_of(_numpy(source), tail=tail)
    raise ValueError("cannot infer the plotting window: pass extent=(xmin, xmax, ymin, ymax)")


def _figure(nrows: int, ncols: int, size: float = PANEL_SIZE) -> tuple[Figure, np.ndarray]:
    """A grid of square panels of ``size`` inches, with room above each for its title."""
    fig = Figure(figsize=(size * ncols, (size + 0.3) * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _density_image(ax: Axes, dist: Density, extent: Extent, n: int, cmap: str = "Blues"):
    _, _, points = _grid(extent, n)
    density = np.exp(_evaluate(dist.log_prob, points, owner=dist)).reshape(n, n)
    return ax.imshow(
        density, origin="lower", extent=extent, cmap=cmap, interpolation="bilinear", aspect="auto"
    )


def _hdr_levels(density: np.ndarray, masses: Sequence[float] = (0.99, 0.9, 0.5)) -> list[float]:
    """Density thresholds of the highest-density regions holding each probability mass (on a grid)."""
    p = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(p) / p.sum()
    levels = {float(p[min(np.searchsorted(cumulative, m), p.size - 1)]) for m in masses}
    return sorted(levels)


def _density_contours(ax: Axes, dist: Density, extent: Extent, n: int, color: str = "c"):
    xs, ys, points = _grid(extent, n)
    density = np.exp(_evaluate(dist.log_prob, points, owner=dist)).reshape(n, n)
    return ax.contour(xs, ys, density, levels=_hdr_levels(density), colors=color, linewidths=0.8)


def _scatter(ax: Axes, x: np.ndarray, label: str, color: str, size: float = 3.0, alpha: float = 0.6):
    return ax.scatter(x[:, 0], x[:, 1], s=size, c=color, alpha=alpha, linewidths=0, label=label)


def _frame(ax: Axes, extent: Extent) -> None:
    """Limit ``ax`` to ``extent``; each axis keeps its own scale (no forced aspect)."""
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])


# ---------------------------------------------------------------------------------------------
# score fields
# ---------------------------------------------------------------------------------------------
def plot_score_field(
    true_dist_or_score: Density | ScoreFn,
    learned_score: ScoreFn | None = None,
    extent: Extent | None = None,
    grid: int = 20,
    data: ArrayLike | None = None,
    normalize: bool = False,
    density_grid: int = 100,
    columns: Sequence[str] | None = None,
) -> Figure:
    """The score-functions tutorial's "score function of a mixture of 2 Gaussians": arrows over the density, true and learned.

    One panel per field (true, then learned if given), ``grid x grid`` arrows each. An arrow at
    ``x`` runs from ``x`` towards ``x + c s(x)`` in the plane's own coordinates, with one constant
    ``c`` for both panels (the longest true arrow spans 0.9 of a grid cell, a cell measured along
    each axis in its own units), so the two compare by eye; with ``normalize`` every arrow spans 0.8
    of a cell and shows only the direction. When the first argument is a distribution its density
    is drawn under both fields; ``data`` is scattered on top; ``columns`` names the axes.
    """
    extent = _resolve_extent(extent, true_dist_or_score if _is_density(true_dist_or_score) else None, data)
    xs, ys, points = _grid(extent, grid)
    compared = _is_density(true_dist_or_score) or learned_score is not None
    first = _evaluate(_score_of(true_dist_or_score), points, owner=true_dist_or_score)
    fields = {"true score" if compared else "score": first}
    if learned_score is not None:
        fields["learned score"] = _evaluate(learned_score, points)
    cell = np.array([extent[1] - extent[0], extent[3] - extent[2]]) / max(grid - 1, 1)

    def in_cells(field: np.ndarray) -> np.ndarray:  # an arrow's length counted in grid cells per axis
        return np.linalg.norm(field / cell, axis=1)

    longest = float(in_cells(first).max()) or 1.0
    fig, axes = _figure(1, len(fields))
    for ax, (title, field) in zip(axes[0], fields.items(), strict=True):
        if _is_density(true_dist_or_score):
            _density_image(ax, true_dist_or_score, extent, density_grid)  # type: ignore[arg-type]
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
) -> Figure:
    """The score-functions tutorial's "inaccurate in low-density regions": the error ``||s_θ - ∇log p||`` under density contours.

    Left: the error map, with the highest-density regions holding 50/90/99% of the mass outlined.
    Right: the error at every grid point against ``log p`` there. The title compares the error
    weighted by ``p`` (the Fisher divergence that training minimises, by quadrature on the grid)
    with its plain average over the window, which the low-density regions dominate.
    """
    extent = _resolve_extent(extent, true_dist, data)
    _, _, points = _grid(extent, grid)
    true = _evaluate(true_dist.score, points, owner=true_dist)
    error = np.linalg.norm(_evaluate(learned_score, points) - true, axis=1)
    log_p = _evaluate(true_dist.log_prob, points, owner=true_dist)
    weights = np.exp(log_p - log_p.max())
    weighted = float((weights * error**2).sum() / weights.sum())
    fig, axes = _figure(1, 2)
    ax_map, ax_scatter = axes[0]
    image = ax_map.imshow(
        error.reshape(grid, grid), origin="lower", extent=extent, cmap="magma", aspect="auto"
    )
    fig.colorbar(image, ax=ax_map, shrink=0.8, label="‖s_θ − ∇log p‖")
    _density_contours(ax_map, true_dist, extent, grid)
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
) -> Figure:
    """The diffusion tutorial's "the score function should be a sink at the data points": ``∇·s(x)`` over the plane.

    The divergence is exact (the trace of the autograd Jacobian, ``scorefield.likelihood.divergence``).
    Negative divergence (blue) is a sink: the score field converges there, at the data. The field's
    arrows (``arrows x arrows``, 0 for none) and the ``data`` are drawn on top.
    """
    extent = _resolve_extent(extent, data, score if _is_density(score) else None)
    score_fn = _score_of(score)
    device, dtype = _placement(score)
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
        field = _evaluate(score_fn, arrow_points, owner=score)
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


# ---------------------------------------------------------------------------------------------
# animations
# ---------------------------------------------------------------------------------------------
def write_gif(
    frames: Sequence[ArrayLike],
    path: str | Path,
    extent: Extent | None = None,
    background: Density | None = None,
    titles: Sequence[str] | None = None,
    fps: float = 12.0,
    size: float = 3.4,
    dpi: int = 80,
    columns: Sequence[str] | None = None,
    data: ArrayLike | None = None,
) -> Path:
    """A GIF of 2-D particles, one frame per ``[N, 2]`` array of ``frames`` (the score-functions tutorial's Langevin animation).

    Each frame is drawn with matplotlib (over ``background``'s density and the ``data`` points, in
    grey, if given) into a Pillow image, its axes named by ``columns``. Every frame carries a title
    (``titles`` or ``"frame i/n"``), which keeps consecutive frames distinct, so the file holds
    exactly ``len(frames)`` frames. The window defaults to the data's whole range, else the
    background's or the last frame's, each axis scaled to its own data.
    """
    arrays = [_numpy(f) for f in frames]
    if not arrays:
        raise ValueError("write_gif needs at least one frame")
    for array in arrays:
        _check_2d("each frame", array)
    if titles is None:
        titles = [f"frame {i + 1}/{len(arrays)}" for i in range(len(arrays))]
    if len(titles) != len(arrays):
        raise ValueError(f"got {len(titles)} titles for {len(arrays)} frames")
    if data is not None:
        extent = _resolve_extent(extent, data)  # the data's whole range, as plot_samples frames it
    extent = _resolve_extent(extent, background, arrays[-1], tail=0.005)  # 99%: a sampler's strays
    fig = Figure(figsize=(size, size), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if background is not None:
        _density_image(ax, background, extent, 80)
    if data is not None:
        _scatter(ax, _numpy(data), "data", DATA_COLOR, size=2.0, alpha=0.4)
    points = _scatter(ax, arrays[0], "particles", SAMPLE_COLOR, size=4.0, alpha=0.7)
    _frame(ax, extent)
    _label_plane(ax, columns)
    ax.tick_params(labelsize="x-small")
    title = ax.set_title("", fontsize="small")
    images = []
    for array, text in zip(arrays, titles, strict=True):
        points.set_offsets(array)
        title.set_text(text)
        canvas.draw()
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


class _Recorder:
    """Collects ``(label, x)`` states from a sampler's callback, as numpy copies in data units
    (``to_data`` maps the sampler's space to them; default: they are the same)."""

    def __init__(
        self,
        x0: torch.Tensor,
        label: str = "start",
        to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.to_data = to_data
        self.labels, self.states = [], []
        self.add(label, x0)
        _check_2d("x0", self.states[0])

    def add(self, label: str, x: torch.Tensor) -> None:
        self.labels.append(label)
        self.states.append(_numpy(x if self.to_data is None else self.to_data(x)))

    def write(self, path: str | Path, n_frames: int, **gif_kwargs) -> Path:
        """Write ``n_frames`` evenly spaced states (always the first and the last) as a GIF."""
        if n_frames < 2:
            raise ValueError(f"n_frames must be >= 2, got {n_frames}")
        keep = np.unique(np.linspace(0, len(self.states) - 1, n_frames).round().astype(int))
        return write_gif(
            [self.states[i] for i in keep], path, titles=[self.labels[i] for i in keep], **gif_kwargs
        )


def langevin_animation(
    score_fn: ScoreFn,
    x0: torch.Tensor,
    path: str | Path,
    step_size: float = 0.05,
    n_steps: int = 400,
    n_frames: int = 48,
    background: Density | None = None,
    extent: Extent | None = None,
    generator: torch.Generator | None = None,
    fps: float = 12.0,
    to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
    columns: Sequence[str] | None = None,
    data: ArrayLike | None = None,
) -> Path:
    """The score-functions tutorial's "using Langevin dynamics to sample from a mixture of 2 Gaussians" as a GIF of particles.

    Runs ``scorefield.langevin.langevin`` from ``x0 [N, 2]`` and keeps ``n_frames`` evenly spaced
    states (fewer if there are fewer steps), drawn through ``to_data`` (the map from the sampler's
    space to the data's units, e.g. a scaler's ``inverse_transform``; default: none) on axes named by
    ``columns``, over the ``data`` (grey) if given, as in every animation here. Returns the GIF's path.
    """
    recorder = _Recorder(x0, to_data=to_data)
    langevin(
        score_fn,
        x0,
        step_size,
        n_steps,
        generator=generator,
        callback=lambda k, x: recorder.add(f"Langevin step {k + 1}/{n_steps}", x),
    )
    return recorder.write(
        path, n_frames, background=background, extent=extent, fps=fps, columns=columns, data=data
    )


def annealed_langevin_animation(
    score_fn: NoiseScoreFn,
    x0: torch.Tensor,
    path: str | Path,
    sigmas: torch.Tensor | Sequence[float],
    step_lr: float,
    n_steps_each: int,
    denoise: bool = True,
    n_frames: int = 48,
    background: Density | None = None,
    extent: Extent | None = None,
    generator: torch.Generator | None = None,
    fps: float = 12.0,
    to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
    columns: Sequence[str] | None = None,
    data: ArrayLike | None = None,
) -> Path:
    """Annealed Langevin (Song & Ermon 2019, Alg. 1; the score-functions tutorial's "run Langevin for all noise levels") as a GIF.

    ``sigmas`` largest first; each frame's title names its noise level; ``to_data``, ``columns`` and
    ``data`` as in ``langevin_animation``. Returns the GIF's path.
    """
    levels = torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()

    def label(k: int) -> str:
        if k >= len(levels) * n_steps_each:
            return "final denoising step"
        return f"σ = {levels[k // n_steps_each]:.3g}, step {k % n_steps_each + 1}/{n_steps_each}"

    recorder = _Recorder(x0, to_data=to_data)
    annealed_langevin(
        score_fn,
        x0,
        sigmas,
        step_lr,
        n_steps_each,
        denoise=denoise,
        generator=generator,
        callback=lambda k, x: recorder.add(label(k), x),
    )
    return recorder.write(
        path, n_frames, background=background, extent=extent, fps=fps, columns=columns, data=data
    )


def reverse_sde_animation(
    score_fn: NoiseScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    path: str | Path,
    n_steps: int = 200,
    predictor: str = "reverse_diffusion",
    corrector: str | None = "langevin",
    n_frames: int = 48,
    background: Density | None = None,
    extent: Extent | None = None,
    generator: torch.Generator | None = None,
    fps: float = 12.0,
    to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
    columns: Sequence[str] | None = None,
    data: ArrayLike | None = None,
    **pc_kwargs,
) -> Path:
    """Reverse-SDE sampling (Song et al. 2021, Alg. 1, predictor-corrector) from the prior ``x_T`` as a GIF.

    ``score_fn(x, t[B])``; each frame's title gives its time. The last frame is the returned sample
    (after the final Tweedie denoising unless ``denoise=False`` is passed); ``to_data``, ``columns``
    and ``data`` as in ``langevin_animation``. Returns the GIF's path.
    """
    recorder = _Recorder(x_T, label="t = 1 (prior)", to_data=to_data)
    x = sample_pc(
        score_fn,
        sde,
        x_T,
        n_steps,
        predictor=predictor,
        corrector=corrector,
        generator=generator,
        callback=lambda info: recorder.add(f"t = {info['t']:.3f}", info["x"]),
        **pc_kwargs,
    )
    if pc_kwargs.get("denoise", True):
        recorder.add("denoised", x)
    return recorder.write(
        path, n_frames, background=background, extent=extent, fps=fps, columns=columns, data=data
    )


# ---------------------------------------------------------------------------------------------
# naive vs annealed Langevin
# ---------------------------------------------------------------------------------------------
def run_naive_vs_annealed(
    mixture: GaussianMixture,
    n: int = 1000,
    noise_score_fn: NoiseScoreFn | None = None,
    sigmas: torch.Tensor | None = None,
    step_size: float = 0.05,
    n_steps: int = 500,
    step_lr: float | None = None,
    n_steps_each: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The score-functions tutorial's "problems with naive Langevin sampling": naive and annealed chains from one uniform start.

    ``x0`` is uniform over a square holding every mode of ``mixture`` with 3 standard deviations
    to spare. The naive chain follows the score at the smallest level ``sigmas[-1]`` (the exact
    ``∇log p`` when ``noise_score_fn`` is None: it then uses ``exact_noise_score(mixture)``); the
    annealed chain descends the geometric ``sigmas`` (default 20 levels from the width of that
    square down to 0.01) with ``step_lr`` (default ``0.1 σ_L²``: every step ``α_i`` is at most a
    tenth of the smoothed variance ``1 + σ_i²``, stable, and long enough to mix at each level).

    Returns ``(x0, naive, annealed)``, each ``[n, d]``.
    """
    means, covs = mixture.means, mixture.covs
    spread = torch.diagonal(covs, dim1=-2, dim2=-1).sqrt().max()
    lo, hi = float(means.min() - 3 * spread), float(means.max() + 3 * spread)
    if sigmas is None:
        sigmas = geometric_sigmas(hi - lo, 0.01, 20, dtype=means.dtype)
    sigmas = torch.as_tensor(sigmas, dtype=means.dtype)
    if noise_score_fn is None:
        noise_score_fn = exact_noise_score(mixture)
    step_lr = 0.1 * float(sigmas[-1]) ** 2 if step_lr is None else step_lr
    x0 = lo + (hi - lo) * torch.rand(n, mixture.dim, generator=generator, dtype=means.dtype)
    naive = langevin(at_level(noise_score_fn, float(sigmas[-1])), x0, step_size, n_steps, generator=generator)
    annealed = annealed_langevin(noise_score_fn, x0, sigmas, step_lr, n_steps_each, generator=generator)
    return x0, naive, annealed


def _weights_text(weights: Sequence[float]) -> str:
    return " / ".join(f"{float(w):.2f}" for w in weights)


def plot_naive_vs_annealed(
    mixture: GaussianMixture,
    naive: torch.Tensor,
    annealed: torch.Tensor,
    extent: Extent | None = None,
    density_grid: int = 80,
) -> Figure:
    """The score-functions tutorial's "problems with naive Langevin sampling": naive vs annealed samples, with mode weights.

    Two panels over the mixture's density; each states the fraction of its samples in each mode
    (``scorefield.metrics.mode_weights``) against the true weights. Naive Langevin keeps the split
    of its starting points between the basins; annealing recovers the weights.
    """
    extent = _resolve_extent(extent, mixture)
    truth = _weights_text(mixture.weights.tolist())
    fig, axes = _figure(1, 2)
    for ax, (name, samples) in zip(
        axes[0], (("naive Langevin", naive), ("annealed Langevin", annealed)), strict=True
    ):
        _density_image(ax, mixture, extent, density_grid)
        _scatter(ax, _numpy(samples), "samples", SAMPLE_COLOR)
        _frame(ax, extent)
        ax.set_title(name)
        measured = _weights_text(mode_weights(samples, mixture).tolist())
        ax.text(
            0.03,
            0.97,
            f"mode weights {measured}\ntrue weights {truth}",
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize="small",
            bbox={"facecolor": "w", "alpha": 0.8, "lw": 0},
        )
    return fig


# ---------------------------------------------------------------------------------------------
# denoising, trajectories, samples, training
# ---------------------------------------------------------------------------------------------
def grid_scale(height: int, width: int, min_side: int = GRID_MIN_SIDE) -> int:
    """The smallest whole factor that enlarges an ``height x width`` image to at least ``min_side``
    pixels per side (1 if it is that large already): 8 for 8x8 digits, 3 for 28x28, 2 for 32x32."""
    return max(1, math.ceil(min_side / min(height, width)))


def image_grid_size(
    n: int, height: int, width: int, nrow: int = 8, padding: int = 2, scale: int = 1
) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``image_grid`` of ``n`` images of ``height x width``.

    ``ValueError`` for a bad ``nrow``, ``padding`` or ``scale``, or a grid wider or higher than
    ``GRID_MAX_SIDE`` pixels.
    """
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ncol, rows = min(nrow, n), math.ceil(n / nrow)
    size = (ncol * width * scale + (ncol + 1) * padding, rows * height * scale + (rows + 1) * padding)
    if max(size) > GRID_MAX_SIDE:
        raise ValueError(
            f"a grid of {n} images of {height}x{width} enlarged {scale} times would be {size[0]} x "
            f"{size[1]} pixels, more than {GRID_MAX_SIDE} per side"
        )
    return size


def image_grid(
    x: ArrayLike,
    nrow: int = 8,
    padding: int = 2,
    value_range: tuple[float, float] | None = None,
    path: str | Path | None = None,
    scale: int = 1,
    border: float = BORDER_VALUE,
) -> Image.Image:
    """Images ``[B, C, H, W]`` (C = 1 or 3) tiled ``nrow`` per row, each enlarged ``scale`` times by
    nearest neighbour (every pixel a ``scale x scale`` block), with ``padding`` pixels of border between
    and around them.

    Values are mapped from ``value_range`` (default: the batch's min and max) to 0..255. The border
    is grey at ``border`` of the way from black to white (default mid-grey, which stands out against
    both black and white backgrounds). The result is ``image_grid_size(B, H, W, nrow, padding,
    scale)``: ``ncol W scale + (ncol + 1) padding`` wide and ``rows H scale + (rows + 1) padding``
    high, where ``ncol = min(B, nrow)`` and ``rows = ceil(B / nrow)``; with ``path`` it is also saved
    (PNG by its suffix).
    """
    images = _numpy(x)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, C, H, W] with C = 1 or 3, got shape {images.shape}")
    b, c, h, w = images.shape
    width, height = image_grid_size(b, h, w, nrow, padding, scale)
    lo, hi = value_range if value_range is not None else (float(images.min()), float(images.max()))
    images = np.clip((images - lo) / max(hi - lo, 1e-12), 0, 1)
    images = images.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    canvas = np.full((height, width, c), float(border))
    for i, image in enumerate(images):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        canvas[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    pixels = (canvas * 255).round().astype(np.uint8)
    grid = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode="L" if c == 1 else "RGB")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
    return grid


def _show_images(ax: Axes, x: ArrayLike, nrow: int, value_range: tuple[float, float] | None) -> None:
    """``image_grid`` of ``x`` in ``ax``, with 1-pixel borders: matplotlib enlarges the pixels itself."""
    grid = image_grid(x, nrow=nrow, padding=1, value_range=value_range)
    ax.imshow(np.asarray(grid), cmap="gray" if grid.mode == "L" else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_denoising_strip(
    x0: torch.Tensor,
    levels: Sequence[float],
    denoise_fn: NoiseScoreFn,
    sde: SDE | None = None,
    n_show: int = 16,
    value_range: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
    columns: Sequence[str] | None = None,
) -> Figure:
    """The diffusion tutorial's "stacked denoisers": clean data, the data at increasing noise, and their one-step denoising.

    Without ``sde`` the levels are noise standard deviations ``σ``, ``x̃ = x0 + σ z``, and
    ``denoise_fn(x̃, σ[B])`` estimates ``x0`` (e.g. ``tweedie_denoiser(noise_score)``); with ``sde``
    they are times ``t``, ``x_t = m(t) x0 + std(t) z`` and ``denoise_fn(x_t, t[B])`` (e.g.
    ``ScoreModel.denoise``). ``x0`` and ``denoise_fn`` live in the model's space; ``to_data`` (e.g. a
    scaler's ``inverse_transform``) maps a batch of it back to the data's units, in which everything
    is drawn (default: the model's space itself). What is drawn:

    - 2-D points: one column per level, the noisy points (top) and their denoising (bottom) over the
      clean data (grey), each column framed to hold all three; ``columns`` names the axes;
    - other tables ``[N, d]``: one column per level and one row per coordinate, histograms of the
      clean, noisy and denoised values of that coordinate;
    - images ``[B, C, H, W]``: one row per level of three panels, clean, noisy and denoised, each a
      square grid of the first ``n_show`` images, all on one grey scale ``value_range`` (default: the
      clean images' range) in the data's units; noise beyond it saturates.
    """
    images = x0.ndim == 4
    if images:
        x0 = x0[:n_show]
    elif x0.ndim != 2:
        raise ValueError(f"x0 must be [N, d] points or [B, C, H, W] images, got shape {tuple(x0.shape)}")

    def in_data(x: torch.Tensor) -> np.ndarray:
        return _numpy(x if to_data is None else to_data(x))

    rows = []  # (title, noisy, denoised) per level, in data units
    for level in levels:
        batch = torch.full((x0.shape[0],), float(level), dtype=x0.dtype, device=x0.device)
        if sde is None:
            scale, std = torch.ones_like(batch), batch
        else:
            scale, std = (v.to(x0) * torch.ones_like(batch) for v in sde.marginal(batch))
        noise_device = x0.device if generator is None else generator.device
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=noise_device).to(x0.device)
        noisy = append_dims(scale, x0.ndim) * x0 + append_dims(std, x0.ndim) * noise
        with torch.no_grad():
            denoised = denoise_fn(noisy, batch)
        title = f"{'t' if sde is not None else 'σ'} = {float(level):.3g}"
        rows.append((title, in_data(noisy), in_data(denoised)))
    clean = in_data(x0)
    if images:
        return _denoising_images(clean, rows, value_range)
    if clean.shape[1] == 2:
        return _denoising_plane(clean, rows, columns)
    return _denoising_histograms(clean, rows, columns)


def _denoising_plane(clean: np.ndarray, rows: list, columns: Sequence[str] | None) -> Figure:
    fig, axes = _figure(2, len(rows), size=2.6)
    for j, (title, noisy, denoised) in enumerate(rows):
        extent = _extent_of(np.concatenate([clean, noisy, denoised]))
        for i, (name, values, color) in enumerate(
            (("noisy", noisy, "C0"), ("denoised", denoised, SAMPLE_COLOR))
        ):
            ax = axes[i, j]
            _scatter(ax, clean, "clean data", DATA_COLOR, size=2.0, alpha=0.4)
            _scatter(ax, values, name, color, size=2.0)
            _frame(ax, extent)
            _label_plane(ax, columns)
            ax.set_title(f"{name}, {title}", fontsize="small")
    return fig


def _denoising_histograms(clean: np.ndarray, rows: list, columns: Sequence[str] | None) -> Figure:
    names = _names(columns, clean.shape[1])
    fig, axes = _figure(len(names), len(rows), size=2.2)
    for j, (title, noisy, denoised) in enumerate(rows):
        limits = _limits(clean, noisy, denoised)
        for i, name in enumerate(names):
            ax = axes[i, j]
            bins = np.linspace(*limits[i], 41)
            for label, values, color in (
                ("clean data", clean, DATA_COLOR),
                ("noisy", noisy, "C0"),
                ("denoised", denoised, SAMPLE_COLOR),
            ):
                ax.hist(values[:, i], bins=bins, density=True, histtype="step", color=color, label=label)
            ax.set_xlim(*limits[i])
            ax.set_xlabel(name)
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize="small")
    axes[0, -1].legend(fontsize="x-small")
    return fig


def _denoising_images(clean: np.ndarray, rows: list, value_range: tuple[float, float] | None) -> Figure:
    if value_range is None:  # every panel on the clean images' scale; noise saturates
        value_range = (float(clean.min()), float(clean.max()))
    nrow = math.ceil(math.sqrt(clean.shape[0]))  # a square grid per panel
    size = 1.8
    fig = Figure(figsize=(3 * size + 0.4, len(rows) * size + 0.3), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.0, hspace=0.0)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for i, (title, noisy, denoised) in enumerate(rows):
        for j, (name, values) in enumerate((("clean", clean), ("noisy", noisy), ("denoised", denoised))):
            ax = axes[i, j]
            _show_images(ax, values, nrow=nrow, value_range=value_range)
            if i == 0:
                ax.set_title(name, fontsize="small")
        axes[i, 0].set_ylabel(title)
    return fig


def plot_ode_trajectories(
    score_fn: NoiseScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    n_steps: int = 50,
    method: str = "rk4",
    data: ArrayLike | None = None,
    extent: Extent | None = None,
    eps: float = 1e-3,
) -> Figure:
    """Probability-flow ODE trajectories (Song et al. 2021, eq. 13): each prior point's path to a sample.

    Integrates ``scorefield.samplers.sample_ode`` on ``n_steps`` fixed steps of ``method`` from
    ``x_T [N, 2]`` at ``t = 1`` to ``eps``; draws one line per particle (faded from the prior end),
    its start and its end, over the ``data`` if given. The paths run in the model's own space, where
    the prior is isotropic (standardised coordinates by design): without ``extent`` both axes share
    one scale (equal aspect), so the flow's directions are not distorted.
    """
    _check_2d("x_T", _numpy(x_T))
    _, info = sample_ode(score_fn, sde, x_T, method=method, n_steps=n_steps, eps=eps, return_trajectory=True)
    paths = _numpy(info["trajectory"]).transpose(1, 0, 2)  # (N, T, 2)
    fig, axes = _figure(1, 1, size=4.2)
    ax = axes[0, 0]
    if data is not None:
        _scatter(ax, _numpy(data), "data", DATA_COLOR, size=2.0, alpha=0.4)
    ax.add_collection(LineCollection(list(paths), colors="C0", linewidths=0.6, alpha=0.5, label="ODE paths"))
    ax.scatter(paths[:, 0, 0], paths[:, 0, 1], s=6, c="C0", marker="x", linewidths=0.6, label="t = 1 (prior)")
    ax.scatter(paths[:, -1, 0], paths[:, -1, 1], s=6, c=SAMPLE_COLOR, label=f"t = {eps:g} (samples)")
    if extent is not None:
        _frame(ax, extent)
    else:
        ax.autoscale()
        ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="lower right", fontsize="x-small", markerscale=2)
    ax.set_title(f"probability-flow ODE ({method}, {n_steps} steps)")
    return fig


def plot_samples(
    samples: ArrayLike,
    data: ArrayLike | None = None,
    nrow: int = 8,
    max_images: int = 64,
    value_range: tuple[float, float] | None = None,
    columns: Sequence[str] | None = None,
) -> Figure:
    """Samples vs data (the score-functions tutorial's "sample from a mixture of 2 Gaussians"): scatter, pair plot or image grid.

    - images ``[B, C, H, W]``: a grid of the first ``max_images`` samples, beside the data's if
      given, both on one grey scale ``value_range`` (default: the data's range, else the samples');
    - 2-D points: data and samples in side-by-side panels sharing their axes;
    - ``d > 2``: a corner plot of every coordinate: each pair's scatter below the diagonal
      (``d (d - 1) / 2`` panels), each coordinate's histogram on it, data and samples overlaid;
    - ``d = 1``: overlaid histograms.

    Points are drawn in their own units, each coordinate's axis named by ``columns`` (default
    ``x0, x1, ...``) and framed to the data's whole range (without data: the samples' central 99%);
    the samples' label counts those outside that window, and the histograms are densities over all
    of a set's points, so mass outside the window is missing from them rather than spread inside.
    """
    x = _numpy(samples)
    ref = None if data is None else _numpy(data)
    if x.ndim == 4:
        shown = [("samples", x)] if ref is None else [("data", ref), ("samples", x)]
        if value_range is None:  # both grids on one scale
            value_range = (float(shown[0][1].min()), float(shown[0][1].max()))
        fig, axes = _figure(1, len(shown), size=4.0)
        for ax, (title, images) in zip(axes[0], shown, strict=True):
            _show_images(ax, images[:max_images], nrow=nrow, value_range=value_range)
            ax.set_title(title)
        return fig
    if x.ndim != 2:
        raise ValueError(f"samples must be [N, d] points or [B, C, H, W] images, got shape {x.shape}")
    if ref is not None and ref.shape[1:] != x.shape[1:]:
        raise ValueError(f"data have shape {ref.shape[1:]} per row but the samples {x.shape[1:]}")
    names = _names(columns, x.shape[1])
    limits = _limits(x) if ref is None else _limits(ref, tail=0.0)
    outside = _outside(x, limits)
    sets = [] if ref is None else [("data", ref, DATA_COLOR)]
    sets.append(("samples", x, SAMPLE_COLOR))
    described = {"data": f"data ({0 if ref is None else len(ref)})", "samples": f"samples ({len(x)})"}
    if outside:
        described["samples"] = f"samples ({len(x)})\n{outside} outside the window"
    if x.shape[1] == 2:
        fig, axes = _figure(1, len(sets))
        for ax, (name, points, color) in zip(axes[0], sets, strict=True):
            _scatter(ax, points, name, color)
            _frame(ax, tuple(limits.ravel()))
            _label_plane(ax, names)
            ax.set_title(described[name])
        return fig
    fig = _corner_plot(sets, limits, names)
    handles = fig.axes[0].get_legend_handles_labels()[0]  # the first histogram panel: one per set
    where = fig if x.shape[1] > 2 else fig.axes[0]  # the empty upper triangle, else the one panel
    where.legend(handles, [described[name] for name, _, _ in sets], loc="upper right", fontsize="small")
    return fig


def _corner_plot(sets: list, limits: np.ndarray, names: tuple[str, ...]) -> Figure:
    """Pairs of coordinates scattered below the diagonal, histograms on it; ``sets`` of
    ``(label, [N, d] points, colour)``, each coordinate framed by ``limits[i]`` in every panel."""
    d = len(names)
    size = 3.2 if d == 1 else min(2.0, max(1.2, 14 / d))  # inches per panel: wide tables fit a page
    fig = Figure(figsize=(size * d + 0.3, size * d + 0.3), layout="constrained")
    grid = fig.add_gridspec(d, d)
    for i in range(d):
        for j in range(i + 1):
            ax = fig.add_subplot(grid[i, j])
            for label, values, color in sets:
                if i == j:  # a density over all the set's points: what lies outside is not spread inside
                    bins = np.linspace(*limits[i], 41)
                    column = values[:, i][np.isfinite(values[:, i])]
                    weight = 1 / (len(values) * (bins[1] - bins[0]))
                    ax.hist(
                        column,
                        bins=bins,
                        weights=np.full(len(column), weight),
                        histtype="step",
                        color=color,
                        label=label,
                    )
                else:
                    ax.scatter(
                        values[:, j], values[:, i], s=1.5, c=color, alpha=0.4, linewidths=0, label=label
                    )
            ax.set_xlim(*limits[j])
            if i == j:
                ax.set_yticks([])
            else:
                ax.set_ylim(*limits[i])
            if i == d - 1:
                ax.set_xlabel(names[j])
            else:
                ax.tick_params(labelbottom=False)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif i != j:
                ax.tick_params(labelleft=False)
    return fig


def _smooth(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, average = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        average = smoothing * average + (1 - smoothing) * v
        out[i] = average / (1 - smoothing ** (i + 1))
    return out


def plot_loss_curve(
    metrics_jsonl_path: str | Path,
    keys: Sequence[str] | None = None,
    smoothing: float = 0.9,
) -> Figure:
    """Training curves from ``metrics.jsonl`` (one JSON object per line with ``step`` and ``loss``, ...).

    Each key (default: every numeric key ending in ``loss``) is drawn raw (faint) and smoothed by an
    exponential moving average (``smoothing``, shortened to ``1 - 10/n`` for a log of ``n < 100``
    values, so the curve does not lag behind a short run); the y axis is logarithmic when every
    drawn value is positive. Lines that lack a key (or are not JSON objects) are skipped for that key.
    """
    rows = []
    for line in Path(metrics_jsonl_path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int | float):
            rows.append(row)
    if keys is None:
        keys = sorted({k for row in rows for k, v in row.items() if k.endswith("loss") and _is_number(v)})
    series = {}
    for key in keys:
        points = [(row["step"], row[key]) for row in rows if _is_number(row.get(key))]
        points = np.array(points, dtype=float).reshape(-1, 2)
        points = points[np.isfinite(points[:, 1])]
        if len(points):
            series[key] = points
    if not series:
        raise ValueError(f"no finite values of {', '.join(keys) or 'any loss'} in {metrics_jsonl_path}")
    fig, axes = _figure(1, 1, size=4.2)
    ax = axes[0, 0]
    for i, (key, points) in enumerate(series.items()):
        color = f"C{i}"
        ax.plot(points[:, 0], points[:, 1], color=color, alpha=0.25, linewidth=0.8)
        window = min(smoothing, max(0.0, 1 - 10 / len(points)))  # short logs: a short memory
        ax.plot(points[:, 0], _smooth(points[:, 1], window), color=color, label=key)
    if all((points[:, 1] > 0).all() for points in series.values()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    ax.set_title("training loss")
    return fig


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
