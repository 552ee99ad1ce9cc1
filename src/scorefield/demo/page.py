"""The demo's page: ``render`` turns the sections' numbers and figures into one self-contained HTML
file (every image embedded), with the tutorials' quotations, the prose and captions of each
section, and the table of the numbers that matter. It computes nothing: every number it prints
comes from the results, and every figure from the sections; it saves each figure beside the page.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from .sections import SHOWN
from .settings import DSM_SIGMA, VP_EPS, Budget

__all__ = ["LABELS", "render"]

LABELS = {
    "esm": "explicit (needs the true score)",
    "ism_exact": "implicit, exact trace (Hyvärinen)",
    "ism_hutchinson": "implicit, Hutchinson trace",
    "ssm": "sliced (variance-reduced)",
    "dsm": f"denoising, σ = {DSM_SIGMA}",
}


class _Page:
    """Collects the HTML of the page; each figure (by name, from ``figures``) is embedded, and a
    ``Figure`` is first written beside the page as ``out/NAME.png`` (a GIF is there already)."""

    def __init__(self, out: Path, figures: dict[str, Figure | Path]):
        self.out, self.figures, self.parts = out, figures, []

    def heading(self, title: str, anchor: str) -> None:
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{text}</p>")

    def quote(self, text: str, source: str) -> None:
        self.parts.append(f"<blockquote>{html.escape(text)}<cite>{html.escape(source)}</cite></blockquote>")

    def figure(self, name: str, caption: str) -> None:
        drawn = self.figures[name]
        if isinstance(drawn, Path):
            self._embed(drawn, "image/gif", caption)
            return
        path = self.out / f"{name}.png"
        drawn.savefig(path, format="png", dpi=90)
        self._embed(path, "image/png", caption)

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
# the sections' prose: after its heading and opening quotation (``OUTLINE``), each renders its
# results (``results[name]``) and its figures


def _score(page: _Page, results: dict, budget: Budget) -> None:
    page.para(
        "The target is the tutorials' mixture 0.8&nbsp;N(&minus;(5,&nbsp;5), I) + 0.2&nbsp;N((5,&nbsp;5), I). "
        "Its exact score is the responsibility-weighted sum of the components' linear scores, "
        "computed in log space; near each mode it is nearly linear, &minus;(x&nbsp;&minus;&nbsp;&mu;<sub>k</sub>), "
        "and it switches between them along the boundary where the responsibilities cross."
    )
    page.figure(
        "score_field",
        "the score-functions tutorial's &ldquo;score function of a mixture of 2 Gaussians&rdquo;: the exact field over the density.",
    )
    page.figure(
        "score_divergence",
        "The diffusion tutorial: &ldquo;the score function should be a sink at the data points&rdquo;. The divergence "
        "of the exact score is &minus;2 (the trace of &minus;I) inside each mode; it is positive only on the "
        "ridge between them.",
    )
    page.figure(
        "gaussian_score",
        "The diffusion tutorial's aside: the score of one Gaussian is the line &minus;(x &minus; &mu;)/&sigma;&sup2;, "
        "pointing back to the mean from both sides; a mixture's score blends such lines.",
    )


def _score_matching(page: _Page, results: dict, budget: Budget) -> None:
    b, sm = budget, results["score_matching"]
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
        [[LABELS[k], v["fisher"], v["fisher_plane"], v["train_s"]] for k, v in sm.items()],
    )
    page.figure(
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
        "score_error",
        "The error &Vert;s<sub>&theta;</sub> &minus; &nabla;log p&Vert; of the same model: small inside the "
        "contours holding 50/90/99% of the mass, large far from the data, where the objective puts no weight. "
        f"Under p its relative Fisher divergence is {sm[SHOWN]['fisher']:.2g}; uniformly over the window "
        f"it is {sm[SHOWN]['fisher_plane']:.2g}.",
    )


def _langevin(page: _Page, results: dict, budget: Budget) -> None:
    b, lv = budget, results["langevin"]
    page.figure(
        "langevin",
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
    truth = results["score"]["true_weights"]
    page.table(
        ["chain", "mode weights (measured)", "true weights", "weight error (TV)"],
        [
            [f"naive Langevin ({b.langevin_steps} steps)", _weights(lv["naive"]["weights"]),
             _weights(truth), lv["naive"]["error"]],
            [f"annealed Langevin ({b.n_steps_each} steps per level)", _weights(lv["annealed"]["weights"]),
             _weights(truth), lv["annealed"]["error"]],
        ],
    )  # fmt: skip
    page.figure(
        "naive_vs_annealed",
        "Naive vs annealed Langevin with the exact score, from one uniform start. The naive chain keeps "
        "about the half-and-half split of its starting points; annealing recovers 0.8 / 0.2.",
    )


def _ncsn(page: _Page, results: dict, budget: Budget) -> None:
    b, nc = budget, results["ncsn"]
    page.para(
        f"One network s<sub>&theta;</sub>(x, &sigma;) learns the score of every smoothed p<sub>&sigma;</sub> "
        f"on {nc['n_levels']} geometric levels from &sigma;<sub>1</sub> = {nc['sigma_max']:.3g} (the largest "
        f"distance between two training points) down to {nc['sigma_min']:g}, with the &sigma;&sup2;-weighted "
        f"denoising loss ({b.ncsn_steps} steps, {nc['train_s']:.1f} s). The learned scores then drive annealed "
        f"Langevin ({b.n_steps_each} steps per level), and, for contrast, naive Langevin at the smallest level. "
        "MMD&sup2; compares the samples with fresh exact samples (0 within its standard error when equal)."
    )
    page.table(
        ["chain (learned score)", "mode weights", "weight error (TV)", "MMD²", "± s.e."],
        [
            [name, _weights(nc[name]["weights"]), nc[name]["error"], nc[name]["mmd"], nc[name]["mmd_stderr"]]
            for name in ("naive", "annealed")
        ],
    )
    page.figure("ncsn_samples", "Naive vs annealed Langevin with the learned noise-conditional score.")
    page.figure(
        "annealed_langevin",
        f"Annealed Langevin with the learned score: {b.gif_particles} particles from the same uniform square, "
        f"through the {nc['n_levels']} noise levels. At the first levels the smoothed density is one wide bump "
        "and the particles gather in proportion to the weights; as the noise falls they settle into the two modes.",
    )


def _diffusion(page: _Page, results: dict, budget: Budget) -> None:
    b, df = budget, results["diffusion"]
    page.para(
        "Letting the number of levels go to infinity gives a forward SDE; here the variance-preserving one "
        "(&beta; from 0.1 to 20), whose every marginal is the data scaled by m(t) plus noise of standard "
        f"deviation std(t). One network s<sub>&theta;</sub>(x, t) is trained by continuous-time denoising score "
        f"matching on standardised data ({b.vp_steps} steps, {df['train_s']:.1f} s). By Tweedie's formula it is a "
        "denoiser at every t: E[x<sub>0</sub> | x<sub>t</sub>] = (x<sub>t</sub> + std(t)&sup2; "
        "s<sub>&theta;</sub>(x<sub>t</sub>, t)) / m(t) (the diffusion tutorial writes the sign of this relation the other "
        "way round)."
    )
    page.figure(
        "denoising_strip",
        "Top: the (standardised) data at increasing times t, i.e. increasing noise. Bottom: one Tweedie "
        "denoising step of the learned model. At small t it returns the points to the data; at t = 1 "
        "everything has been forgotten and it returns the data's mean.",
    )
    page.para(
        f"Every sampler starts from the same {b.n_samples} prior draws. The mode-weight error is the "
        f"total-variation distance between the measured and true mode weights (binomial standard error "
        f"&asymp; {df['weight_stderr']:.3f}); NFE counts evaluations of the network."
    )
    page.table(
        ["sampler", "mode weights", "weight error (TV)", "MMD²", "± s.e.", "NFE", "time (s)"],
        [
            [v["label"], _weights(v["weights"]), v["error"], v["mmd"], v["mmd_stderr"], v["nfe"], v["wall_s"]]
            for v in df["samplers"].values()
        ],
    )
    page.figure(
        "reverse_sde",
        f"The reverse SDE (reverse diffusion + Langevin corrector, {b.pc_steps} steps) carries "
        f"{b.gif_particles} prior draws to the (standardised) data: noise is removed as t runs from 1 to 0.",
    )
    page.figure(
        "ode_trajectories",
        f"The probability-flow ODE carries {b.n_trajectories} prior points (crosses) to samples (red), in "
        "standardised coordinates: deterministic paths whose endpoints follow the data distribution, about four "
        "in five going to the heavier mode.",
    )
    page.figure(
        "diffusion_samples",
        "Exact samples of the mixture (left) and samples of the learned model through the probability-flow "
        "ODE (dopri5), in data units.",
    )


def _likelihood(page: _Page, results: dict, budget: Budget) -> None:
    lk = results["likelihood"]
    page.para(
        "A score has no normalising constant, yet the model defines a density: integrating the "
        "probability-flow ODE from the data to the prior while accumulating the divergence of its velocity "
        "gives log p<sub>&theta;</sub>(x) exactly (Song et al. 2021; dopri5, exact divergence, "
        f"t from {VP_EPS:g} to 1, plus the log-determinant of the standardisation). On {lk['n_test']} test points "
        "it is compared with the exact log-density of the mixture at the same points, and with the closed "
        "form E<sub>p</sub>[log p] = &Sigma;<sub>k</sub> w<sub>k</sub>(log w<sub>k</sub> &minus; log 2&pi;e) of "
        "two non-overlapping unit Gaussians."
    )
    page.table(
        ["quantity", "nats"],
        [
            ["model: mean log p_θ(x) on the test points", lk["model_nats"]],
            ["truth: mean log p(x) on the same points", lk["exact_on_test_nats"]],
            ["truth: E_p[log p], closed form", lk["closed_form_nats"]],
            ["model − truth, mean over the points (± s.e.)",
             f"{lk['error_nats']:.4f} ± {lk['error_stderr']:.4f}"],
            ["mean |model − truth| per point", lk["mean_abs_error_nats"]],
            [f"cost: {lk['nfe']} network evaluations", f"{lk['wall_s']:.2f} s"],
        ],
    )  # fmt: skip


def _moons(page: _Page, results: dict, budget: Budget) -> None:
    b, mo = budget, results["moons"]
    page.para(
        f"The same recipe on data whose density is not known: two interleaved half circles ({b.n_train} "
        f"points, standardised), a VP score model trained for {b.moons_steps} steps ({mo['train_s']:.1f} s), "
        f"samples by the probability-flow ODE. MMD&sup2; to held-out data: {mo['mmd']:.2g} &plusmn; "
        f"{mo['mmd_stderr']:.2g}; mean held-out log-likelihood {mo['test_log_likelihood_nats']:.3f} nats."
    )
    page.figure("moons_samples", "Held-out moons (left) and model samples (right).")
    page.figure(
        "moons_density",
        f"The learned density exp(log p<sub>&theta;</sub>) from the probability-flow ODE on a {b.density_grid} "
        "&times; "
        f"{b.density_grid} grid, under the learned score at the smallest time, with training points in red. "
        "The density concentrates on the two arcs; the score points onto them from everywhere.",
    )


# each section, in order: its anchor, its title, the tutorial's words that open it (and their source),
# and what follows them
OUTLINE: tuple[tuple[str, str, tuple[str, str] | None, Callable[[_Page, dict, Budget], None]], ...] = (
    (
        "score",
        "The score of a mixture",
        (
            "The score function is the gradient of the log of the probability density function. "
            "[...] Modeling the score function does not require knowing the normalizing constant.",
            "Score Functions (tutorial), Score Functions: Definition",
        ),
        _score,
    ),
    (
        "score-matching",
        "Score matching",
        (
            "[Hyvärinen] show that we can write the gradient of the score matching objective in a way that "
            "doesn't contain the score function. Thus allowing us to estimate the score function without "
            "having access to it.",
            "Score functions, denoising and diffusion (tutorial), Score matching",
        ),
        _score_matching,
    ),
    (
        "langevin",
        "Langevin dynamics",
        (
            "x_{i+1} = x_i + ε ∇_x log p(x) + √(2ε) z_i [...] As the step size ε → 0, and the number of steps "
            "K → ∞, this will result in a sample from p(x).",
            "Score Functions (tutorial), Langevin Sampling",
        ),
        _langevin,
    ),
    (
        "ncsn",
        "Noise-conditional score networks",
        (
            "We can choose the noise levels in a geometric progression [...]. σ_L can be the maximum pairwise "
            "distance between two datapoints [...] Usually, the loss weighting is λ(i) = σ_i².",
            "Score Functions (tutorial), Improved Score Matching",
        ),
        _ncsn,
    ),
    (
        "diffusion",
        "Diffusion as stacked denoisers",
        (
            "So we stack many denoising score matching models on top of each other. Each model is trained to "
            "denoise the output of the previous model. [...] By taking a sample from a gaussian distribution "
            "(right) and passing it through each denoiser.",
            "Score functions, denoising and diffusion (tutorial), Diffusion",
        ),
        _diffusion,
    ),
    (
        "likelihood",
        "Likelihood",
        (
            "With this model of the data distribution we can generate our own samples x ∼ p_θ(x), and we can "
            "evaluate the likelihood p_θ(x).",
            "Score functions, denoising and diffusion (tutorial), introduction",
        ),
        _likelihood,
    ),
    ("moons", "Moons", None, _moons),
)


# --------------------------------------------------------------------------------------------------
# the whole page


def _summary(results: dict) -> list[list]:
    """The numbers that matter, one row each: quantity, value, time (s)."""
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


def render(out: Path, results: dict, figures: dict[str, Figure | Path], budget: Budget) -> str:
    """The page of ``results`` (every section's numbers, ``wall_s`` and ``settings``, as in
    ``results.json``) and the sections' ``figures`` by name, each PNG written to ``out``."""
    page = _Page(out, figures)
    for number, (anchor, title, opening, body) in enumerate(OUTLINE, start=1):
        page.heading(f"{number}. {title}", anchor)
        if opening is not None:
            page.quote(*opening)
        body(page, results, budget)
    summary = _Page(out, {})
    summary.table(["quantity", "value", "time (s)"], _summary(results))
    wall, settings = results["wall_s"], results["settings"]
    contents = "".join(
        f'<li><a href="#{anchor}">{html.escape(title)}</a></li>' for anchor, title, *_ in OUTLINE
    )
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
