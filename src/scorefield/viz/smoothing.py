"""Figures of the score-functions tutorial's "Adding Noise": smoothing a density as a convolution,
the denoising-score-matching target ``-z/σ``, and the smoothed density, its score and a learned
score's error at several noise levels (why noise fixes the scores in low-density regions).

The densities are analytic (``scorefield.distributions``): smoothing a Gaussian mixture by
``N(0, σ²I)`` adds ``σ²I`` to every covariance (docs/math.md#smoothing-and-diffusion), so every
curve here is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colors
from matplotlib.figure import Figure

from ..distributions import GaussianMixture
from .base import (
    DATA_COLOR,
    ArrayLike,
    Extent,
    NoiseScoreFn,
    evaluate_on,
    hdr_levels,
    plane_grid,
    set_window,
    to_numpy,
)

__all__ = ["plot_dsm_target", "plot_smoothed_scores", "plot_smoothing_1d"]


def _line(dist: GaussianMixture, x: np.ndarray, what: str = "density") -> np.ndarray:
    points = torch.as_tensor(x, dtype=torch.float64)[:, None]
    dist = dist.to(torch.float64)
    if what == "density":
        return dist.log_prob(points).exp().numpy()
    return dist.score(points)[:, 0].numpy()


def plot_smoothing_1d(
    points: ArrayLike,
    sigma: float,
    dist: GaussianMixture,
    sigmas: Sequence[float],
    n: int = 600,
) -> Figure:
    """Smoothing as a convolution, in one dimension (the score-functions tutorial's "adding two random variables").

    Left: data points as impulses (stems), the kernel ``N(x; x_i, σ²)/N`` placed on each (thin) and
    their sum (thick), the Parzen density ``q_σ = (1/N) Σ_i N(x; x_i, σ²)``: convolving the
    impulses with a Gaussian gives a mixture of Gaussians. Right: a density ``p`` (the 1-D mixture
    ``dist``) and ``p_σ = p * N(0, σ²)`` for each of ``sigmas``: the bumps widen, the valley between
    them fills, and the support grows.
    """
    x_points = to_numpy(points).reshape(-1)
    fig = Figure(figsize=(7.0, 3.3), layout="constrained")
    left, right = fig.subplots(1, 2)
    lo = min(x_points.min(), float(dist.means.min())) - 4 * max(sigma, 1.0)
    hi = max(x_points.max(), float(dist.means.max())) + 4 * max(sigma, 1.0)
    x = np.linspace(lo, hi, n)
    kernels = np.exp(-0.5 * ((x[None, :] - x_points[:, None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    kernels /= len(x_points)
    for k, row in enumerate(kernels):
        left.plot(
            x,
            row,
            color="C0",
            linewidth=0.8,
            alpha=0.7,
            label=r"one kernel $N(x; x_i, \sigma^2)/N$" if k == 0 else None,
        )
    left.plot(x, kernels.sum(0), color="C3", linewidth=2.0, label=r"their sum $q_\sigma$ (a mixture)")
    height = float(kernels.sum(0).max())
    left.vlines(x_points, 0, 0.25 * height, color="k", linewidth=1.5, label="data points (impulses)")
    left.set_ylim(0, 1.25 * height)
    left.set_xlabel("x")
    left.set_ylabel("density")
    left.set_title(f"{len(x_points)} points smoothed, σ = {sigma:g}", fontsize="medium")
    left.legend(fontsize="x-small", loc="upper left")
    cmap = [f"C{i}" for i in range(1, 1 + len(sigmas))]
    right.fill_between(x, _line(dist, x), color="0.75", label="p (σ = 0)")
    for color, level in zip(cmap, sigmas, strict=True):
        right.plot(
            x,
            _line(dist.smooth(float(level)), x),
            color=color,
            linewidth=1.8,
            label=rf"$p_\sigma$, σ = {level:g}",
        )
    right.set_xlabel("x")
    right.set_title(r"$p_\sigma = p * N(0, \sigma^2)$: wider support", fontsize="medium")
    right.legend(fontsize="x-small", loc="upper left")
    right.set_ylim(bottom=0)
    return fig


def plot_dsm_target(
    points: ArrayLike,
    dist: GaussianMixture,
    sigma: float,
    n_copies: int = 6,
    n_pairs: int = 3000,
    generator: torch.Generator | None = None,
) -> Figure:
    """The denoising-score-matching target ``∇log N(x̃; x, σ²I) = -(x̃ - x)/σ² = -z/σ`` (Vincent 2011).

    Left: a few clean points ``x`` (``points [K, 2]``), ``n_copies`` noisy copies ``x̃ = x + σz`` of
    each, and each copy's target drawn times ``σ²`` (so that it ends on ``x``): the target points back
    to the copy's own clean point, whichever that is. Right, in one dimension (``dist``, a 1-D
    mixture): ``n_pairs`` targets ``-z/σ`` against ``x̃``, their average in bins of ``x̃``, and the exact
    score of ``p_σ``: the targets scatter, their conditional mean is the score of the smoothed
    density, which is what the regression learns.
    """
    clean = torch.as_tensor(to_numpy(points))
    z = torch.randn(clean.shape[0], n_copies, 2, generator=generator, dtype=clean.dtype)
    noisy = clean[:, None, :] + sigma * z
    fig = Figure(figsize=(7.0, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for k in range(clean.shape[0]):
        color = f"C{k}"
        ends = noisy[k]
        target = -z[k] / sigma  # the score of N(x̃; x, σ²I) at x̃
        drawn = sigma**2 * target
        left.quiver(ends[:, 0], ends[:, 1], drawn[:, 0], drawn[:, 1], angles="xy", scale_units="xy", scale=1,
                    color=color, width=0.006, alpha=0.8)  # fmt: skip
        left.scatter(
            ends[:, 0],
            ends[:, 1],
            s=14,
            color=color,
            alpha=0.8,
            label=r"noisy copies $\tilde{x}$" if k == 0 else None,
        )
    left.scatter(clean[:, 0], clean[:, 1], s=60, c="k", marker="x", label="clean points x")
    left.set_aspect("equal", adjustable="datalim")
    left.set_title(r"target $-z/\sigma$ (drawn $\times\,\sigma^2$)", fontsize="medium")
    left.set_xlabel("x0")
    left.set_ylabel("x1")
    left.legend(fontsize="x-small", loc="lower right")
    x = dist.sample(n_pairs, generator=generator).to(torch.float64)[:, 0]
    noise = torch.randn(n_pairs, generator=generator, dtype=torch.float64)
    x_noisy = (x + sigma * noise).numpy()
    targets = (-noise / sigma).numpy()
    right.scatter(x_noisy, targets, s=2, c=DATA_COLOR, alpha=0.35, linewidths=0, label=r"targets $-z/\sigma$")
    bins = np.linspace(np.quantile(x_noisy, 0.01), np.quantile(x_noisy, 0.99), 25)
    which = np.digitize(x_noisy, bins)
    centres, means = [], []
    for b in range(1, len(bins)):
        inside = which == b
        if inside.sum() >= 20:
            centres.append(x_noisy[inside].mean())
            means.append(targets[inside].mean())
    right.plot(centres, means, "o", color="C1", markersize=4, label=r"their mean in bins of $\tilde{x}$")
    grid = np.linspace(bins[0], bins[-1], 400)
    right.plot(grid, _line(dist.smooth(sigma), grid, "score"), color="C3", linewidth=2,
               label=r"score of $p_\sigma$ (exact)")  # fmt: skip
    spread = 3.0 / sigma
    right.set_ylim(-spread, spread)
    right.set_xlabel(r"$\tilde{x} = x + \sigma z$")
    right.set_ylabel("target")
    right.set_title(rf"targets against $\tilde{{x}}$ (σ = {sigma:g})", fontsize="medium")
    right.legend(fontsize="x-small", loc="upper right", markerscale=2)
    return fig


def plot_smoothed_scores(
    dist: GaussianMixture,
    sigmas: Sequence[float],
    learned: NoiseScoreFn,
    extent: Extent,
    grid: int = 48,
    arrows: int = 12,
    data: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    """The score-functions tutorial's "Adding Noise": the smoothed density, its score and a learned score's error at several levels.

    One row per level ``σ`` of ``sigmas``. Left: ``p_σ = p * N(0, σ²I)`` with its exact score
    (arrows, one scale per row). Right: the learned score's error ``σ ||s_θ(x, σ) - ∇log p_σ(x)||``
    (``learned(x, σ[B])``; times ``σ``, the scale on which the noise-conditional loss weighs every
    level), on one logarithmic colour scale for all rows, with the regions holding 50/90/99% of
    ``p_σ``'s mass outlined, and the learned arrows. At a small ``σ`` the error is small only where
    the data are; at a large one ``p_σ`` covers the window and so does the training. ``labels`` name
    the rows (default ``σ = ...``); the window ``extent`` is the same in every row.
    """
    xs, ys, points = plane_grid(extent, grid)
    ax_x, ax_y, arrow_points = plane_grid(extent, arrows)
    cell = np.array([extent[1] - extent[0], extent[3] - extent[2]]) / max(arrows - 1, 1)
    rows = []
    for sigma in sigmas:
        smoothed = dist.smooth(float(sigma))
        density = np.exp(evaluate_on(smoothed.log_prob, points, dtype=torch.float64)).reshape(grid, grid)
        level = torch.full((points.shape[0],), float(sigma), dtype=dtype)
        true = evaluate_on(smoothed.score, points, dtype=torch.float64)
        fitted = evaluate_on(lambda x, level=level: learned(x, level[: x.shape[0]]), points, dtype=dtype)
        error = float(sigma) * np.linalg.norm(fitted - true, axis=1).reshape(grid, grid)
        level_a = torch.full((arrow_points.shape[0],), float(sigma), dtype=dtype)
        true_arrows = evaluate_on(smoothed.score, arrow_points, dtype=torch.float64)
        learned_arrows = evaluate_on(lambda x, level=level_a: learned(x, level), arrow_points, dtype=dtype)
        rows.append((density, error, true_arrows, learned_arrows))
    errors = np.concatenate([r[1].ravel() for r in rows])
    positive = errors[errors > 1e-12]
    if positive.size:
        low = max(float(np.quantile(positive, 0.01)), 1e-3)
        norm = colors.LogNorm(vmin=min(low, float(positive.max()) / 10), vmax=float(positive.max()))
    else:  # an exact score: nothing to show but that there is no error
        norm = colors.LogNorm(vmin=1e-3, vmax=1.0)
    size = 2.9
    fig = Figure(figsize=(2 * size + 0.9, len(sigmas) * (size + 0.15)), layout="constrained")
    axes = fig.subplots(len(sigmas), 2, squeeze=False)
    labels = labels or [f"σ = {float(s):.3g}" for s in sigmas]
    for i, (density, error, true_arrows, learned_arrows) in enumerate(rows):
        left, right = axes[i]
        left.imshow(
            density, origin="lower", extent=extent, cmap="Blues", aspect="auto", interpolation="bilinear"
        )
        longest = float(np.linalg.norm(true_arrows / cell, axis=1).max()) or 1.0
        for ax, field, color in ((left, true_arrows, "k"), (right, learned_arrows, "w")):
            ax.quiver(ax_x, ax_y, field[:, 0].reshape(ax_x.shape), field[:, 1].reshape(ax_x.shape), angles="xy",
                      scale_units="xy", scale=longest / 0.9, width=0.005, color=color)  # fmt: skip
        image = right.imshow(error, origin="lower", extent=extent, cmap="magma", norm=norm, aspect="auto",
                             interpolation="bilinear")  # fmt: skip
        right.contour(xs, ys, density, levels=hdr_levels(density), colors="c", linewidths=0.8)
        if data is not None:
            shown = to_numpy(data)
            left.scatter(shown[:, 0], shown[:, 1], s=1.5, c="C3", alpha=0.4, linewidths=0)
        for ax in (left, right):
            set_window(ax, extent)
        left.set_ylabel(f"{labels[i]}\nx1")
        if i == 0:
            left.set_title(r"$p_\sigma$ and its score $\nabla \log p_\sigma$", fontsize="medium")
            right.set_title(r"$\sigma\,\|s_\theta(x, \sigma) - \nabla \log p_\sigma(x)\|$", fontsize="medium")
        if i == len(sigmas) - 1:
            left.set_xlabel("x0")
            right.set_xlabel("x0")
    fig.colorbar(image, ax=axes[:, 1].tolist(), shrink=0.6, label="σ × error of the learned score")
    return fig
