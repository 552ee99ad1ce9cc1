"""The demo's seven sections as computations: each takes what it needs as arguments (the mixture,
the training data, the budget, the random streams, the folder for its animations) and returns a
``Section``: its numbers (its part of ``results.json``) and its figures (drawn with
``scorefield.viz``, not yet saved). Nothing here writes HTML; ``page.py`` turns the results into
the page. Section 6 evaluates the model that section 5 trained, which ``Diffusion`` carries.

1. ``score``: the exact score field of the tutorials' mixture;
2. ``score_matching``: one MLP trained with every objective, scored by the relative Fisher
   divergence to the exact score;
3. ``langevin``: Langevin dynamics with the exact score, naive against annealed;
4. ``ncsn``: a noise-conditional score network sampled by annealed Langevin;
5. ``diffusion``: a VP SDE, sampled by every predictor-corrector combination and the ODE;
6. ``likelihood``: the ODE's exact log-likelihood against the mixture's;
7. ``moons``: the same diffusion on moons, its samples and its learned density.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .. import datasets, losses, noise, viz
from ..distributions import GaussianMixture
from ..likelihood import log_likelihood
from ..metrics import fisher_divergence, mmd, mode_weights
from ..ode import counted
from ..samplers import PREDICTORS, sample_ode, sample_pc
from ..scalers import Standardizer
from ..score import NoiseConditionalScore, ScoreModel
from .experiments import run_naive_vs_annealed
from .models import LearnedDensity, fit_model, mlp, train_vp
from .settings import DENOISING_TIMES, DSM_SIGMA, EXTENT, MOONS_EXTENT, VP_EPS, Budget, Streams

__all__ = [
    "SHOWN",
    "Diffusion",
    "Section",
    "diffusion",
    "langevin",
    "likelihood",
    "moons",
    "ncsn",
    "score",
    "score_matching",
]

SHOWN = "ism_exact"  # the score-matching objective whose learned field section 2 draws


@dataclass(frozen=True)
class Section:
    """What a section computed: ``numbers``, its part of ``results.json``, and ``figures`` by file
    name (without suffix): a matplotlib ``Figure`` to save as PNG, or the path of a GIF written."""

    numbers: dict
    figures: dict[str, Figure | Path]


@dataclass(frozen=True)
class Diffusion(Section):
    """Section 5's result, with the VP score model it trained and the scaler of its data."""

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


# --------------------------------------------------------------------------------------------------
# the sections


def score(mixture: GaussianMixture) -> Section:
    """1. The exact score of the mixture: its field, its divergence, and one Gaussian's score line."""
    figures = {
        "score_field": viz.plot_score_field(mixture, extent=EXTENT),
        "score_divergence": viz.plot_score_divergence(mixture, extent=EXTENT, grid=40, arrows=15),
        "gaussian_score": viz.plot_gaussian_score_line(),
    }
    return Section({"true_weights": mixture.weights.tolist()}, figures)


def _score_matching_objectives(mixture: GaussianMixture) -> dict[str, Callable]:
    """``name -> (net, batch, generator) -> [B]`` for each objective; dsm trains at DSM_SIGMA."""
    return {
        "esm": lambda net, x, g: losses.esm(net, x, mixture.score),
        "ism_exact": lambda net, x, g: losses.ism(net, x, trace="exact"),
        "ism_hutchinson": lambda net, x, g: losses.ism(net, x, trace="hutchinson", generator=g),
        "ssm": lambda net, x, g: losses.ssm(net, x, generator=g),
        "dsm": lambda net, x, g: losses.dsm(lambda y, sigma: net(y), x, DSM_SIGMA, generator=g),
    }


def score_matching(mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams) -> Section:
    """2. One MLP (the same initial weights) trained on ``data`` with every objective; per objective
    the relative Fisher divergence to the exact score under p and uniformly over the window (dsm:
    to the score of the smoothed mixture), and the ``SHOWN`` objective's field and error."""
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
    figures = {
        "learned_score_field": viz.plot_score_field(mixture, learned_score=nets[SHOWN], extent=EXTENT),
        "score_error": viz.plot_score_error(mixture, nets[SHOWN], extent=EXTENT, data=data[:500]),
    }
    return Section(results, figures)


def langevin(mixture: GaussianMixture, budget: Budget, streams: Streams, out: Path) -> Section:
    """3. Langevin dynamics with the exact score: an animation from a uniform square (``out/langevin.gif``),
    and naive against annealed Langevin, their mode weights and the samples."""
    b = budget
    lo, hi = -8.0, 8.0
    g = streams.generator(40)
    x0 = lo + (hi - lo) * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.langevin_animation(
        mixture.score, x0, out / "langevin.gif", step_size=0.05, n_steps=b.gif_steps,
        n_frames=b.gif_frames, background=mixture, extent=EXTENT, generator=g,
    )  # fmt: skip
    start = time.perf_counter()
    _, naive, annealed = run_naive_vs_annealed(
        mixture, n=b.n_samples, n_steps=b.langevin_steps, n_steps_each=b.n_steps_each,
        generator=streams.generator(41),
    )  # fmt: skip
    wall = time.perf_counter() - start
    numbers = {"naive": _modes(naive, mixture), "annealed": _modes(annealed, mixture), "wall_s": wall}
    figures = {
        "langevin": gif,
        "naive_vs_annealed": viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT),
    }
    return Section(numbers, figures)


