"""6. Diffusion as stacked denoisers: a VP score model trained by continuous-time denoising score
matching, the forward and reverse SDEs, the chain of denoisers, and every predictor-corrector sampler
and the probability-flow ODE from the same prior draws."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import viz
from ...distributions import GaussianMixture
from ...metrics import mmd
from ...ode import counted
from ...samplers import PREDICTORS, sample_ode, sample_pc
from ...score import ScoreModel
from ...sde import VESDE
from ..document import Page
from ..experiments import line_mixture, standardized_mixture
from ..models import train_vp
from ..settings import DENOISING_TIMES, VP_T_MIN, Budget, Streams
from .common import DIAGONAL, Figures, ModeShares, Trained, doc, m, mode_shares, percent, weights_text

__all__ = [
    "ANCHOR",
    "OPENING",
    "TITLE",
    "DiffusionNumbers",
    "Forward",
    "Jump",
    "Jumps",
    "Line",
    "SamplerResult",
    "compute",
    "write",
]

ANCHOR, TITLE = "diffusion", "Diffusion as stacked denoisers"
OPENING = (
    "So we stack many denoising score matching models on top of each other. Each model is trained to "
    "denoise the output of the previous model. [...] By taking a sample from a gaussian distribution "
    "(right) and passing it through each denoiser.",
    "Score functions, denoising and diffusion, Diffusion",
)


@dataclass(frozen=True)
class SamplerResult(ModeShares):
    """One sampler's mode weights and their error, its label, network evaluations and wall time, and
    the MMD² of its samples to exact samples."""

    label: str
    nfe: int
    wall_s: float
    mmd: float
    mmd_stderr: float


@dataclass(frozen=True)
class Line:
    """The mixture on the line through its modes, standardised: its means and standard deviation, and
    the VP SDE's scale ``m(t)`` at ``t = 0.25, 0.5, 0.75``."""

    means: list[float]
    std: float
    scale: list[float]


@dataclass(frozen=True)
class Forward:
    """The VE SDE of the forward-paths figure and how many paths it draws."""

    sigma_min: float
    sigma_max: float
    paths: int


@dataclass(frozen=True)
class Jump:
    """One denoising jump from the noised data: the share that lands between the modes, and the mean
    distance from the data's mean after the jump and before it."""

    between: float
    to_mean: float
    noisy_to_mean: float


@dataclass(frozen=True)
class Jumps:
    """One denoising jump at each time (``by_time``, keyed by the time), with the components' standard
    deviation and the distance between the modes (standardised units)."""

    by_time: dict[str, Jump]
    component_std: float
    mode_distance: float


@dataclass(frozen=True)
class DiffusionNumbers:
    """Training (time, steps), every sampler, the binomial standard error of a mode weight, the mixture
    on the line, the forward paths, ``m(1)`` and ``std(1)``, and the denoising jumps."""

    train_s: float
    steps: int
    samplers: dict[str, SamplerResult]
    weight_stderr: float
    line: Line
    forward: Forward
    m1: float
    std1: float
    jumps: Jumps


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


