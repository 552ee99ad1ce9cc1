"""Sections 1 to 4, on the tutorials' mixture, whose exact score is known: the score itself,
learning it by score matching, sampling with it by Langevin dynamics, and adding noise.

1. ``score``: the exact score of the tutorials' mixture: its field, a slice, its divergence, and
   sinks that interfere;
2. ``score_matching``: one MLP trained with every objective, scored by the relative Fisher
   divergence to the exact score, and the basins of the learned field;
3. ``langevin``: Langevin dynamics with the exact score, naive against annealed;
4. ``noise_section``: smoothing as a convolution and the denoising target ``-z/σ``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ... import losses, viz
from ...distributions import GaussianMixture, Parzen
from ...likelihood import divergence
from ...metrics import fisher_divergence
from ..experiments import flow_basins, line_mixture, run_naive_vs_annealed
from ..models import fit_model, mlp
from ..settings import DSM_SIGMA, EXTENT, Budget, Streams
from .common import DIAGONAL, Section, mode_shares, uniform_grid

__all__ = ["SHOWN", "interfering_mixture", "langevin", "noise_section", "score", "score_matching"]

SHOWN = "ism_exact"  # the score-matching objective whose learned field section 2 draws


def _divergence_at(score_fn: Callable, x: torch.Tensor) -> list[float]:
    """The exact divergence of ``score_fn`` at the points ``x``."""
    unused_time = torch.zeros(x.shape[0], dtype=x.dtype)
    return divergence(lambda y, _: score_fn(y), x, unused_time, kind="exact").tolist()


def interfering_mixture() -> GaussianMixture:
    """Three close components of different widths and weights, whose sinks interfere: standard
    deviations 0.5, 1 and 0.7, weights 0.5, 0.3 and 0.2."""
    stds = torch.tensor([0.5, 1.0, 0.7], dtype=torch.float64)
    means = torch.tensor([[-1.5, -0.5], [1.5, -0.5], [0.0, 1.8]], dtype=torch.float64)
    covs = stds[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64)
    return GaussianMixture(means, covs, [0.5, 0.3, 0.2])


DATA_BUMP = 0.4  # width of the Gaussian bump on each sample in the divergence of the samples' density


def score(mixture: GaussianMixture, budget: Budget, streams: Streams) -> Section:
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
    numbers = {
        "true_weights": mixture.weights.tolist(),
        "boundary_shift": float((line[crossing] - exact.means.mean(0)).norm()),
        "divergence_at_modes": _divergence_at(exact.score, exact.means),
        "divergence_max": max(_divergence_at(exact.score, grid)),
        "bumps": {
            "sigma": DATA_BUMP,
            "at_points_median": float(np.median(at_points)),
            "single_bump": -2 / DATA_BUMP**2,
            "max": max(_divergence_at(bumps.score, grid)),
        },
        "interfering": {
            "weights": close.weights.tolist(),
            "stds": close.covs[:, 0, 0].sqrt().tolist(),
            "sinks": (-torch.linalg.inv(close.covs).diagonal(dim1=-2, dim2=-1).sum(-1)).tolist(),
            "divergence_at_means": _divergence_at(close.score, close.means),
            "divergence_max": max(_divergence_at(close.score, close_grid)),
        },
    }
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


def _basins(mixture: GaussianMixture, net: torch.nn.Module) -> tuple[dict, np.ndarray]:
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
    numbers = {
        "wrong_fraction": float(wrong.mean()),
        "nowhere_fraction": float((learned == -1).double().mean()),
        "wrong_min_distance": float(distance[wrong].min()) if wrong.any() else math.nan,
        "wrong_from_heavy": float((truth[torch.as_tensor(wrong)] == 0).double().mean())
        if wrong.any()
        else math.nan,
        "far_norm_ratio": float(learned_norm[far].mean() / true_norm[far].mean()),
        "grid": BASIN_GRID,
    }
    return numbers, wrong.reshape(BASIN_GRID, BASIN_GRID)


def score_matching(mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams) -> Section:
    """2. One MLP (the same initial weights) trained on ``data`` with every objective; per objective
    the relative Fisher divergence to the exact score under p and uniformly over the window (dsm:
    to the score of the smoothed mixture); the ``SHOWN`` objective's field with the region whose
    points it sends to the wrong mode, and its error."""
    b = budget
    x_eval = mixture.sample(b.n_eval, generator=streams.generator(20))
    smoothed = mixture.smooth(DSM_SIGMA)
    x_eval_smoothed = smoothed.sample(b.n_eval, generator=streams.generator(21))
    plane = uniform_grid(EXTENT, 60)
    results, nets = {}, {}
    for i, (name, objective) in enumerate(_score_matching_objectives(mixture).items()):
        net = mlp(streams.seed, b.hidden, depth=2, cond=False)  # the same initial weights for every objective
        wall = fit_model(
            net, lambda x, g, f=objective, n=net: f(n, x, g), data, b.sm_steps, b.batch_size,
            streams.generator(30 + i),
        )  # fmt: skip
        reference, x_ref = (smoothed, x_eval_smoothed) if name == "dsm" else (mixture, x_eval)
        results[name] = {
            "fisher": fisher_divergence(net, reference.score, x_ref),
            "fisher_plane": fisher_divergence(net, reference.score, plane),
            "train_s": wall,
            "steps": b.sm_steps,
        }
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
    error = {"corners": corner_error.max().item(), "plane_max": plane_error.max().item(),
             "plane_median": plane_error.median().item()}  # fmt: skip
    results = {"objectives": results, "basins": basins, "error": error}
    figures = {
        "learned_score_field": field,
        "score_error": viz.plot_score_error(mixture, nets[SHOWN], extent=EXTENT, data=data[:500]),
    }
    return Section(results, figures)


def langevin(mixture: GaussianMixture, budget: Budget, streams: Streams, out: Path) -> Section:
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
    numbers = {
        "naive": mode_shares(naive, mixture),
        "annealed": mode_shares(annealed, mixture),
        "wall_s": wall,
        "gif_start_upper": float(((x_init[:, 0] + x_init[:, 1]) > 0).double().mean()),
    }
    figures = {
        "langevin": gif,
        "naive_vs_annealed": viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT),
    }
    return Section(numbers, figures)


def noise_section(mixture: GaussianMixture, budget: Budget, streams: Streams) -> Section:
    """4. Adding noise, in one dimension along the line through the modes (the mixture there is
    ``0.8 N(-5√2, 1) + 0.2 N(5√2, 1)``): data points smoothed into a mixture, the density smoothed
    at several levels, and the denoising target ``-z/σ`` against the score of ``p_σ``."""
    line = line_mixture(mixture.to(torch.float64), DIAGONAL, standardize=False)
    points = line.sample(8, generator=streams.generator(45))
    sigmas = (1.0, 3.0, 7.0)
    clean = mixture.sample(3, generator=streams.generator(46))
    dsm_sigma = 2.0
    figures = {
        "smoothing": viz.plot_smoothing_1d(points, 1.5, line, sigmas),
        "dsm_target": viz.plot_dsm_target(
            clean, line, dsm_sigma, n_copies=6, generator=streams.generator(47)
        ),
    }
    numbers = {
        "line_means": line.means[:, 0].tolist(),
        "kernel_sigma": 1.5,
        "smoothing_sigmas": list(sigmas),
        "dsm_sigma": dsm_sigma,
    }
    return Section(numbers, figures)
