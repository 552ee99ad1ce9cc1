"""The demo: the tutorials' argument end to end, as one HTML page of figures and numbers.

``run_demo(out)`` retells the score-functions tutorial ("Score Functions") and the diffusion tutorial ("Score functions, denoising
and diffusion") on the tutorials' two-Gaussian mixture, whose exact score and density are known, and
then on moons:

1. the score of a mixture (the true field);
2. score matching with every objective (explicit, implicit exact / Hutchinson, sliced, denoising),
   scored by the relative Fisher divergence to the exact score;
3. Langevin dynamics with the exact score: an animation, and naive vs annealed mode weights;
4. a noise-conditional score network (NCSN) sampled by annealed Langevin;
5. diffusion (a VP SDE) as stacked denoisers, sampled by every predictor-corrector combination and
   by the probability-flow ODE;
6. the ODE's exact log-likelihood against the true ``E_p[log p]``;
7. the same diffusion on moons: samples and the learned density.

It writes ``out/report.html`` (one file: images embedded), the figures beside it (PNG, GIF) and
every number in ``out/results.json``. All randomness comes from generators seeded by ``seed``, and
the run uses one CPU thread, so two runs give the same numbers (the wall times aside).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import datasets, losses, noise, viz
from .checkpoint import atomic_write
from .distributions import GaussianMixture, two_gaussians
from .fit import Trainer, fit
from .likelihood import log_likelihood
from .metrics import fisher_divergence, mmd, mode_weights
from .nets.mlp import MLP
from .samplers import PREDICTORS, counted, sample_ode, sample_pc
from .scalers import Standardizer
from .score import NoiseConditionalScore, ScoreModel
from .sde import VPSDE
from .train import derive_seed
from .utils import make_generator

__all__ = ["FULL", "QUICK", "Budget", "run_demo"]

EXTENT = (-9.0, 9.0, -9.0, 9.0)  # the window holding both modes of two_gaussians() with 4 std to spare
MOONS_EXTENT = (-1.8, 1.8, -1.2, 1.2)
DSM_SIGMA = 0.1  # "small" against the components' unit standard deviation
VP_EPS = 1e-5  # the smallest time, for training and likelihoods (docs/math.md#evaluating-at-a-small-time)
DENOISING_TIMES = (0.02, 0.1, 0.2, 0.4, 1.0)


@dataclass(frozen=True)
class Budget:
    """How much work the demo does: steps, sample counts and grid sizes (``FULL``, ``QUICK``)."""

    n_train: int = 10_000  # training samples drawn once from each data distribution
    batch_size: int = 256
    hidden: int = 64  # MLP width; depth 2 for the unconditional nets, 3 for the conditional ones
    sm_steps: int = 1500  # training steps for each score-matching objective
    ncsn_steps: int = 3000
    vp_steps: int = 4000
    moons_steps: int = 4000
    n_eval: int = 4000  # points on which Fisher divergences are estimated
    n_samples: int = 1000  # samples per sampler (mode-weight standard error ~ 0.4/sqrt(n))
    langevin_steps: int = 500  # naive Langevin steps
    n_steps_each: int = 100  # annealed Langevin steps per level
    gif_particles: int = 300
    gif_steps: int = 300
    gif_frames: int = 40
    pc_steps: int = 200  # predictor steps of the reverse-SDE samplers
    ode_steps: int = 50  # steps of the fixed-step ODE method
    n_trajectories: int = 150
    n_test: int = 1000  # test points for the log-likelihood
    density_grid: int = 50  # moons: log-likelihood on a grid of this many points a side


FULL = Budget()
QUICK = Budget(
    n_train=4000,
    sm_steps=300,
    ncsn_steps=800,
    vp_steps=1000,
    moons_steps=1000,
    n_eval=2000,
    n_samples=500,
    langevin_steps=200,
    n_steps_each=30,
    gif_particles=150,
    gif_steps=150,
    gif_frames=12,
    pc_steps=60,
    ode_steps=20,
    n_trajectories=60,
    n_test=300,
    density_grid=24,
)


# --------------------------------------------------------------------------------------------------
# helpers


def _fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    data: torch.Tensor,
    steps: int,
    budget: Budget,
    generator: torch.Generator,
    lr: float = 3e-3,
) -> float:
    """Minimise ``loss_fn(batch, generator).mean()`` over random batches of ``data`` (Adam with cosine
    decay, which stands in for an average of the weights in runs this short); returns the wall time.

    The models here are tiny and live in memory, so the run-directory machinery of ``scorefield.train``
    (checkpoints, EMA, resumption) would cost more than the training itself: only the core step runs.
    """
    start = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps))

    def loss(step: int) -> torch.Tensor:
        batch = data[torch.randint(0, data.shape[0], (budget.batch_size,), generator=generator)]
        return loss_fn(batch, generator).mean()

    fit(trainer, loss, steps)
    model.eval().requires_grad_(False)
    return time.perf_counter() - start


def _mlp(seed: int, hidden: int, depth: int, cond: bool) -> MLP:
    """A fresh 2-D MLP whose initial weights (and Fourier frequencies) depend on ``seed`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(2, hidden=hidden, depth=depth, cond=cond)


def _weight_error(weights: torch.Tensor, truth: torch.Tensor) -> float:
    """Total-variation distance between mode-weight vectors, ``½ Σ_k |ŵ_k - w_k|`` (for two modes, ``|ŵ_1 - w_1|``)."""
    return float(0.5 * (weights.double() - truth.double()).abs().sum())


def _modes(x: torch.Tensor, mixture: GaussianMixture) -> dict:
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


class _LearnedDensity:
    """A VP score model trained on standardised data, seen in data units as a density (``viz``'s protocol):
    ``log_prob`` by the probability-flow ODE plus the scaler's log-determinant, ``score`` at ``t = eps``."""

    def __init__(self, model: ScoreModel, scaler: Standardizer):
        self.model, self.scaler = model, scaler

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.log_prob(lambda z: log_likelihood(self.model, self.model.sde, z, eps=VP_EPS)[0], x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.score(lambda z: self.model(z, VP_EPS), x)


def _uniform_grid(extent: tuple[float, float, float, float], n: int) -> torch.Tensor:
    """``n x n`` points evenly covering ``extent``: ``[n*n, 2]``."""
    xs = torch.linspace(extent[0], extent[1], n)
    ys = torch.linspace(extent[2], extent[3], n)
    return torch.cartesian_prod(xs, ys)


def _clean(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------
# the page


class _Page:
    """Collects the HTML of each section, and writes each figure beside the page as well."""

    def __init__(self, out: Path):
        self.out, self.parts = out, []

    def text(self, markup: str) -> None:
        self.parts.append(markup)

    def heading(self, title: str, anchor: str) -> None:
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{text}</p>")

    def quote(self, text: str, source: str) -> None:
        self.parts.append(f"<blockquote>{html.escape(text)}<cite>{html.escape(source)}</cite></blockquote>")

    def figure(self, fig, name: str, caption: str) -> None:
        path = self.out / f"{name}.png"
        fig.savefig(path, format="png", dpi=90)
        self._embed(path, "image/png", caption)

    def animation(self, path: Path, caption: str) -> None:
        self._embed(path, "image/gif", caption)

    def _embed(self, path: Path, mime: str, caption: str) -> None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.parts.append(
            f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(path.name)}">'
            f"<figcaption>{caption} <span class=file>({html.escape(path.name)})</span></figcaption></figure>"
        )

    def table(self, header: list[str], rows: list[list]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return html.escape(str(value))


def _weights(weights) -> str:
    return " / ".join(f"{w:.3f}" for w in weights)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
blockquote { margin: 1rem 0; padding: 0.3rem 1rem; border-left: 4px solid #9bb; color: #444;
             font-style: italic; }
blockquote cite { display: block; font-style: normal; font-size: 0.85em; color: #777; }
figure { margin: 1rem 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; } .file { color: #999; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f5f5; } td:not(:first-child) { font-variant-numeric: tabular-nums; }
.meta { color: #666; font-size: 0.9em; }
"""


# --------------------------------------------------------------------------------------------------
# the sections: each adds its part of the page and returns its numbers


@dataclass
class _Context:
    out: Path
    budget: Budget
    seed: int
    page: _Page
    mixture: GaussianMixture
    data: torch.Tensor  # training samples of the mixture
    vp: tuple[ScoreModel, Standardizer] | None = None  # section 5's model, evaluated by section 6

    def generator(self, purpose: int) -> torch.Generator:
        """An independent stream for each purpose, from the demo's seed."""
        return make_generator(derive_seed(self.seed, "demo", purpose))


def _section_score(ctx: _Context) -> dict:
    page, mixture = ctx.page, ctx.mixture
    page.heading("1. The score of a mixture", "score")
    page.quote(
        "The score function is the gradient of the log of the probability density function. "
        "[...] Modeling the score function does not require knowing the normalizing constant.",
        "Score Functions (tutorial), Score Functions: Definition",
    )
    page.para(
        "The target is the tutorials' mixture 0.8&nbsp;N(&minus;(5,&nbsp;5), I) + 0.2&nbsp;N((5,&nbsp;5), I). "
        "Its exact score is the responsibility-weighted sum of the components' linear scores, "
        "computed in log space; near each mode it is nearly linear, &minus;(x&nbsp;&minus;&nbsp;&mu;<sub>k</sub>), "
        "and it switches between them along the boundary where the responsibilities cross."
    )
    page.figure(
        viz.plot_score_field(mixture, extent=EXTENT),
        "score_field",
        "the score-functions tutorial's &ldquo;score function of a mixture of 2 Gaussians&rdquo;: the exact field over the density.",
    )
    page.figure(
        viz.plot_score_divergence(mixture, extent=EXTENT, grid=40, arrows=15),
        "score_divergence",
        "The diffusion tutorial: &ldquo;the score function should be a sink at the data points&rdquo;. The divergence "
        "of the exact score is &minus;2 (the trace of &minus;I) inside each mode; it is positive only on the "
        "ridge between them.",
    )
    page.figure(
        viz.plot_gaussian_score_line(),
        "gaussian_score",
        "The diffusion tutorial's aside: the score of one Gaussian is the line &minus;(x &minus; &mu;)/&sigma;&sup2;, "
        "pointing back to the mean from both sides; a mixture's score blends such lines.",
    )
    return {"true_weights": mixture.weights.tolist()}


def _score_matching_objectives(mixture: GaussianMixture) -> dict[str, Callable]:
    """``name -> (net, batch, generator) -> [B]`` for each objective; dsm trains at DSM_SIGMA."""
    return {
        "esm": lambda net, x, g: losses.esm(net, x, mixture.score),
        "ism_exact": lambda net, x, g: losses.ism(net, x, trace="exact"),
        "ism_hutchinson": lambda net, x, g: losses.ism(net, x, trace="hutchinson", generator=g),
        "ssm": lambda net, x, g: losses.ssm(net, x, generator=g),
        "dsm": lambda net, x, g: losses.dsm(lambda y, sigma: net(y), x, DSM_SIGMA, generator=g),
    }


LABELS = {
    "esm": "explicit (needs the true score)",
    "ism_exact": "implicit, exact trace (Hyvärinen)",
    "ism_hutchinson": "implicit, Hutchinson trace",
    "ssm": "sliced (variance-reduced)",
    "dsm": f"denoising, σ = {DSM_SIGMA}",
}


def _section_score_matching(ctx: _Context) -> dict:
    page, mixture, b = ctx.page, ctx.mixture, ctx.budget
    x_eval = mixture.sample(b.n_eval, generator=ctx.generator(20))
    smoothed = mixture.smooth(DSM_SIGMA)
    x_eval_smoothed = smoothed.sample(b.n_eval, generator=ctx.generator(21))
    plane = _uniform_grid(EXTENT, 60)
    results, nets = {}, {}
    for i, (name, objective) in enumerate(_score_matching_objectives(mixture).items()):
        net = _mlp(ctx.seed, b.hidden, depth=2, cond=False)  # the same initial weights for every objective
        wall = _fit(
            net, lambda x, g, f=objective, n=net: f(n, x, g), ctx.data, b.sm_steps, b, ctx.generator(30 + i)
        )
        reference, x_ref = (smoothed, x_eval_smoothed) if name == "dsm" else (mixture, x_eval)
        results[name] = {
            "fisher": fisher_divergence(net, reference.score, x_ref),
            "fisher_plane": fisher_divergence(net, reference.score, plane),
            "train_s": wall,
            "steps": b.sm_steps,
        }
        nets[name] = net
    shown = "ism_exact"
    page.heading("2. Score matching", "score-matching")
    page.quote(
        "[Hyvärinen] show that we can write the gradient of the score matching objective in a way that "
        "doesn't contain the score function. Thus allowing us to estimate the score function without "
        "having access to it.",
        "Score functions, denoising and diffusion (tutorial), Score matching",
    )
    page.para(
        f"The same small MLP (width {b.hidden}, depth 2, one initial set of weights) is trained for "
        f"{b.sm_steps} steps with each objective on {b.n_train} samples. The relative Fisher divergence "
        "E<sub>p</sub>&Vert;s<sub>&theta;</sub> &minus; &nabla;log&nbsp;p&Vert;&sup2; / "
        "E<sub>p</sub>&Vert;&nabla;log&nbsp;p&Vert;&sup2; is 0 for a perfect fit and 1 for predicting zero. "
        "Denoising score matching learns the score of the smoothed p<sub>&sigma;</sub> and is scored against "
        "that exact score. The last column averages the same error uniformly over the plotted window "
        "instead of under p: it is where the low-density regions show."
    )
    page.table(
        [
            "objective",
            "relative Fisher divergence (under p)",
            "same, uniform over the window",
            "train time (s)",
        ],
        [[LABELS[k], v["fisher"], v["fisher_plane"], v["train_s"]] for k, v in results.items()],
    )
    page.figure(
        viz.plot_score_field(mixture, learned_score=nets[shown], extent=EXTENT),
        "learned_score_field",
        "True vs learned score (implicit score matching, exact trace), drawn to one scale. Without "
        "ever seeing the true score, the fit matches it where the data are.",
    )
    page.quote(
        "Modeling the score function naively is difficult, because our estimates of the score function "
        "are inaccurate in low-density regions.",
        "Score Functions (tutorial), Problems with Naive Langevin Sampling",
    )
    page.figure(
        viz.plot_score_error(mixture, nets[shown], extent=EXTENT, data=ctx.data[:500]),
        "score_error",
        "The error &Vert;s<sub>&theta;</sub> &minus; &nabla;log p&Vert; of the same model: small inside the "
        "contours holding 50/90/99% of the mass, large far from the data, where the objective puts no weight. "
        f"Under p its relative Fisher divergence is {results[shown]['fisher']:.2g}; uniformly over the window "
        f"it is {results[shown]['fisher_plane']:.2g}.",
    )
    return results


def _section_langevin(ctx: _Context) -> dict:
    page, mixture, b = ctx.page, ctx.mixture, ctx.budget
    lo, hi = -8.0, 8.0
    g = ctx.generator(40)
    x0 = lo + (hi - lo) * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.langevin_animation(
        mixture.score, x0, ctx.out / "langevin.gif", step_size=0.05, n_steps=b.gif_steps,
        n_frames=b.gif_frames, background=mixture, extent=EXTENT, generator=g,
    )  # fmt: skip
    start = time.perf_counter()
    _, naive, annealed = viz.run_naive_vs_annealed(
        mixture, n=b.n_samples, n_steps=b.langevin_steps, n_steps_each=b.n_steps_each,
        generator=ctx.generator(41),
    )  # fmt: skip
    wall = time.perf_counter() - start
    results = {"naive": _modes(naive, mixture), "annealed": _modes(annealed, mixture), "wall_s": wall}
    page.heading("3. Langevin dynamics", "langevin")
    page.quote(
        "x_{i+1} = x_i + ε ∇_x log p(x) + √(2ε) z_i [...] As the step size ε → 0, and the number of steps "
        "K → ∞, this will result in a sample from p(x).",
        "Score Functions (tutorial), Langevin Sampling",
    )
    page.animation(
        gif,
        f"{b.gif_particles} particles, uniform on the square, follow Langevin dynamics with the exact score "
        f"(step 0.05, {b.gif_steps} steps). Each falls into the basin it starts in and stays there: "
        "the split between the modes is set by the start, not by the weights.",
    )
    page.para(
        "With separated modes, &ldquo;K &rarr; &infin;&rdquo; means waiting for a jump across a valley of "
        "density e<sup>&minus;25</sup>. Annealed Langevin (Song &amp; Ermon 2019) starts on the mixture "
        "smoothed by a noise as wide as the data, where the modes overlap and the score sees both, and lowers "
        "the noise level by level; both chains here use exact scores from the same uniform start."
    )
    truth = mixture.weights.tolist()
    page.table(
        ["chain", "mode weights (measured)", "true weights", "weight error (TV)"],
        [
            [f"naive Langevin ({b.langevin_steps} steps)", _weights(results["naive"]["weights"]),
             _weights(truth), results["naive"]["error"]],
            [f"annealed Langevin ({b.n_steps_each} steps per level)", _weights(results["annealed"]["weights"]),
             _weights(truth), results["annealed"]["error"]],
        ],
    )  # fmt: skip
    page.figure(
        viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT),
        "naive_vs_annealed",
        "Naive vs annealed Langevin with the exact score, from one uniform start. The naive chain keeps "
        "about the half-and-half split of its starting points; annealing recovers 0.8 / 0.2.",
    )
    return results


def _section_ncsn(ctx: _Context) -> dict:
    page, mixture, b = ctx.page, ctx.mixture, ctx.budget
    sigma_max = noise.max_pairwise_distance(ctx.data, generator=ctx.generator(50))
    sigma_min = 0.1
    n_levels = noise.num_levels(2, sigma_max, sigma_min)
    sigmas = noise.geometric_sigmas(sigma_max, sigma_min, n_levels)
    model = NoiseConditionalScore(_mlp(ctx.seed, b.hidden, depth=3, cond=True))
    wall = _fit(
        model, lambda x, g: losses.ncsn(model, x, sigmas, generator=g), ctx.data, b.ncsn_steps, b,
        ctx.generator(51), lr=2e-3,
    )  # fmt: skip
    start = time.perf_counter()
    _, naive, annealed = viz.run_naive_vs_annealed(
        mixture, n=b.n_samples, noise_score_fn=model, sigmas=sigmas, n_steps=b.langevin_steps,
        n_steps_each=b.n_steps_each, generator=ctx.generator(52),
    )  # fmt: skip
    sample_s = time.perf_counter() - start
    truth = mixture.sample(b.n_samples, generator=ctx.generator(53))
    results = {
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
        results[name] |= {"mmd": value, "mmd_stderr": stderr}
    page.heading("4. Noise-conditional score networks", "ncsn")
    page.quote(
        "We can choose the noise levels in a geometric progression [...]. σ_L can be the maximum pairwise "
        "distance between two datapoints [...] Usually, the loss weighting is λ(i) = σ_i².",
        "Score Functions (tutorial), Improved Score Matching",
    )
    page.para(
        f"One network s<sub>&theta;</sub>(x, &sigma;) learns the score of every smoothed p<sub>&sigma;</sub> "
        f"on {n_levels} geometric levels from &sigma;<sub>1</sub> = {sigma_max:.3g} (the largest distance between "
        f"two training points) down to {sigma_min:g}, with the &sigma;&sup2;-weighted denoising loss "
        f"({b.ncsn_steps} steps, {wall:.1f} s). The learned scores then drive annealed Langevin "
        f"({b.n_steps_each} steps per level), and, for contrast, naive Langevin at the smallest level. "
        "MMD&sup2; compares the samples with fresh exact samples (0 within its standard error when equal)."
    )
    page.table(
        ["chain (learned score)", "mode weights", "weight error (TV)", "MMD²", "± s.e."],
        [
            [name, _weights(results[name]["weights"]), results[name]["error"], results[name]["mmd"],
             results[name]["mmd_stderr"]]
            for name in ("naive", "annealed")
        ],
    )  # fmt: skip
    page.figure(
        viz.plot_naive_vs_annealed(mixture, naive, annealed, extent=EXTENT),
        "ncsn_samples",
        "Naive vs annealed Langevin with the learned noise-conditional score.",
    )
    g = ctx.generator(54)
    x0 = -8.0 + 16.0 * torch.rand(b.gif_particles, 2, generator=g)
    gif = viz.annealed_langevin_animation(
        model, x0, ctx.out / "annealed_langevin.gif", sigmas, step_lr=0.1 * sigma_min**2,
        n_steps_each=max(1, b.gif_steps // n_levels), n_frames=b.gif_frames, background=mixture, extent=EXTENT,
        generator=g,
    )  # fmt: skip
    page.animation(
        gif,
        f"Annealed Langevin with the learned score: {b.gif_particles} particles from the same uniform square, "
        f"through the {n_levels} noise levels. At the first levels the smoothed density is one wide bump and "
        "the particles gather in proportion to the weights; as the noise falls they settle into the two modes.",
    )
    return results


def _train_vp(
    ctx: _Context, data: torch.Tensor, steps: int, purpose: int
) -> tuple[ScoreModel, Standardizer, float]:
    """A VP score model (eps-parameterised MLP) fitted by continuous-time DSM to standardised ``data``."""
    scaler = Standardizer().fit(data)
    z = scaler.transform(data)
    sde = VPSDE()
    model = ScoreModel(_mlp(ctx.seed, ctx.budget.hidden, depth=3, cond=True), sde, param="eps")
    wall = _fit(
        model, lambda x, g: losses.sde_dsm(model, sde, x, eps=VP_EPS, generator=g), z, steps, ctx.budget,
        ctx.generator(purpose), lr=2e-3,
    )  # fmt: skip
    return model, scaler, wall


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


def _section_diffusion(ctx: _Context) -> dict:
    page, mixture, b = ctx.page, ctx.mixture, ctx.budget
    model, scaler, wall = _train_vp(ctx, ctx.data, b.vp_steps, 60)
    ctx.vp = (model, scaler)
    sde = model.sde
    x_T = sde.prior_sample((b.n_samples, 2), generator=ctx.generator(61))
    truth = mixture.sample(b.n_samples, generator=ctx.generator(62))
    results: dict = {"train_s": wall, "steps": b.vp_steps, "samplers": {}}
    samples = {}
    for key, (label, run) in _samplers(b).items():
        score_fn, calls = counted(model)
        start = time.perf_counter()
        z, nfe = run(score_fn, sde, x_T, ctx.generator(63))
        x = scaler.inverse_transform(z)
        value, stderr = mmd(x, truth, return_stderr=True)
        results["samplers"][key] = _modes(x, mixture) | {
            "label": label,
            "nfe": calls[0] if nfe is None else nfe,
            "wall_s": time.perf_counter() - start,
            "mmd": value,
            "mmd_stderr": stderr,
        }
        samples[key] = x
    weight_stderr = math.sqrt(0.8 * 0.2 / b.n_samples)
    results["weight_stderr"] = weight_stderr

    page.heading("5. Diffusion as stacked denoisers", "diffusion")
    page.quote(
        "So we stack many denoising score matching models on top of each other. Each model is trained to "
        "denoise the output of the previous model. [...] By taking a sample from a gaussian distribution "
        "(right) and passing it through each denoiser.",
        "Score functions, denoising and diffusion (tutorial), Diffusion",
    )
    page.para(
        "Letting the number of levels go to infinity gives a forward SDE; here the variance-preserving one "
        "(&beta; from 0.1 to 20), whose every marginal is the data scaled by m(t) plus noise of standard "
        f"deviation std(t). One network s<sub>&theta;</sub>(x, t) is trained by continuous-time denoising score "
        f"matching on standardised data ({b.vp_steps} steps, {wall:.1f} s). By Tweedie's formula it is a "
        "denoiser at every t: E[x<sub>0</sub> | x<sub>t</sub>] = (x<sub>t</sub> + std(t)&sup2; "
        "s<sub>&theta;</sub>(x<sub>t</sub>, t)) / m(t) (the diffusion tutorial writes the sign of this relation the other "
        "way round)."
    )
    page.figure(
        viz.plot_denoising_strip(
            scaler.transform(ctx.data[:400]),
            DENOISING_TIMES,
            model.denoise,
            sde=sde,
            generator=ctx.generator(64),
        ),
        "denoising_strip",
        "Top: the (standardised) data at increasing times t, i.e. increasing noise. Bottom: one Tweedie "
        "denoising step of the learned model. At small t it returns the points to the data; at t = 1 "
        "everything has been forgotten and it returns the data's mean.",
    )
    page.para(
        f"Every sampler starts from the same {b.n_samples} prior draws. The mode-weight error is the "
        f"total-variation distance between the measured and true mode weights (binomial standard error "
        f"&asymp; {weight_stderr:.3f}); NFE counts evaluations of the network."
    )
    page.table(
        ["sampler", "mode weights", "weight error (TV)", "MMD²", "± s.e.", "NFE", "time (s)"],
        [
            [v["label"], _weights(v["weights"]), v["error"], v["mmd"], v["mmd_stderr"], v["nfe"], v["wall_s"]]
            for v in results["samplers"].values()
        ],
    )
    gif = viz.reverse_sde_animation(
        model, sde, x_T[: b.gif_particles], ctx.out / "reverse_sde.gif", n_steps=b.pc_steps,
        n_frames=b.gif_frames, extent=(-3.0, 3.0, -3.0, 3.0), generator=ctx.generator(65),
    )  # fmt: skip
    page.animation(
        gif,
        f"The reverse SDE (reverse diffusion + Langevin corrector, {b.pc_steps} steps) carries "
        f"{b.gif_particles} prior draws to the (standardised) data: noise is removed as t runs from 1 to 0.",
    )
    n_paths = b.n_trajectories
    page.figure(
        viz.plot_ode_trajectories(
            model,
            sde,
            x_T[:n_paths],
            n_steps=b.ode_steps,
            method="rk4",
            data=scaler.transform(truth),
        ),
        "ode_trajectories",
        f"The probability-flow ODE carries {n_paths} prior points (crosses) to samples (red), in standardised "
        "coordinates: deterministic paths whose endpoints follow the data distribution, about four in five "
        "going to the heavier mode.",
    )
    page.figure(
        viz.plot_samples(samples["ode_dopri5"], truth),
        "diffusion_samples",
        "Exact samples of the mixture (left) and samples of the learned model through the probability-flow "
        "ODE (dopri5), in data units.",
    )
    return results


def _section_likelihood(ctx: _Context) -> dict:
    page, mixture, b = ctx.page, ctx.mixture, ctx.budget
    model, scaler = ctx.vp
    x = mixture.sample(b.n_test, generator=ctx.generator(70))
    start = time.perf_counter()
    logp_z, info = log_likelihood(model, model.sde, scaler.transform(x), eps=VP_EPS)
    wall = time.perf_counter() - start
    logp = logp_z.double() + scaler.log_det
    exact = mixture.to(torch.float64).log_prob(x.double())
    diff = logp - exact
    results = {
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
    page.heading("6. Likelihood", "likelihood")
    page.quote(
        "With this model of the data distribution we can generate our own samples x ∼ p_θ(x), and we can "
        "evaluate the likelihood p_θ(x).",
        "Score functions, denoising and diffusion (tutorial), introduction",
    )
    page.para(
        "A score has no normalising constant, yet the model defines a density: integrating the "
        "probability-flow ODE from the data to the prior while accumulating the divergence of its velocity "
        "gives log p<sub>&theta;</sub>(x) exactly (Song et al. 2021; dopri5, exact divergence, "
        f"t from {VP_EPS:g} to 1, plus the log-determinant of the standardisation). On {b.n_test} test points "
        "it is compared with the exact log-density of the mixture at the same points, and with the closed "
        "form E<sub>p</sub>[log p] = &Sigma;<sub>k</sub> w<sub>k</sub>(log w<sub>k</sub> &minus; log 2&pi;e) of "
        "two non-overlapping unit Gaussians."
    )
    page.table(
        ["quantity", "nats"],
        [
            ["model: mean log p_θ(x) on the test points", results["model_nats"]],
            ["truth: mean log p(x) on the same points", results["exact_on_test_nats"]],
            ["truth: E_p[log p], closed form", results["closed_form_nats"]],
            ["model − truth, mean over the points (± s.e.)",
             f"{results['error_nats']:.4f} ± {results['error_stderr']:.4f}"],
            ["mean |model − truth| per point", results["mean_abs_error_nats"]],
            [f"cost: {results['nfe']} network evaluations", f"{wall:.2f} s"],
        ],
    )  # fmt: skip
    return results


def _section_moons(ctx: _Context) -> dict:
    page, b = ctx.page, ctx.budget
    data = datasets.moons(b.n_train, generator=ctx.generator(80))
    model, scaler, wall = _train_vp(ctx, data, b.moons_steps, 81)
    heldout = datasets.moons(b.n_samples, generator=ctx.generator(82))
    x_T = model.sde.prior_sample((b.n_samples, 2), generator=ctx.generator(83))
    samples = scaler.inverse_transform(sample_ode(model, model.sde, x_T)[0])
    sample_mmd, sample_stderr = mmd(samples, heldout, return_stderr=True)
    density = _LearnedDensity(model, scaler)
    start = time.perf_counter()
    test_logp = density.log_prob(heldout[: b.n_test])
    fig = viz.plot_score_field(
        density, extent=MOONS_EXTENT, grid=18, data=data[:300], density_grid=b.density_grid
    )
    fig.axes[0].set_title("learned density and score (t = eps)")
    density_s = time.perf_counter() - start
    results = {
        "train_s": wall,
        "steps": b.moons_steps,
        "mmd": sample_mmd,
        "mmd_stderr": sample_stderr,
        "test_log_likelihood_nats": float(test_logp.mean()),
        "density_s": density_s,
    }
    page.heading("7. Moons", "moons")
    page.para(
        f"The same recipe on data whose density is not known: two interleaved half circles ({b.n_train} "
        f"points, standardised), a VP score model trained for {b.moons_steps} steps ({wall:.1f} s), samples by the "
        f"probability-flow ODE. MMD&sup2; to held-out data: {sample_mmd:.2g} &plusmn; {sample_stderr:.2g}; mean "
        f"held-out log-likelihood {results['test_log_likelihood_nats']:.3f} nats."
    )
    page.figure(
        viz.plot_samples(samples, heldout),
        "moons_samples",
        "Held-out moons (left) and model samples (right).",
    )
    page.figure(
        fig,
        "moons_density",
        f"The learned density exp(log p<sub>&theta;</sub>) from the probability-flow ODE on a {b.density_grid} "
        "&times; "
        f"{b.density_grid} grid, under the learned score at the smallest time, with training points in red. "
        "The density concentrates on the two arcs; the score points onto them from everywhere.",
    )
    return results


# --------------------------------------------------------------------------------------------------
# the whole demo


def _summary(results: dict) -> list[list]:
    sm, lv, nc, df, lk, mo = (results[k] for k in ("score_matching", "langevin", "ncsn", "diffusion",
                                                    "likelihood", "moons"))  # fmt: skip
    rows = [[f"relative Fisher divergence, {LABELS[k]}", v["fisher"], v["train_s"]] for k, v in sm.items()]
    rows += [
        ["mode-weight error, naive Langevin (exact score)", lv["naive"]["error"], lv["wall_s"]],
        ["mode-weight error, annealed Langevin (exact score)", lv["annealed"]["error"], ""],
        [
            "mode-weight error, NCSN + annealed Langevin",
            nc["annealed"]["error"],
            nc["train_s"] + nc["sample_s"],
        ],
    ]
    rows += [
        [f"mode-weight error, {v['label']} (NFE {v['nfe']})", v["error"], v["wall_s"]]
        for v in df["samplers"].values()
    ]
    rows += [
        ["log-likelihood: model − exact on test points (nats)", lk["error_nats"], lk["wall_s"]],
        ["moons: MMD² samples vs held-out data", mo["mmd"], mo["train_s"]],
    ]
    return rows


SECTIONS: dict[str, Callable[[_Context], dict]] = {
    "score": _section_score,
    "score_matching": _section_score_matching,
    "langevin": _section_langevin,
    "ncsn": _section_ncsn,
    "diffusion": _section_diffusion,
    "likelihood": _section_likelihood,
    "moons": _section_moons,
}


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    progress: bool = True,
    budget: Budget | None = None,
    seed: int = 0,
) -> dict:
    """Run the tutorials' story end to end and write ``out/report.html``, its figures and ``out/results.json``.

    ``quick`` uses ``QUICK`` (well under a minute on one CPU core) instead of ``FULL`` (a few minutes);
    ``budget`` overrides both. Runs on the CPU with one thread (restored afterwards), so that the
    numbers are reproducible. Returns the numbers written to ``results.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = budget or (QUICK if quick else FULL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out, budget, progress, seed, quick)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, budget: Budget, progress: bool, seed: int, quick: bool) -> dict:
    begin = time.perf_counter()
    mixture = two_gaussians()
    ctx = _Context(out, budget, seed, _Page(out), mixture, torch.empty(0))
    ctx.data = mixture.sample(budget.n_train, generator=ctx.generator(1))
    results: dict = {}
    wall: dict[str, float] = {}
    with tqdm(total=len(SECTIONS), desc="demo", unit="section", disable=not progress) as bar:
        for name, section in SECTIONS.items():
            bar.set_postfix_str(name)
            start = time.perf_counter()
            results[name] = section(ctx)
            wall[name] = time.perf_counter() - start
            bar.update()
    wall["total"] = time.perf_counter() - begin
    results["wall_s"] = wall
    results["settings"] = {"quick": quick, "seed": seed, "threads": 1, "torch": torch.__version__} | asdict(
        budget
    )
    results = _clean(results)
    atomic_write(out / "results.json", (json.dumps(results, indent=2) + "\n").encode())
    atomic_write(out / "report.html", _html(ctx.page, results).encode())
    return results


def _html(page: _Page, results: dict) -> str:
    wall = results["wall_s"]
    settings = results["settings"]
    summary = _Page(page.out)
    summary.table(["quantity", "value", "time (s)"], _summary(results))
    contents = "".join(
        f'<li><a href="#{anchor}">{html.escape(title)}</a></li>'
        for anchor, title in (
            ("score", "The score of a mixture"), ("score-matching", "Score matching"),
            ("langevin", "Langevin dynamics"), ("ncsn", "Noise-conditional score networks"),
            ("diffusion", "Diffusion as stacked denoisers"), ("likelihood", "Likelihood"), ("moons", "Moons"),
        )
    )  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>scorefield demo: score functions, denoising and diffusion</title>
<style>{CSS}</style>
</head>
<body>
<h1>Score functions, denoising and diffusion</h1>
<p class="meta">scorefield demo{" (quick)" if settings["quick"] else ""}: seed {settings["seed"]},
one CPU thread, torch {html.escape(settings["torch"])}, {wall["total"]:.0f} s in all.
Every number below is also in <code>results.json</code>.</p>
<p>The argument of the two tutorials <em>Score Functions</em> and <em>Score functions, denoising and diffusion</em>, run end to end: a model of the <em>score</em>
&nabla;<sub>x</sub> log p(x) needs no normalising constant, can be learned from samples alone, turns into
samples by Langevin dynamics once the noise is annealed, and &mdash; as a stack of denoisers in continuous
time &mdash; into a diffusion model with exact likelihoods. Every claim is checked against the exact score
and density of the tutorials' two-Gaussian mixture.</p>
<ol>{contents}</ol>
<h2 id="numbers">Numbers</h2>
{"".join(summary.parts)}
{"".join(page.parts)}
</body>
</html>
"""
