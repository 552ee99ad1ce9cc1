"""The demo's eight sections as computations: each takes what it needs as arguments (the mixture,
the training data, the budget, the random streams, the folder for its animations) and returns a
``Section``: its numbers (its part of ``results.json``) and its figures (drawn with
``scorefield.viz``, not yet saved). Nothing here writes HTML; ``page.py`` turns the results into
the page. The likelihood section evaluates the model that the diffusion section trained, which
``Diffusion`` carries.

1. ``score``: the exact score of the tutorials' mixture: its field, a slice, its divergence, and
   sinks that interfere;
2. ``score_matching``: one MLP trained with every objective, scored by the relative Fisher
   divergence to the exact score, and the basins of the learned field;
3. ``langevin``: Langevin dynamics with the exact score, naive against annealed;
4. ``noise``: smoothing as a convolution and the denoising target ``-z/σ``;
5. ``ncsn``: a noise-conditional score network, its error at several noise levels, sampled by
   annealed Langevin;
6. ``diffusion``: a VP SDE, a 1-D density over time with its paths, the chain of denoisers, every
   predictor-corrector combination and the ODE;
7. ``likelihood``: the ODE's exact log-likelihood against the mixture's, and where its error comes from;
8. ``moons``: the same diffusion on moons, against a kernel density estimate and a classifier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import datasets, losses, noise, viz
from ..distributions import GaussianMixture
from ..likelihood import divergence, log_likelihood
from ..metrics import fisher_divergence, mmd, mode_weights
from ..ode import counted
from ..samplers import PREDICTORS, sample_ode, sample_pc
from ..scalers import Standardizer
from ..score import NoiseConditionalScore, ScoreModel
from .experiments import (
    classifier_two_sample_test,
    distance_to_arcs,
    flow_basins,
    kde_log_likelihood,
    line_mixture,
    near_inner_tips,
    run_naive_vs_annealed,
    standardised_mixture,
)
from .models import LearnedDensity, fit_model, mlp, train_vp
from .settings import (
    DENOISING_TIMES,
    DSM_SIGMA,
    EXTENT,
    MOONS_EXTENT,
    MOONS_NOISE,
    SHOWN_LEVELS,
    VP_EPS,
    Budget,
    Streams,
)

__all__ = [
    "SHOWN",
    "Diffusion",
    "Section",
    "diffusion",
    "interfering_mixture",
    "langevin",
    "likelihood",
    "moons",
    "ncsn",
    "noise_section",
    "score",
    "score_matching",
]

SHOWN = "ism_exact"  # the score-matching objective whose learned field section 2 draws
DIAGONAL = torch.tensor([1.0, 1.0])  # the line through the two modes of two_gaussians()
OFF_ARC = 3 * MOONS_NOISE  # a moons point farther than this from both arcs is "off the arcs"


@dataclass(frozen=True)
class Section:
    """What a section computed: ``numbers``, its part of ``results.json``, and ``figures`` by file
    name (without suffix): a matplotlib ``Figure`` to save as PNG, or the path of a GIF written."""

    numbers: dict
    figures: dict[str, Figure | Path]


@dataclass(frozen=True)
class Diffusion(Section):
    """The diffusion section's result, with the VP score model it trained and the scaler of its data."""

    model: ScoreModel
    scaler: Standardizer


# --------------------------------------------------------------------------------------------------
# numbers shared by several sections


def _weight_error(weights: torch.Tensor, truth: torch.Tensor) -> float:
    """Total-variation distance between mode-weight vectors, ``½ Σ_k |ŵ_k - w_k|`` (for two modes, ``|ŵ_1 - w_1|``)."""
    return float(0.5 * (weights.double() - truth.double()).abs().sum())


def _modes(x: torch.Tensor, mixture: GaussianMixture) -> dict:
    """The fraction of ``x`` in each mode of ``mixture`` and its distance to the true weights."""
    weights = mode_weights(x, mixture)
    return {"weights": weights.tolist(), "error": _weight_error(weights, mixture.weights)}


def _expected_log_prob_separated(mixture: GaussianMixture) -> float:
    """``E_p[log p]`` of a mixture whose components do not overlap: ``Σ_k w_k (log w_k - ½ log det(2πe Σ_k))``.

    Exact up to the overlap of the components, which for ``two_gaussians()`` (modes 14 standard
    deviations apart) is far below float precision.
    """
    d = mixture.dim
    logdet = torch.logdet(mixture.covs.double())
    w = mixture.weights.double()
    return float((w * (w.log() - 0.5 * (d * math.log(2 * math.pi * math.e) + logdet))).sum())


