"""What every figure of ``scorefield.viz`` shares: the argument types, colours and panel size, the
window a figure frames (given, or inferred from data or a distribution), the evaluation grid, and
the evaluation of a score or density on it, on an explicit ``device`` and in an explicit ``dtype``.

Nothing here guesses where a model lives: the figures that evaluate one take ``device`` (default
the CPU) and ``dtype`` (default float32) and put their grid there; the model must accept such a
batch (an analytic distribution from ``scorefield.distributions`` accepts any).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
NoiseScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Extent = tuple[float, float, float, float]
ArrayLike = torch.Tensor | np.ndarray
Device = torch.device | str

DATA_COLOR = "0.55"
SAMPLE_COLOR = "C3"
PANEL_SIZE = 3.2  # inches per panel
CPU = torch.device("cpu")


class Density(Protocol):
    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    def score(self, x: torch.Tensor) -> torch.Tensor: ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


def is_density(obj) -> bool:
    return callable(getattr(obj, "log_prob", None)) and callable(getattr(obj, "score", None))


def score_of(obj) -> ScoreFn:
    return obj.score if is_density(obj) else obj


def evaluate_on(
    fn: Callable[[torch.Tensor], torch.Tensor],
    points: np.ndarray,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """``fn`` on ``points [N, d]`` put on ``device`` in ``dtype``, as float64 numpy."""
    with torch.no_grad():
        out = fn(torch.as_tensor(points, dtype=dtype, device=device))
    return out.detach().cpu().to(torch.float64).numpy()


def to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def check_2d(name: str, x: np.ndarray) -> None:
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must be 2-D points of shape [N, 2], got shape {x.shape}")


def plane_grid(extent: Extent, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ``n x n`` grid over ``extent``: ``X, Y`` ``[n, n]`` (rows are y) and the points ``[n*n, 2]``."""
    xmin, xmax, ymin, ymax = extent
    xs, ys = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n), indexing="xy")
    return xs, ys, np.stack([xs.ravel(), ys.ravel()], axis=1)


def limits_of(*arrays: np.ndarray, pad: float = 0.05, tail: float = 0.005) -> np.ndarray:
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


def count_outside(points: np.ndarray, limits: np.ndarray) -> int:
    """How many rows of ``points`` lie outside the window ``limits [d, 2]`` (or are not finite)."""
    inside = (points >= limits[:, 0]) & (points <= limits[:, 1])
    return int((~inside.all(axis=1)).sum())


def extent_of(points: np.ndarray, tail: float = 0.005) -> Extent:
    """The window ``(xmin, xmax, ymin, ymax)`` of 2-D ``points``, each axis scaled to its own data
    (``limits_of``)."""
    (xmin, xmax), (ymin, ymax) = limits_of(points, tail=tail)
    return (float(xmin), float(xmax), float(ymin), float(ymax))


def column_names(columns: Sequence[str] | None, d: int) -> tuple[str, ...]:
    """The names of ``d`` coordinates: ``columns``, or ``x0 .. x{d-1}``."""
    if columns is None:
        return tuple(f"x{i}" for i in range(d))
    if len(columns) != d:
        raise ValueError(f"got {len(columns)} column names for {d} coordinates: {', '.join(columns)}")
    return tuple(columns)


def label_plane(ax: Axes, columns: Sequence[str] | None) -> None:
    """Name the two axes of a plane after its coordinates."""
    x_name, y_name = column_names(columns, 2)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)


def resolve_extent(extent: Extent | None, *sources, tail: float = 0.0, device: Device = CPU) -> Extent:
    """``extent`` if given, else one around the first source: a point cloud's whole range (with
    ``tail > 0``: its ``tail`` to ``1 - tail`` quantiles), or 99% of a distribution's samples (drawn
    with a generator on ``device``, where the distribution lives)."""
    if extent is not None:
        return tuple(float(v) for v in extent)  # type: ignore[return-value]
    for source in sources:
        if source is None:
            continue
        if callable(getattr(source, "sample", None)):
            generator = torch.Generator(device=device).manual_seed(0)
            return extent_of(to_numpy(source.sample(4000, generator=generator)))
        if isinstance(source, torch.Tensor | np.ndarray):
            return extent_of(to_numpy(source), tail=tail)
    raise ValueError("cannot infer the plotting window: pass extent=(xmin, xmax, ymin, ymax)")


def new_figure(nrows: int, ncols: int, size: float = PANEL_SIZE) -> tuple[Figure, np.ndarray]:
    """A grid of square panels of ``size`` inches, with room above each for its title."""
    fig = Figure(figsize=(size * ncols, (size + 0.3) * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def density_on_grid(
    dist: Density, extent: Extent, n: int, device: Device, dtype: torch.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dist``'s density on an ``n x n`` grid over ``extent`` (evaluated on ``device`` in ``dtype``):
    ``X, Y`` and the density, each ``[n, n]``."""
    xs, ys, points = plane_grid(extent, n)
    return xs, ys, np.exp(evaluate_on(dist.log_prob, points, device, dtype)).reshape(n, n)


def draw_density_image(
    ax: Axes, dist: Density, extent: Extent, n: int, device: Device = CPU, dtype: torch.dtype = torch.float32
):
    """``dist``'s density on an ``n x n`` grid over ``extent``, as an image in ``ax``."""
    density = density_on_grid(dist, extent, n, device, dtype)[2]
    return ax.imshow(
        density, origin="lower", extent=extent, cmap="Blues", interpolation="bilinear", aspect="auto"
    )


def hdr_levels(density: np.ndarray, masses: Sequence[float] = (0.99, 0.9, 0.5)) -> list[float]:
    """Density thresholds of the highest-density regions holding each probability mass (on a grid)."""
    p = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(p) / p.sum()
    levels = {float(p[min(np.searchsorted(cumulative, m), p.size - 1)]) for m in masses}
    return sorted(levels)


def draw_density_contours(
    ax: Axes, dist: Density, extent: Extent, n: int, device: Device = CPU, dtype: torch.dtype = torch.float32
):
    """The outlines of ``dist``'s highest-density regions holding 50/90/99% of the mass, in ``ax``."""
    xs, ys, density = density_on_grid(dist, extent, n, device, dtype)
    return ax.contour(xs, ys, density, levels=hdr_levels(density), colors="c", linewidths=0.8)


def scatter_points(ax: Axes, x: np.ndarray, label: str, color: str, size: float = 3.0, alpha: float = 0.6):
    return ax.scatter(x[:, 0], x[:, 1], s=size, c=color, alpha=alpha, linewidths=0, label=label)


def set_window(ax: Axes, extent: Extent) -> None:
    """Limit ``ax`` to ``extent``; each axis keeps its own scale (no forced aspect)."""
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