def ncsn(
    mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams, out: Path
) -> Section:
    """4. A noise-conditional score network on a geometric ladder from the largest distance between
    two training points down to 0.1, driving naive and annealed Langevin (mode weights, MMD² to exact
    samples), and an animation of annealed Langevin (``out/annealed_langevin.gif``)."""
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
    numbers = {
        "sigma_max": sigma_max,
        "sigma_min": sigma_min,
        "n_levels": n_levels,
        "train_s": wall,
        "sample_s": sample_s,
        "naive": _modes(naive, mixture),
        "annealed": _modes(annealed, mixture),
    }
    for name, x in (("naive", naive), ("annealed", annealed)):
        value, stderr = mmd(x, truth, return_stderr=True)
        numbers[name] |= {"mmd": value, "mmd_stderr": stderr}
    samples = viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT)
    g = streams.generator(54)
    x0 = -8.0 + 16.0 * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.annealed_langevin_animation(
        model, x0, out / "annealed_langevin.gif", sigmas, step_lr=0.1 * sigma_min**2,
        n_steps_each=max(1, b.gif_steps // n_levels), n_frames=b.gif_frames, background=mixture, extent=EXTENT,
        generator=g,
    )  # fmt: skip
    return Section(numbers, {"ncsn_samples": samples, "annealed_langevin": gif})


def _samplers(budget: Budget) -> dict[str, tuple[str, Callable]]:
    """``key -> (label, run(score_fn, sde, x_T, generator) -> (x, nfe or None))`` for every sampler compared."""
    table: dict[str, tuple[str, Callable]] = {}
    for predictor in PREDICTORS:
        for corrector in (None, "langevin"):
            key = predictor if corrector is None else f"{predictor}+{corrector}"
            label = (
                f"PC: {predictor}"
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
    """5. A VP score model trained on ``data`` by continuous-time DSM, then every sampler from the
    same prior draws: mode weights, MMD² to exact samples, NFE and time per sampler; figures of its
    denoising, the reverse SDE (``out/reverse_sde.gif``), the ODE's paths and its samples."""
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
    figures: dict[str, Figure | Path] = {
        "denoising_strip": viz.plot_denoising_strip(
            scaler.transform(data[:400]),
            DENOISING_TIMES,
            model.denoise,
            sde=sde,
            generator=streams.generator(64),
        ),
        "reverse_sde": viz.reverse_sde_animation(
            model,
            sde,
            x_T[: b.gif_particles],
            out / "reverse_sde.gif",
            n_steps=b.pc_steps,
            n_frames=b.gif_frames,
            extent=(-3.0, 3.0, -3.0, 3.0),
            generator=streams.generator(65),
        ),  # fmt: skip
        "ode_trajectories": viz.plot_ode_trajectories(
            model,
            sde,
            x_T[: b.n_trajectories],
            n_steps=b.ode_steps,
            method="rk4",
            data=scaler.transform(truth),
        ),
        "diffusion_samples": viz.plot_samples(samples["ode_dopri5"], truth),
    }
    return Diffusion(numbers, figures, model, scaler)


def likelihood(
    mixture: GaussianMixture, model: ScoreModel, scaler: Standardizer, budget: Budget, streams: Streams
) -> Section:
    """6. The exact log-likelihood of ``model`` (trained on data standardised by ``scaler``) by the
    probability-flow ODE on fresh samples, against the mixture's exact log-density at the same
    points and the closed form of ``E_p[log p]``."""
    b = budget
    x = mixture.sample(b.n_test, generator=streams.generator(70))
    start = time.perf_counter()
    logp_z, info = log_likelihood(model, model.sde, scaler.transform(x), eps=VP_EPS)
    wall = time.perf_counter() - start
    logp = logp_z.double() + scaler.log_det
    exact = mixture.to(torch.float64).log_prob(x.double())
    diff = logp - exact
    numbers = {
        "model_nats": float(logp.mean()),
        "exact_on_test_nats": float(exact.mean()),
        "closed_form_nats": _expected_log_prob_separated(mixture),
        "error_nats": float(diff.mean()),
        "error_stderr": float(diff.std() / math.sqrt(b.n_test)),
        "mean_abs_error_nats": float(diff.abs().mean()),
        "nfe": info["nfe"],
        "wall_s": wall,
        "n_test": b.n_test,
    }
    return Section(numbers, {})


def moons(budget: Budget, streams: Streams) -> Section:
    """7. The diffusion of section 5 on moons: MMD² of ODE samples to held-out data, the held-out
    log-likelihood, and the learned density on a grid under the learned score."""
    b = budget
    data = datasets.moons(b.n_train, generator=streams.generator(80))
    model, scaler, wall = train_vp(data, b.moons_steps, b, streams, 81)
    heldout = datasets.moons(b.n_samples, generator=streams.generator(82))
    x_T = model.sde.prior_sample((b.n_samples, 2), generator=streams.generator(83))
    samples = scaler.inverse_transform(sample_ode(model, model.sde, x_T)[0])
    sample_mmd, sample_stderr = mmd(samples, heldout, return_stderr=True)
    density = LearnedDensity(model, scaler)
    start = time.perf_counter()
    test_logp = density.log_prob(heldout[: b.n_test])
    density_figure = viz.plot_score_field(
        density, extent=MOONS_EXTENT, grid=18, data=data[:300], density_grid=b.density_grid
    )
    density_figure.axes[0].set_title("learned density and score (t = eps)")
    density_s = time.perf_counter() - start
    numbers = {
        "train_s": wall,
        "steps": b.moons_steps,
        "mmd": sample_mmd,
        "mmd_stderr": sample_stderr,
        "test_log_likelihood_nats": float(test_logp.mean()),
        "density_s": density_s,
    }
    figures = {"moons_samples": viz.plot_samples(samples, heldout), "moons_density": density_figure}
    return Section(numbers, figures)
