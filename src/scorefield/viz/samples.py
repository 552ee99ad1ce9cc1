"""Figures of samples: samples against data (side-by-side scatters, a corner plot of every
coordinate, or image grids), naive against annealed Langevin with their mode weights, the
denoising strip (data noised to several levels and denoised in one step, with ``tweedie_denoiser``
to make that step from a noise score), and the probability-flow ODE's trajectories.

Points are drawn in their own units, each axis scaled to its own coordinate (``scorefield.viz``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ..distributions import GaussianMixture
from ..metrics import mode_weights
from ..samplers import sample_ode
from ..score import posterior_mean
from ..sde import SDE
from ..utils import append_dims
from .base import (
    CPU,
    DATA_COLOR,
    SAMPLE_COLOR,
    ArrayLike,
    Device,
    Extent,
    NoiseScoreFn,
    check_2d,
    column_names,
    count_outside,
    draw_density_image,
    extent_of,
    label_plane,
    limits_of,
    new_figure,
    resolve_extent,
    scatter_points,
    set_window,
    to_numpy,
)
from .images import show_images

__all__ = [
    "plot_denoising_strip",
    "plot_naive_vs_annealed",
    "plot_ode_trajectories",
    "plot_samples",
    "tweedie_denoiser",
]


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
    x = to_numpy(samples)
    ref = None if data is None else to_numpy(data)
    if x.ndim == 4:
        shown = [("samples", x)] if ref is None else [("data", ref), ("samples", x)]
        if value_range is None:  # both grids on one scale
            value_range = (float(shown[0][1].min()), float(shown[0][1].max()))
        fig, axes = new_figure(1, len(shown), size=4.0)
        for ax, (title, images) in zip(axes[0], shown, strict=True):
            show_images(ax, images[:max_images], nrow=nrow, value_range=value_range)
            ax.set_title(title)
        return fig
    if x.ndim != 2:
        raise ValueError(f"samples must be [N, d] points or [B, C, H, W] images, got shape {x.shape}")
    if ref is not None and ref.shape[1:] != x.shape[1:]:
        raise ValueError(f"data have shape {ref.shape[1:]} per row but the samples {x.shape[1:]}")
    names = column_names(columns, x.shape[1])
    limits = limits_of(x) if ref is None else limits_of(ref, tail=0.0)
    outside = count_outside(x, limits)
    sets = [] if ref is None else [("data", ref, DATA_COLOR)]
    sets.append(("samples", x, SAMPLE_COLOR))
    described = {"data": f"data ({0 if ref is None else len(ref)})", "samples": f"samples ({len(x)})"}
    if outside:
        described["samples"] = f"samples ({len(x)})\n{outside} outside the window"
    if x.shape[1] == 2:
        fig, axes = new_figure(1, len(sets))
        for ax, (name, points, color) in zip(axes[0], sets, strict=True):
            scatter_points(ax, points, name, color)
            set_window(ax, tuple(limits.ravel()))
            label_plane(ax, names)
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


def _weights_text(weights: Sequence[float]) -> str:
    return " / ".join(f"{float(w):.2f}" for w in weights)


def plot_naive_vs_annealed(
    mixture: GaussianMixture,
    naive: torch.Tensor,
    annealed: torch.Tensor,
    extent: Extent | None = None,
    density_grid: int = 80,
    *,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    """The score-functions tutorial's "problems with naive Langevin sampling": naive vs annealed samples, with mode weights.

    Two panels over the mixture's density; each states the fraction of its samples in each mode
    (``scorefield.metrics.mode_weights``) against the true weights. Naive Langevin keeps the split
    of its starting points between the basins; annealing recovers the weights. The density is
    evaluated on ``device`` in ``dtype``.
    """
    extent = resolve_extent(extent, mixture, device=device)
    truth = _weights_text(mixture.weights.tolist())
    fig, axes = new_figure(1, 2)
    for ax, (name, samples) in zip(
        axes[0], (("naive Langevin", naive), ("annealed Langevin", annealed)), strict=True
    ):
        draw_density_image(ax, mixture, extent, density_grid, device, dtype)
        scatter_points(ax, to_numpy(samples), "samples", SAMPLE_COLOR)
        set_window(ax, extent)
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


def tweedie_denoiser(noise_score_fn: NoiseScoreFn) -> NoiseScoreFn:
    """Tweedie's denoiser ``D(x̃, σ) = x̃ + σ² s(x̃, σ)`` of a noise score (``score.posterior_mean``)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return posterior_mean(x, noise_score_fn(x, sigma), 1.0, sigma)

    return denoise