def _uniform_grid(extent: tuple[float, float, float, float], n: int) -> torch.Tensor:
    """``n x n`` points evenly covering ``extent``: ``[n*n, 2]``."""
    xs = torch.linspace(extent[0], extent[1], n)
    ys = torch.linspace(extent[2], extent[3], n)
    return torch.cartesian_prod(xs, ys)


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def _divergence_at(score_fn: Callable, x: torch.Tensor) -> list[float]:
    """The exact divergence of ``score_fn`` at the points ``x``."""
    unused_time = torch.zeros(x.shape[0], dtype=x.dtype)
    return divergence(lambda y, _: score_fn(y), x, unused_time, kind="exact").tolist()


# --------------------------------------------------------------------------------------------------
# the sections


def interfering_mixture() -> GaussianMixture:
    """Three close components of different widths and weights, whose sinks interfere: standard
    deviations 0.5, 1 and 0.7, weights 0.5, 0.3 and 0.2."""
    stds = torch.tensor([0.5, 1.0, 0.7], dtype=torch.float64)
    means = torch.tensor([[-1.5, -0.5], [1.5, -0.5], [0.0, 1.8]], dtype=torch.float64)
    covs = stds[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64)
    return GaussianMixture(means, covs, [0.5, 0.3, 0.2])


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
    grid = _uniform_grid(EXTENT, 120).double()
    close_grid = _uniform_grid((-4.5, 4.5, -3.5, 4.5), 120).double()
    exact = mixture.to(torch.float64)
    u = torch.linspace(0.0, 1.0, 100_001, dtype=torch.float64)[:, None]
    line = exact.means[0] + u * (exact.means[1] - exact.means[0])  # from the heavy mode to the light one
    crossing = int(torch.nonzero(exact.responsibilities(line)[:, 1] > 0.5)[0])
    numbers = {
        "true_weights": mixture.weights.tolist(),
        "boundary_shift": float((line[crossing] - exact.means.mean(0)).norm()),
        "divergence_at_modes": _divergence_at(exact.score, exact.means),
        "divergence_max": max(_divergence_at(exact.score, grid)),
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
    plane = _uniform_grid(EXTENT, 60)
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
    results = {"objectives": results, "basins": basins}
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
    x0 = lo + (hi - lo) * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.langevin_animation(
        mixture.score, x0, out / "langevin.gif", step_size=0.05, n_steps=b.gif_steps,
        n_frames=b.gif_frames, background=mixture, extent=EXTENT, generator=g, spacing="log",
    )  # fmt: skip
    start = time.perf_counter()
    _, naive, annealed = run_naive_vs_annealed(
        mixture, n=b.n_samples, n_steps=b.langevin_steps, n_steps_each=b.n_steps_each,
        generator=streams.generator(41),
    )  # fmt: skip
    wall = time.perf_counter() - start
    numbers = {
        "naive": _modes(naive, mixture),
        "annealed": _modes(annealed, mixture),
        "wall_s": wall,
        "gif_start_upper": float(((x0[:, 0] + x0[:, 1]) > 0).double().mean()),
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
    line = line_mixture(mixture.to(torch.float64), DIAGONAL, standardise=False)
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


def _shown_levels(sigmas: torch.Tensor) -> list[int]:
    """``SHOWN_LEVELS`` indices into ``sigmas`` (largest first), evenly spread, both ends included."""
    return sorted({int(round(i)) for i in np.linspace(0, len(sigmas) - 1, SHOWN_LEVELS)}, reverse=True)


def ncsn(
    mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams, out: Path
) -> Section:
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
    plane = _uniform_grid(EXTENT, 60)
    shown = _shown_levels(sigmas)
    levels = []
    for i in shown:
        sigma = float(sigmas[i])
        smoothed = mixture.smooth(sigma)
        fixed = viz.at_level(model, sigma)
        on_p = smoothed.sample(b.n_eval, generator=streams.generator(55))
        levels.append({
            "index": n_levels - i,  # the tutorial's numbering, sigma_1 the smallest
            "sigma": sigma,
            "fisher": fisher_divergence(fixed, smoothed.score, on_p),
            "fisher_plane": fisher_divergence(fixed, smoothed.score, plane),
        })  # fmt: skip
    numbers = {
        "sigma_max": sigma_max,
        "sigma_min": sigma_min,
        "n_levels": n_levels,
        "train_s": wall,
        "sample_s": sample_s,
        "naive": _modes(naive, mixture),
        "annealed": _modes(annealed, mixture),
        "levels": levels,
        "step_lr": 0.1 * sigma_min**2,
    }
    for name, x in (("naive", naive), ("annealed", annealed)):
        value, stderr = mmd(x, truth, return_stderr=True)
        numbers[name] |= {"mmd": value, "mmd_stderr": stderr}
    samples = viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT)
    scores = viz.plot_smoothed_scores(
        mixture, [float(sigmas[i]) for i in shown], model, EXTENT,
        labels=[f"σ{_subscript(n_levels - i)} = {float(sigmas[i]):.3g}" for i in shown],
    )  # fmt: skip
    g = streams.generator(54)
    x0 = -8.0 + 16.0 * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.annealed_langevin_animation(
        model, x0, out / "annealed_langevin.gif", sigmas, step_lr=numbers["step_lr"],
        n_steps_each=b.n_steps_each, n_frames=b.gif_frames, background_at=mixture.smooth, window="level",
        extent=EXTENT, generator=g,
    )  # fmt: skip
    return Section(numbers, {"ncsn_samples": samples, "noise_levels": scores, "annealed_langevin": gif})


def _subscript(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


PREDICTOR_NAMES = {"euler_maruyama": "Euler–Maruyama", "reverse_diffusion": "reverse diffusion"}


def _samplers(budget: Budget) -> dict[str, tuple[str, Callable]]:
    """``key -> (label, run(score_fn, sde, x_T, generator) -> (x, nfe or None))`` for every sampler compared."""
    table: dict[str, tuple[str, Callable]] = {}
    for predictor in PREDICTORS:
        for corrector in (None, "langevin"):
            key = predictor if corrector is None else f"{predictor}+{corrector}"
            label = (
                f"PC: {PREDICTOR_NAMES.get(predictor, predictor)}"
                + (" + Langevin corrector" if corrector else "")
                + f", {budget.pc_steps} steps"
            )

            def run(score_fn, sde, x_T, generator, predictor=predictor, corrector=corrector):
                x = sample_pc(score_fn, sde, x_T, budget.pc_steps, predictor=predictor, corrector=corrector,
                              generator=generator)  # fmt: skip
                return x, None

            table[key] = (label, run)
    table["ode_dopri5"] = (
        "ODE: dopri5 (adaptive, rtol = atol = 1e-5)",
        lambda score_fn, sde, x_T, generator: _ode(score_fn, sde, x_T, "dopri5", None),
    )
    table["ode_rk4"] = (
        f"ODE: rk4, {budget.ode_steps} steps",
        lambda score_fn, sde, x_T, generator: _ode(score_fn, sde, x_T, "rk4", budget.ode_steps),
    )
    return table


def _ode(score_fn, sde, x_T, method: str, n_steps: int | None):
    x, info = sample_ode(score_fn, sde, x_T, method=method, n_steps=n_steps)
    return x, info["nfe"]


def diffusion(
    mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams, out: Path
) -> Diffusion:
    """6. A VP score model trained on ``data`` by continuous-time DSM, then every sampler from the
    same prior draws: mode weights, MMD² to exact samples, NFE and time per sampler; figures of a
    1-D density over time with exact reverse-SDE and ODE paths, the chain of denoisers, the reverse
    SDE over the exact ``p_t`` (``out/reverse_sde.gif``), the ODE's paths and its samples."""
    b = budget
    model, scaler, wall = train_vp(data, b.vp_steps, b, streams, 60)
    sde = model.sde
    x_T = sde.prior_sample((b.n_samples, 2), generator=streams.generator(61))
    truth = mixture.sample(b.n_samples, generator=streams.generator(62))
    numbers: dict = {"train_s": wall, "steps": b.vp_steps, "samplers": {}}
    samples = {}
    for key, (label, run) in _samplers(b).items():
        score_fn, calls = counted(model)
        start = time.perf_counter()
        z, nfe = run(score_fn, sde, x_T, streams.generator(63))
        x = scaler.inverse_transform(z)
        value, stderr = mmd(x, truth, return_stderr=True)
        numbers["samplers"][key] = _modes(x, mixture) | {
            "label": label,
            "nfe": calls[0] if nfe is None else nfe,
            "wall_s": time.perf_counter() - start,
            "mmd": value,
            "mmd_stderr": stderr,
        }
        samples[key] = x
    numbers["weight_stderr"] = math.sqrt(0.8 * 0.2 / b.n_samples)
    standardised = standardised_mixture(mixture.to(torch.float64), scaler)
    line = line_mixture(mixture.to(torch.float64), DIAGONAL)
    numbers["line"] = {"means": line.means[:, 0].tolist(), "std": float(line.covs[0, 0, 0].sqrt())}
    m1, std1 = (float(v) for v in sde.marginal(1.0))
    numbers["m1"], numbers["std1"] = m1, std1
    numbers["jumps"] = _one_jump(model, scaler.transform(data[:400]), standardised, streams.generator(67))
    shown_data = scaler.transform(truth[: b.gif_particles])
    figures: dict[str, Figure | Path] = {
        "diffusion_1d": viz.plot_diffusion_1d(line, sde, n_steps=b.pc_steps, generator=streams.generator(66)),
        "denoising_chain": viz.plot_denoising_chain(
            scaler.transform(data[:400]),
            DENOISING_TIMES,
            model.denoise,
            sde,
            model,
            x_T[:400],
            n_steps=b.pc_steps,
            generator=streams.generator(64),
        ),  # fmt: skip
        "reverse_sde": viz.reverse_sde_animation(
            model,
            sde,
            x_T[: b.gif_particles],
            out / "reverse_sde.gif",
            n_steps=b.pc_steps,
            n_frames=b.gif_frames,
            extent=(-3.5, 3.5, -3.5, 3.5),
            generator=streams.generator(65),
            background_at=lambda t: standardised.diffuse(sde, max(t, VP_EPS)),
            data=shown_data,
        ),  # fmt: skip
        "ode_trajectories": viz.plot_ode_trajectories(
            model,
            sde,
            x_T[: b.n_trajectories],
            n_steps=b.ode_steps,
            method="rk4",
            data=scaler.transform(truth),
        ),  # fmt: skip
        "diffusion_samples": viz.plot_samples(samples["ode_dopri5"], truth),
    }
    return Diffusion(numbers, figures, model, scaler)


def _one_jump(model: ScoreModel, z0: torch.Tensor, standardised: GaussianMixture, generator) -> dict:
    """Where one denoising jump ``E[x_0 | x_t]`` from the noised data lands, at ``t = 0.4`` and 1:
    the share of points farther than 3 component standard deviations from both modes (between
    them), and the mean distance from the data's mean (standardised units)."""
    modes = standardised.means.to(z0)
    spread = float(standardised.covs[0].diagonal().sqrt().max())
    out = {}
    for t in (0.4, 1.0):
        scale, std = (float(v) for v in model.sde.marginal(t))
        noisy = scale * z0 + std * torch.randn(z0.shape, generator=generator, dtype=z0.dtype)
        with torch.no_grad():
            jumped = model.denoise(noisy, t)
        between = torch.cdist(jumped, modes).min(1).values > 3 * spread
        out[f"{t:g}"] = {
            "between": float(between.double().mean()),
            "to_mean": float((jumped - z0.mean(0)).norm(dim=1).mean()),
            "noisy_to_mean": float((noisy - z0.mean(0)).norm(dim=1).mean()),
        }
    out["component_std"] = spread
    out["mode_distance"] = float(torch.linalg.norm(modes[0] - modes[1]))
    return out


def likelihood(
    mixture: GaussianMixture, model: ScoreModel, scaler: Standardizer, budget: Budget, streams: Streams
) -> Section:
    """7. The exact log-likelihood of ``model`` (trained on data standardised by ``scaler``) by the
    probability-flow ODE on fresh samples, against the mixture's exact log-density at the same
    points and the closed form of ``E_p[log p]``; and the error taken apart: the same computation
    with the exact score (what the solver, the small time ``eps`` and the prior contribute), the
    learned model at a tighter solver tolerance, and Hutchinson's estimate in place of the exact
    divergence."""
    b = budget
    sde = model.sde
    x = mixture.sample(b.n_test, generator=streams.generator(70))
    z = scaler.transform(x)
    start = time.perf_counter()
    logp_z, info = log_likelihood(model, sde, z, eps=VP_EPS)
    wall = time.perf_counter() - start
    logp = logp_z.double() + scaler.log_det
    exact = mixture.to(torch.float64).log_prob(x.double())
    diff = logp - exact
    error, error_stderr = _mean_and_stderr(diff)
    standardised = standardised_mixture(mixture.to(torch.float64), scaler)
    exact_score = viz.exact_time_score(standardised, sde)
    pipeline_z, _ = log_likelihood(exact_score, sde, z.double(), eps=VP_EPS)
    pipeline, pipeline_stderr = _mean_and_stderr(pipeline_z + scaler.log_det.double() - exact)
    n = b.n_solver_check
    tight_z, tight_info = log_likelihood(model, sde, z[:n], eps=VP_EPS, rtol=1e-7, atol=1e-7)
    solver = (logp_z[:n].double() - tight_z.double()).abs()
    hutchinson_z, _ = log_likelihood(model, sde, z, divergence="hutchinson", eps=VP_EPS,
                                     generator=streams.generator(71))  # fmt: skip
    hutch, hutch_stderr = _mean_and_stderr(hutchinson_z.double() - logp_z.double())
    numbers = {
        "model_nats": float(logp.mean()),
        "exact_on_test_nats": float(exact.mean()),
        "closed_form_nats": _expected_log_prob_separated(mixture),
        "error_nats": error,
        "error_stderr": error_stderr,
        "mean_abs_error_nats": float(diff.abs().mean()),
        "pipeline_error_nats": pipeline,
        "pipeline_error_stderr": pipeline_stderr,
        "solver_max_abs_nats": float(solver.max()),
        "solver_mean_abs_nats": float(solver.mean()),
        "solver_points": n,
        "solver_tight_nfe": tight_info["nfe"],
        "hutchinson_minus_exact_nats": hutch,
        "hutchinson_minus_exact_stderr": hutch_stderr,
        "hutchinson_spread_nats": float((hutchinson_z.double() - logp_z.double()).std()),
        "nfe": info["nfe"],
        "wall_s": wall,
        "n_test": b.n_test,
        "std_eps": float(sde.marginal(VP_EPS)[1]),
    }
    return Section(numbers, {})


def moons(budget: Budget, streams: Streams) -> Section:
    """8. The diffusion of the diffusion section on moons, checked by what its pictures show: the
    held-out log-likelihood against a kernel density estimate with a cross-validated bandwidth, a
    classifier two-sample test against held-out data (and, for scale, of held-out data against more
    data), the share of samples off the arcs and at the arcs' inner tips; the samples and the
    learned density on a grid under the learned score."""
    b = budget
    data = datasets.moons(b.n_train, generator=streams.generator(80), noise=MOONS_NOISE)
    model, scaler, wall = train_vp(data, b.moons_steps, b, streams, 81)
    heldout = datasets.moons(b.n_samples, generator=streams.generator(82), noise=MOONS_NOISE)
    more = datasets.moons(b.n_samples, generator=streams.generator(84), noise=MOONS_NOISE)
    x_T = model.sde.prior_sample((b.n_samples, 2), generator=streams.generator(83))
    samples = scaler.inverse_transform(sample_ode(model, model.sde, x_T)[0])
    sample_mmd, sample_stderr = mmd(samples, heldout, return_stderr=True)
    density = LearnedDensity(model, scaler)
    start = time.perf_counter()
    test = heldout[: b.n_test]
    test_logp = density.log_prob(test)
    loglik, loglik_stderr = _mean_and_stderr(test_logp)
    density_figure = viz.plot_score_field(
        density, extent=MOONS_EXTENT, grid=18, data=data[:300], density_grid=b.density_grid
    )
    density_figure.axes[0].set_title(f"learned density and score, t = {VP_EPS:g}", fontsize="medium")
    density_figure.set_size_inches(4.6, 3.6)
    density_s = time.perf_counter() - start
    start = time.perf_counter()
    kde = kde_log_likelihood(data, test, b.kde_points, streams.seed)
    c2st = classifier_two_sample_test(samples, heldout, streams.seed)
    reference = classifier_two_sample_test(more, heldout, streams.seed)
    off = distance_to_arcs(samples) > OFF_ARC
    off_data = distance_to_arcs(heldout) > OFF_ARC
    checks_s = time.perf_counter() - start
    numbers = {
        "train_s": wall,
        "steps": b.moons_steps,
        "mmd": sample_mmd,
        "mmd_stderr": sample_stderr,
        "test_log_likelihood_nats": loglik,
        "test_log_likelihood_stderr": loglik_stderr,
        "kde": kde,
        "c2st": c2st,
        "c2st_reference": reference,
        "off_arc_threshold": OFF_ARC,
        "off_arc_samples": float(off.double().mean()),
        "off_arc_heldout": float(off_data.double().mean()),
        "inner_tips_samples": near_inner_tips(samples),
        "inner_tips_heldout": near_inner_tips(heldout),
        "density_s": density_s,
        "checks_s": checks_s,
        "n_test": int(test.shape[0]),
    }
    shown = viz.plot_samples(samples, heldout)
    ax = shown.axes[1]
    if off.any():
        ax.scatter(*samples[off].T, s=22, facecolors="none", edgecolors="k", linewidths=0.8,
                   label=f"off the arcs (> {OFF_ARC:g})")  # fmt: skip
        ax.legend(loc="upper right", fontsize="x-small")
    shown.axes[0].set_title(f"held-out data ({len(heldout)})")
    figures = {"moons_samples": shown, "moons_density": density_figure}
    return Section(numbers, figures)
