"""Sections 5 to 8, on models that denoise: a noise-conditional score network, diffusion as
stacked denoisers, the likelihood of the diffusion model, and the same diffusion on moons (what each
computes: the package docstring, ``scorefield.demo.sections``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ... import datasets, losses, noise, viz
from ...distributions import GaussianMixture
from ...likelihood import log_likelihood
from ...metrics import fisher_divergence, mmd
from ...ode import counted
from ...samplers import PREDICTORS, sample_ode, sample_pc
from ...scalers import Standardizer
from ...score import NoiseConditionalScore, ScoreModel
from ...sde import VESDE
from ..experiments import (
    classifier_two_sample_test,
    distance_to_arcs,
    kde_log_likelihood,
    line_mixture,
    near_inner_tips,
    run_naive_vs_annealed,
    standardized_mixture,
)
from ..models import LearnedDensity, fit_model, mlp, train_vp
from ..settings import (
    DENOISING_TIMES,
    EXTENT,
    MOONS_EXTENT,
    MOONS_NOISE,
    SHOWN_LEVELS,
    VP_EPS,
    Budget,
    Streams,
)
from .common import DIAGONAL, Diffusion, Section, mean_and_stderr, mode_shares, uniform_grid

__all__ = ["diffusion", "likelihood", "moons", "ncsn"]

OFF_ARC = 3 * MOONS_NOISE  # a moons point farther than this from both arcs is "off the arcs"


def _expected_log_prob_separated(mixture: GaussianMixture) -> float:
    """``E_p[log p]`` of a mixture whose components do not overlap: ``Σ_k w_k (log w_k - ½ log det(2πe Σ_k))``.

    Exact up to the overlap of the components, which for ``two_gaussians()`` (modes 14 standard
    deviations apart) is far below float precision.
    """
    d = mixture.dim
    logdet = torch.logdet(mixture.covs.double())
    w = mixture.weights.double()
    return float((w * (w.log() - 0.5 * (d * math.log(2 * math.pi * math.e) + logdet))).sum())


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
    plane = uniform_grid(EXTENT, 60)
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
        "naive": mode_shares(naive, mixture),
        "annealed": mode_shares(annealed, mixture),
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
    x_init = -8.0 + 16.0 * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.annealed_langevin_animation(
        model, x_init, out / "annealed_langevin.gif", sigmas, step_size=numbers["step_lr"],
        n_steps_each=b.n_steps_each, n_frames=b.gif_frames, background_at=mixture.smooth,
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
                x, _ = sample_pc(score_fn, sde, x_T, budget.pc_steps, predictor=predictor,
                                 corrector=corrector, generator=generator)  # fmt: skip
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
    x, info = sample_ode(score_fn, sde, x_T, n_steps, method=method)
    return x, info["nfe"]


FORWARD_SIGMA_MAX = 5.0  # the VE SDE's largest noise in the figure of forward paths (standardised units)
FORWARD_PATHS = 8


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
        numbers["samplers"][key] = mode_shares(x, mixture) | {
            "label": label,
            "nfe": calls[0] if nfe is None else nfe,
            "wall_s": time.perf_counter() - start,
            "mmd": value,
            "mmd_stderr": stderr,
        }
        samples[key] = x
    numbers["weight_stderr"] = math.sqrt(0.8 * 0.2 / b.n_samples)
    standardised = standardized_mixture(mixture.to(torch.float64), scaler)
    line = line_mixture(mixture.to(torch.float64), DIAGONAL)
    scale = [float(sde.marginal(t)[0]) for t in (0.25, 0.5, 0.75)]  # m(t): how far the data have shrunk
    numbers["line"] = {
        "means": line.means[:, 0].tolist(),
        "std": float(line.covs[0, 0, 0].sqrt()),
        "scale": scale,
    }
    ve = VESDE(sigma_min=0.01, sigma_max=FORWARD_SIGMA_MAX)  # the ladder's limit, beside the VP SDE
    numbers["forward"] = {"sigma_min": ve.sigma_min, "sigma_max": ve.sigma_max, "paths": FORWARD_PATHS}
    starts = line.sample(FORWARD_PATHS, generator=streams.generator(68))[:, 0]
    forward = viz.plot_forward_paths(
        starts, {"VE SDE: x_t = x_0 + std(t) z": ve, "VP SDE: x_t = m(t) x_0 + std(t) z": sde},
        generator=streams.generator(69),
    )  # fmt: skip
    m1, std1 = (float(v) for v in sde.marginal(1.0))
    numbers["m1"], numbers["std1"] = m1, std1
    numbers["jumps"] = _one_jump(model, scaler.transform(data[:400]), standardised, streams.generator(67))
    shown_data = scaler.transform(truth[: b.gif_particles])
    figures: dict[str, Figure | Path] = {
        "forward_paths": forward,
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
    error, error_stderr = mean_and_stderr(diff)
    standardised = standardized_mixture(mixture.to(torch.float64), scaler)
    exact_score = viz.exact_time_score(standardised, sde)
    pipeline_z, _ = log_likelihood(exact_score, sde, z.double(), eps=VP_EPS)
    pipeline, pipeline_stderr = mean_and_stderr(pipeline_z + scaler.log_det.double() - exact)
    n = b.n_solver_check
    tight_z, tight_info = log_likelihood(model, sde, z[:n], eps=VP_EPS, rtol=1e-7, atol=1e-7)
    solver = (logp_z[:n].double() - tight_z.double()).abs()
    hutchinson_z, _ = log_likelihood(model, sde, z, divergence="hutchinson", eps=VP_EPS,
                                     generator=streams.generator(71))  # fmt: skip
    hutch, hutch_stderr = mean_and_stderr(hutchinson_z.double() - logp_z.double())
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
    loglik, loglik_stderr = mean_and_stderr(test_logp)
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