def compute(
    mixture: GaussianMixture, data: torch.Tensor, budget: Budget, streams: Streams, out: Path
) -> Trained[DiffusionNumbers]:
    """6. A VP score model trained on ``data`` by continuous-time DSM, then every sampler from the
    same prior draws: mode weights, MMD² to exact samples, NFE and time per sampler; figures of a
    1-D density over time with exact reverse-SDE and ODE paths, the chain of denoisers, the reverse
    SDE over the exact ``p_t`` (``out/reverse_sde.gif``), the ODE's paths and its samples."""
    b = budget
    model, scaler, wall = train_vp(data, b.vp_steps, b, streams, 60)
    sde = model.sde
    x_T = sde.prior_sample((b.n_samples, 2), generator=streams.generator(61))
    truth = mixture.sample(b.n_samples, generator=streams.generator(62))
    results, samples = {}, {}
    for key, (label, run) in _samplers(b).items():
        score_fn, calls = counted(model)
        start = time.perf_counter()
        z, nfe = run(score_fn, sde, x_T, streams.generator(63))
        x = scaler.inverse_transform(z)
        value, stderr = mmd(x, truth, return_stderr=True)
        shares = mode_shares(x, mixture)
        results[key] = SamplerResult(
            weights=shares.weights,
            error=shares.error,
            label=label,
            nfe=calls[0] if nfe is None else nfe,
            wall_s=time.perf_counter() - start,
            mmd=value,
            mmd_stderr=stderr,
        )
        samples[key] = x
    standardised = standardized_mixture(mixture.to(torch.float64), scaler)
    line = line_mixture(mixture.to(torch.float64), DIAGONAL)
    scale = [float(sde.marginal(t)[0]) for t in (0.25, 0.5, 0.75)]  # m(t): how far the data have shrunk
    ve = VESDE(sigma_min=0.01, sigma_max=FORWARD_SIGMA_MAX)  # the ladder's limit, beside the VP SDE
    starts = line.sample(FORWARD_PATHS, generator=streams.generator(68))[:, 0]
    forward = viz.plot_forward_paths(
        starts, {"VE SDE: x_t = x_0 + std(t) z": ve, "VP SDE: x_t = m(t) x_0 + std(t) z": sde},
        generator=streams.generator(69),
    )  # fmt: skip
    m1, std1 = (float(v) for v in sde.marginal(1.0))
    numbers = DiffusionNumbers(
        train_s=wall,
        steps=b.vp_steps,
        samplers=results,
        weight_stderr=math.sqrt(0.8 * 0.2 / b.n_samples),
        line=Line(means=line.means[:, 0].tolist(), std=float(line.covs[0, 0, 0].sqrt()), scale=scale),
        forward=Forward(sigma_min=ve.sigma_min, sigma_max=ve.sigma_max, paths=FORWARD_PATHS),
        m1=m1,
        std1=std1,
        jumps=_one_jump(model, scaler.transform(data[:400]), standardised, streams.generator(67)),
    )
    shown_data = scaler.transform(truth[: b.gif_particles])
    figures: Figures = {
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
            background_at=lambda t: standardised.diffuse(sde, max(t, VP_T_MIN)),
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
    return Trained(numbers, figures, model, scaler)


def _one_jump(model: ScoreModel, z0: torch.Tensor, standardised: GaussianMixture, generator) -> Jumps:
    """Where one denoising jump ``E[x_0 | x_t]`` from the noised data lands, at ``t = 0.4`` and 1:
    the share of points farther than 3 component standard deviations from both modes (between
    them), and the mean distance from the data's mean (standardised units)."""
    modes = standardised.means.to(z0)
    spread = float(standardised.covs[0].diagonal().sqrt().max())
    by_time = {}
    for t in (0.4, 1.0):
        scale, std = (float(v) for v in model.sde.marginal(t))
        noisy = scale * z0 + std * torch.randn(z0.shape, generator=generator, dtype=z0.dtype)
        with torch.no_grad():
            jumped = model.denoise(noisy, t)
        between = torch.cdist(jumped, modes).min(1).values > 3 * spread
        by_time[f"{t:g}"] = Jump(
            between=float(between.double().mean()),
            to_mean=float((jumped - z0.mean(0)).norm(dim=1).mean()),
            noisy_to_mean=float((noisy - z0.mean(0)).norm(dim=1).mean()),
        )
    return Jumps(by_time, component_std=spread, mode_distance=float(torch.linalg.norm(modes[0] - modes[1])))


def write(page: Page, df: DiffusionNumbers, budget: Budget) -> None:
    b = budget
    page.para(
        "Letting the number of levels go to infinity turns the ladder into a stochastic differential "
        "equation that adds noise continuously, from the data at t = 0 to pure noise at t = 1 (Song et al. "
        "2021; "
        + doc("sdes")
        + "). The ladder's own limit is the variance-exploding (VE) SDE "
        + m(r"dx = g(t)\, dW_t")
        + ", whose noise std(t) = σ<sub>min</sub> (σ<sub>max</sub>/σ<sub>min</sub>)<sup>t</sup> runs through "
        "the levels continuously: x itself is never scaled, and the noise grows until it swamps the data, "
        "so σ<sub>max</sub> must exceed the data's spread. The variance-preserving (VP) SDE instead shrinks x "
        "by a factor m(t) while it adds noise, so that m(t)² + std(t)² = 1: for standardised data the "
        "variance stays 1 at every time, every path ends in N(0, I) whatever the data's scale, and the "
        "network sees inputs of one size throughout. This page uses the VP SDE:"
    )
    page.equation(
        r"dx = f(x, t)\, dt + g(t)\, dW_t, \qquad f(x, t) = -\tfrac12 \beta(t)\, x, \quad g(t) = \sqrt{\beta(t)}, "
        r"\quad \beta(t) = 0.1 + 19.9\, t"
    )
    page.equation(
        r"x_t = m(t)\, x_0 + \operatorname{std}(t)\, z, \qquad m(t) = \exp\Big(-\tfrac12 \int_0^t \beta(s)\, ds\Big), "
        r"\quad \operatorname{std}(t)^2 = 1 - m(t)^2",
        f"So m(1) = {df.m1:.4f} and std(1) = {df.std1:.4f}: at t = 1 the data are forgotten.",
    )
    fw = df.forward
    page.figure(
        "forward_paths",
        f"Forward paths from the same {fw.paths} points of the mixture (its line through the modes, "
        "standardised) with the same Brownian increments, under the VE SDE (left; σ<sub>min</sub> = "
        f"{fw.sigma_min:g}, σ<sub>max</sub> = {fw.sigma_max:g}) and the VP SDE (right). Shaded: the "
        "exact band m(t) x<sub>0</sub> ± 2 std(t) of the outermost starting points. Under VE the points stay "
        "where they are while the noise explodes, and the two modes blur only when std(t) reaches their "
        "distance; under VP they are pulled towards 0 while the noise grows to 1, and all end in N(0, 1).",
        "forward SDE paths under the VE and the VP SDE",
    )
    page.para("Run backwards, the same marginals are generated by a reverse SDE, or by an ODE without noise:")
    page.equation(
        r"dx = \big[f(x, t) - g(t)^2\, \nabla_x \log p_t(x)\big]\, dt + g(t)\, d\bar W_t \quad (t: 1 \to 0), "
        r"\qquad \frac{dx}{dt} = f(x, t) - \tfrac12 g(t)^2\, \nabla_x \log p_t(x)"
    )
    line = df.line
    page.figure(
        "diffusion_1d",
        "A density over time, in one dimension: the tutorials' mixture along the line through its modes, "
        f"standardised (modes at {line.means[0]:.2f} and {line.means[1]:.2f}, standard deviation "
        f"{line.std:.3f}), diffused by the VP SDE: p<sub>t</sub>(x) exactly, scaled at each t to its "
        "maximum. The VP SDE shrinks the data by m(t) = "
        f"{line.scale[0]:.2f}, {line.scale[1]:.2f} and {line.scale[2]:.3f} at t = 0.25, 0.5 "
        "and 0.75 while it adds noise: by t = 0.5 the two modes have merged, and after "
        "t = 0.75 the density is all but the prior. Paths from the same "
        "prior draws with the exact score: the reverse SDE's (left) jitter and cross, the probability-flow "
        "ODE's (right) are smooth and never cross; both end distributed as the data, most in the heavy mode.",
        "one-dimensional density over time with reverse-SDE and probability-flow paths",
    )
    page.para(
        "One network " + m(r"s_\theta(x, t)") + f" is trained on standardised data by continuous-time "
        f"denoising score matching ({b.vp_steps} steps, {df.train_s:.1f} s; "
        + doc("continuous-time-denoising-score-matching")
        + "), preconditioned as a denoiser ("
        + doc("score-parameterisations")
        + "). By Tweedie's formula "
        "a score is a denoiser at every t, and back (" + doc("denoisers-and-tweedies-formula") + "):"
    )
    page.equation(
        r"J(\theta) = \mathbb{E}_{t \sim \mathcal{U}(\varepsilon, 1)}\, \mathbb{E}_{x_0, z}\, \tfrac12 "
        r"\big\|\operatorname{std}(t)\, s_\theta(x_t, t) + z\big\|^2"
    )
    page.equation(
        r"D(x_t) = \mathbb{E}[x_0 \mid x_t] = \frac{x_t + \operatorname{std}(t)^2\, \nabla \log p_t(x_t)}{m(t)} "
        r"\quad \iff \quad \nabla \log p_t(x_t) = \frac{m(t)\, D(x_t) - x_t}{\operatorname{std}(t)^2}",
        "The diffusion tutorial writes s = (x̂ − D)/σ²: that is minus the score.",
    )
    j4, j1 = df.jumps.by_time["0.4"], df.jumps.by_time["1"]
    times = ", ".join(f"{t:g}" for t in DENOISING_TIMES)
    page.figure(
        "denoising_chain",
        "Stacked denoisers as a chain (the diffusion tutorial's figure of denoising models between "
        "neighbouring noise levels), in standardised units, every panel on one window; rows are the times "
        f"t = {times}, the noise growing downwards. Left: the data noised to t; at t = 1 the noised points are "
        "N(0, I) noise, the data forgotten. Middle: one denoising jump to E[x<sub>0</sub> | x<sub>t</sub>]. At "
        "small t it puts each point back on its mode; at t = 0.4 a noisy point could have come from either "
        f"mode and the posterior mean blends them: {percent(j4.between, 0)} of the jumps land between the modes "
        "(more than 3 standard deviations from both); at t = 1 they collapse towards the data's mean (cross), "
        f"{j1.to_mean:.2f} from it on average against {j1.noisy_to_mean:.2f} for the noised points. One "
        "big jump from noise cannot give a sample. Right: the reverse chain, prior draws carried down by "
        f"{b.pc_steps} small steps, each a denoising step plus fresh noise (the reverse SDE): at every t its "
        "particles should be spread like the noised data on the left, as they are when the score is right. "
        "Reading the right column upwards is sampling.",
        "data noised to five times, one denoising jump from each, and the reverse chain at the same times",
    )
    page.para(
        f"Every sampler starts from the same {b.n_samples} prior draws: the predictor-corrector (PC) samplers "
        "discretise the reverse SDE (" + doc("reverse-sde-predictors") + "), with or without a Langevin "
        "corrector step at each time (" + doc("langevin-corrector") + "); the ODE samplers integrate the "
        "probability flow ("
        + doc("probability-flow-ode")
        + "). The mode-weight error is the total-variation "
        "distance between the measured and the true mode weights (binomial standard error "
        f"&asymp; {df.weight_stderr:.3f}); MMD² compares the samples with fresh exact samples; NFE counts "
        "evaluations of the network."
    )
    page.table(
        ["sampler", "mode weights", "mode-weight error (TV)", "MMD²", "± s.e.", "NFE", "time (s)"],
        [
            [
                v.label,
                weights_text(v.weights),
                v.error,
                v.mmd,
                v.mmd_stderr,
                v.nfe,
                v.wall_s,
            ]
            for v in df.samplers.values()
        ],
    )
    page.figure(
        "reverse_sde",
        f"The reverse SDE (reverse-diffusion predictor and Langevin corrector, {b.pc_steps} steps) carries "
        f"{b.gif_particles} prior draws to the standardised data (grey). The background of each frame is the "
        "exact p<sub>t</sub> at its time; the frames crowd towards t = 0, where the two modes form.",
        "animation: the reverse SDE over the exact diffused density",
    )
    rk4 = df.samplers["ode_rk4"]
    page.figure(
        "ode_trajectories",
        f"The probability-flow ODE (rk4, {b.ode_steps} steps) carries {b.n_trajectories} prior points (crosses) "
        "to samples (red), in standardised coordinates: deterministic paths that bend towards the modes late, "
        f"when the noise is small. Of the sampler's {b.n_samples} samples, {percent(rk4.weights[0], 0)} reach "
        "the heavy mode.",
        "probability-flow ODE paths from prior points to samples",
    )
    dopri = df.samplers["ode_dopri5"]
    page.figure(
        "diffusion_samples",
        "Exact samples of the mixture (left) and samples of the learned model through the probability-flow "
        f"ODE (dopri5; right), in data units: mode weights {weights_text(dopri.weights)}, MMD² {dopri.mmd:.2g} "
        f"&plusmn; {dopri.mmd_stderr:.2g}.",
        "exact samples beside the model's samples",
    )