def plot_denoising_strip(
    x_0: torch.Tensor,
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

    Without ``sde`` the levels are noise standard deviations ``σ``, ``x̃ = x_0 + σ z``, and
    ``denoise_fn(x̃, σ[B])`` estimates ``x_0`` (e.g. ``tweedie_denoiser(noise_score)``); with ``sde``
    they are times ``t``, ``x_t = m(t) x_0 + std(t) z`` and ``denoise_fn(x_t, t[B])`` (e.g.
    ``ScoreModel.denoise``). ``x_0`` and ``denoise_fn`` live in the model's space; ``to_data`` (e.g. a
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
    images = x_0.ndim == 4
    if images:
        x_0 = x_0[:n_show]
    elif x_0.ndim != 2:
        raise ValueError(f"x_0 must be [N, d] points or [B, C, H, W] images, got shape {tuple(x_0.shape)}")

    def in_data(x: torch.Tensor) -> np.ndarray:
        return to_numpy(x if to_data is None else to_data(x))

    rows = []  # (title, noisy, denoised) per level, in data units
    for level in levels:
        batch = torch.full((x_0.shape[0],), float(level), dtype=x_0.dtype, device=x_0.device)
        if sde is None:
            scale, std = torch.ones_like(batch), batch
        else:
            scale, std = (v.to(x_0) * torch.ones_like(batch) for v in sde.marginal(batch))
        noise_device = x_0.device if generator is None else generator.device
        noise = torch.randn(x_0.shape, generator=generator, dtype=x_0.dtype, device=noise_device).to(
            x_0.device
        )
        noisy = append_dims(scale, x_0.ndim) * x_0 + append_dims(std, x_0.ndim) * noise
        with torch.no_grad():
            denoised = denoise_fn(noisy, batch)
        title = f"{'t' if sde is not None else 'σ'} = {float(level):.3g}"
        rows.append((title, in_data(noisy), in_data(denoised)))
    clean = in_data(x_0)
    if images:
        return _denoising_images(clean, rows, value_range)
    if clean.shape[1] == 2:
        return _denoising_plane(clean, rows, columns)
    return _denoising_histograms(clean, rows, columns)


def _denoising_plane(clean: np.ndarray, rows: list, columns: Sequence[str] | None) -> Figure:
    fig, axes = new_figure(2, len(rows), size=2.6)
    for j, (title, noisy, denoised) in enumerate(rows):
        extent = extent_of(np.concatenate([clean, noisy, denoised]))
        for i, (name, values, color) in enumerate(
            (("noisy", noisy, "C0"), ("denoised", denoised, SAMPLE_COLOR))
        ):
            ax = axes[i, j]
            scatter_points(ax, clean, "clean data", DATA_COLOR, size=2.0, alpha=0.4)
            scatter_points(ax, values, name, color, size=2.0)
            set_window(ax, extent)
            label_plane(ax, columns)
            ax.set_title(f"{name}, {title}", fontsize="small")
    return fig


def _denoising_histograms(clean: np.ndarray, rows: list, columns: Sequence[str] | None) -> Figure:
    names = column_names(columns, clean.shape[1])
    fig, axes = new_figure(len(names), len(rows), size=2.2)
    for j, (title, noisy, denoised) in enumerate(rows):
        limits = limits_of(clean, noisy, denoised)
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
            show_images(ax, values, nrow=nrow, value_range=value_range)
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
    t_end: float = 1e-3,
) -> Figure:
    """Probability-flow ODE trajectories (Song et al. 2021, eq. 13): each prior point's path to a sample.

    Integrates ``scorefield.samplers.sample_ode`` on ``n_steps`` fixed steps of ``method`` from
    ``x_T [N, 2]`` at ``t = 1`` to ``t_end``; draws one line per particle (faded from the prior end),
    its start and its end, over the ``data`` if given. The paths run in the model's own space, where
    the prior is isotropic (standardised coordinates by design): without ``extent`` both axes share
    one scale (equal aspect), so the flow's directions are not distorted.
    """
    check_2d("x_T", to_numpy(x_T))
    _, info = sample_ode(score_fn, sde, x_T, n_steps, method=method, t_end=t_end, return_trajectory=True)
    paths = to_numpy(info["trajectory"]).transpose(1, 0, 2)  # (N, T, 2)
    fig, axes = new_figure(1, 1, size=4.2)
    ax = axes[0, 0]
    if data is not None:
        scatter_points(ax, to_numpy(data), "data", DATA_COLOR, size=2.0, alpha=0.4)
    ax.add_collection(LineCollection(list(paths), colors="C0", linewidths=0.6, alpha=0.5, label="ODE paths"))
    ax.scatter(paths[:, 0, 0], paths[:, 0, 1], s=6, c="C0", marker="x", linewidths=0.6, label="t = 1 (prior)")
    ax.scatter(paths[:, -1, 0], paths[:, -1, 1], s=6, c=SAMPLE_COLOR, label=f"t = {t_end:g} (samples)")
    if extent is not None:
        set_window(ax, extent)
    else:
        ax.autoscale()
        ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="lower right", fontsize="x-small", markerscale=2)
    ax.set_title(f"probability-flow ODE ({method}, {n_steps} steps)")
    return fig
