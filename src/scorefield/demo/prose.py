"""The words of the demo's page: the introduction, each section's prose, equations and captions
(``OUTLINE``: anchor, title, the tutorial's words that open it, and the function that writes the
rest), the summary table and the glossary of its terms.

Every number printed comes from the results; a caption that states what a figure shows states it
from the numbers computed with it. The equations are written in the tutorials' notation (noise
levels ascending, ``σ_1 < … < σ_L``, as the score-functions tutorial orders them), corrected where
the tutorials slip; the corrections are named where they occur. The library's own conventions are
in ``docs/math.md``, which the text cites by section.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .mathml import tex
from .page import Page, markup
from .settings import DENOISING_TIMES, DSM_SIGMA, VP_EPS, Budget

__all__ = ["INTRODUCTION", "LABELS", "OUTLINE", "glossary", "summary"]

LABELS = {
    "esm": "explicit (ESM; needs the true score)",
    "ism_exact": "implicit (ISM), exact trace",
    "ism_hutchinson": "implicit (ISM), Hutchinson trace",
    "ssm": "sliced (SSM, variance-reduced)",
    "dsm": f"denoising (DSM), σ = {DSM_SIGMA}",
}

INTRODUCTION = (
    "<p>The argument of the two tutorials <em>Score Functions</em> and <em>Score functions, denoising and "
    "diffusion</em>, run end to end and drawn: a model of the <em>score</em> "
    + tex(r"\nabla_x \log p(x)")
    + " needs no normalising constant, can be learned from samples alone, turns into samples by Langevin "
    "dynamics once the noise is annealed, and &mdash; as a stack of denoisers in continuous time &mdash; into a "
    "diffusion model with exact likelihoods. Every claim is checked against the exact score and density of "
    "the tutorials' two-Gaussian mixture, then the same recipe is tried on data whose density is unknown. "
    "Each figure's caption says what to look at; the table at the end collects the numbers and defines "
    "every term in it.</p>"
)


def doc(anchor: str) -> str:
    """A reference to a section of the project's ``docs/math.md``."""
    return f"<code>docs/math.md#{anchor}</code>"


def m(source: str) -> str:
    """Inline MathML."""
    return tex(source)


def _w(weights) -> str:
    return " / ".join(f"{w:.3f}" for w in weights)


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def _g(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "n/a"


# --------------------------------------------------------------------------------------------------
# 1. the score


def _score(page: Page, results: dict, budget: Budget) -> None:
    sc = results["score"]
    page.para(
        "The target throughout is the tutorials' mixture of two Gaussians in the plane, "
        + m(r"p(x) = 0.8\, \mathcal{N}(x; -(5, 5), I) + 0.2\, \mathcal{N}(x; (5, 5), I)")
        + ". Its score is the gradient of its log-density; for a model written as an energy, the "
        "normalising constant drops out of it:"
    )
    page.equation(
        r"s(x) = \nabla_x \log p(x), \qquad p_\theta(x) = \frac{e^{-f_\theta(x)}}{Z_\theta} \ \Rightarrow\ "
        r"\nabla_x \log p_\theta(x) = -\nabla_x f_\theta(x) - \nabla_x \log Z_\theta = -\nabla_x f_\theta(x)"
    )
    page.para(
        "For one Gaussian the score is a straight line through the mean, and for a mixture it is the "
        "responsibility-weighted average of its components' lines (" + doc("gaussians-and-mixtures") + "):"
    )
    page.equation(
        r"\nabla_x \log \mathcal{N}(x; \mu, \sigma^2 I) = -\frac{x - \mu}{\sigma^2}, \qquad "
        r"s(x) = \sum_k r_k(x) \Big(-\frac{x - \mu_k}{\sigma_k^2}\Big), \quad "
        r"r_k(x) = \frac{w_k \mathcal{N}(x; \mu_k, \sigma_k^2 I)}{p(x)}",
        "The score-functions tutorial writes −2(x − μ)/σ²: its exponent lacks the ½ of the Gaussian's.",
    )
    page.figure(
        "score_field",
        "The exact score of the mixture (arrows) over its density (blue): the counterpart of the "
        "score-functions tutorial's <em>score function of a mixture of 2 Gaussians</em>. Every arrow points to "
        "the mode whose basin it lies in and grows linearly with the distance from it; along the diagonal from "
        "top left to bottom right, where the responsibilities cross, the field turns from one mode to the "
        "other.",
        "arrows of the exact score over the two-Gaussian density",
    )
    page.figure(
        "score_lines",
        "Left: the score of one Gaussian, the line −(x − μ)/σ² through zero at the mean (the diffusion "
        "tutorial's aside on the score of a Gaussian). Right: the mixture along the line through both modes. Its "
        "score (red) follows the heavy mode's line (dashed) up to the point where the responsibilities cross "
        "(dotted), then jumps to the light mode's line: piecewise nearly linear, as the score-functions "
        "tutorial says, the kind of function a network of ReLU-like units draws easily.",
        "score of one Gaussian, and the mixture's score along the line through its modes",
    )
    div = sc["divergence_at_modes"]
    page.para(
        "The diffusion tutorial reads the implicit score-matching objective (next section) as asking for a score "
        "that is a sink at the data, and a larger sink where the density is higher. The divergence "
        + m(r"\nabla \cdot s")
        + " measures sinks (negative) and sources (positive); for a mixture it splits into each component's own "
        "sink and a term that is never negative, the spread of the component scores under the "
        "responsibilities:"
    )
    page.equation(
        r"\nabla \cdot s(x) = \sum_k r_k(x) \Big(-\frac{d}{\sigma_k^2}\Big) + "
        r"\sum_k r_k(x)\, \|s_k(x) - s(x)\|^2, \qquad s_k(x) = -\frac{x - \mu_k}{\sigma_k^2}"
    )
    page.figure(
        "score_divergence",
        f"The divergence of the exact score, sinks in blue and sources in red, each sign on its own colour "
        f"scale. At the two modes it is {div[0]:.3g} and {div[1]:.3g}: the same sink, though one mode holds 0.8 "
        "of the mass and the other 0.2. The divergence of a Gaussian's score is −d/σ² (here −2 in d = 2 "
        "dimensions): it is set by the component's width, not by its weight, and it is the same everywhere in "
        "its basin, so the whole plane is one uniform sink but for a ridge of sources (up to "
        f"{sc['divergence_max']:.3g}) along the boundary, where the responsibilities are split and the two "
        "fields point apart. So a denser place is a deeper sink when it is denser because its component is "
        "narrower, not because the component is heavier; the weights only move the boundary, which sits "
        f"{sc['boundary_shift']:.2f} from the midpoint of the modes, towards the light one. Black points: "
        "200 samples.",
        "divergence of the exact score: uniform sinks of -2 and a ridge of sources between the modes",
    )
    it = results["score"]["interfering"]
    stds = ", ".join(f"{v:g}" for v in it["stds"])
    sinks = ", ".join(f"{v:.3g}" for v in it["sinks"])
    page.figure(
        "interfering_sinks",
        "Sinks that interfere: the diffusion tutorial's figure of sinks drawn alone and then interfering, "
        f"computed exactly for three close components with standard deviations {stds} and weights "
        f"{', '.join(f'{v:g}' for v in it['weights'])}. Left: the first term of the equation above, each "
        f"component's own sink −d/σ<sub>k</sub>² ({sinks}) where it is responsible; the narrowest component "
        "has the deepest sink although its weight is not the largest. Right: the whole divergence. Where the "
        "components share the responsibility the second term lifts it, into sources of up to "
        f"{it['divergence_max']:.3g} on the rings between them; at the three means it is "
        f"{', '.join(f'{v:.3g}' for v in it['divergence_at_means'])}, the components' own sinks.",
        "divergence of three close components alone and together",
    )


# --------------------------------------------------------------------------------------------------
# 2. score matching


def _score_matching(page: Page, results: dict, budget: Budget) -> None:
    b, sm = budget, results["score_matching"]
    objectives, basins = sm["objectives"], sm["basins"]
    page.para(
        "Fitting " + m(r"s_\theta") + " to the score by least squares, the explicit objective, needs the "
        "true score. Integrating its cross term by parts removes it (Hyvärinen 2005; "
        + doc("implicit-score-matching")
        + "):"
    )
    page.equation(
        r"J_{\text{ESM}}(\theta) = \tfrac12\, \mathbb{E}_{p(x)} \|s_\theta(x) - \nabla_x \log p(x)\|^2 "
        r"= \mathbb{E}_{p(x)} \Big[\tfrac12 \|s_\theta(x)\|^2 + \operatorname{tr} \nabla_x s_\theta(x)\Big] + C",
        "The score-functions tutorial writes ∇log p<sub>θ</sub> in place of ∇log p (that would compare the "
        "model with itself); the diffusion tutorial writes the implicit form doubled, ‖s‖² + 2∇·s, which has "
        "the same minimiser.",
    )
    page.para(
        "The trace costs one backward pass per dimension; Hutchinson's estimator replaces it by one random "
        "projection, "
        + m(r"\operatorname{tr} A = \mathbb{E}_v [v^\top A v]")
        + " for "
        + m(r"\mathbb{E}[v v^\top] = I")
        + ", and sliced score matching projects the whole objective (Song et al. "
        "2019). Denoising score matching (Vincent 2011) needs no derivative of the network at all: it learns "
        "the score of the data smoothed by a little noise, "
        + m(r"p_\sigma")
        + " (section 4 shows why that is the same problem):"
    )
    page.equation(
        r"J_{\text{DSM}}(\theta) = \tfrac12\, \mathbb{E}_{x \sim p}\, \mathbb{E}_{z \sim \mathcal{N}(0, I)} "
        r"\Big\| s_\theta(x + \sigma z) + \frac{z}{\sigma} \Big\|^2"
    )
    page.para(
        f"The same small MLP (width {b.hidden}, depth 2, one initial set of weights) is trained for "
        f"{b.sm_steps} steps with each objective on {b.n_train} samples. Each is scored by the relative Fisher "
        "divergence, 0 for a perfect fit and 1 for predicting zero (denoising score matching against the exact "
        "score of its smoothed " + m(r"p_\sigma") + "):"
    )
    page.equation(
        r"D(s_\theta) = \frac{\mathbb{E}\, \|s_\theta(x) - \nabla_x \log p(x)\|^2}{\mathbb{E}\, \|\nabla_x \log p(x)\|^2}"
    )
    page.table(
        [
            "objective",
            "relative Fisher divergence, x ∼ p",
            "same, x uniform over the window",
            "train time (s)",
        ],
        [[LABELS[k], v["fisher"], v["fisher_plane"], v["train_s"]] for k, v in objectives.items()],
    )
    under = [v["fisher"] for v in objectives.values()]
    plane = [v["fisher_plane"] for v in objectives.values()]
    page.para(
        f"Under p the relative Fisher divergences lie between {min(under):.2g} and {max(under):.2g}; uniformly "
        f"over the plotted window [&minus;9, 9]&sup2; the same models score between {min(plane):.2g} and "
        f"{max(plane):.2g}. The expectation under p is what every objective minimises, and p puts almost no "
        "weight on most of the window."
    )
    wrong = basins["wrong_fraction"]
    if wrong > 0:
        heavy = basins["wrong_from_heavy"] >= 0.5
        where = (
            f"From {_pct(wrong)} of the window (red), gradient ascent along the learned field ends at the other "
            f"mode than along the true field: a band along the boundary, no nearer than "
            f"{basins['wrong_min_distance']:.1f} to either mode, where the training data never go; "
            f"{_pct(basins['wrong_from_heavy'] if heavy else 1 - basins['wrong_from_heavy'], 0)} of it belongs to "
            f"the {'heavy' if heavy else 'light'} mode's basin, which the learned field hands to the "
            f"{'light' if heavy else 'heavy'} one."
        )
    else:
        where = "Gradient ascent along the learned field ends at the same mode as along the true one from every point of the grid."
    ratio = basins["far_norm_ratio"]
    page.figure(
        "learned_score_field",
        "True (left) and learned (right; implicit score matching, exact trace) score, drawn to one scale. "
        "Near the data they agree. More than 4 from both modes the learned arrows are on average "
        f"{ratio:.2f} times as long as the true ones, and the learned field has its own basins. {where} Each "
        f"point of a {basins['grid']} &times; {basins['grid']} grid was moved 300 steps of 0.1 along each field.",
        "true and learned score fields, with the region the learned field sends to the wrong mode",
    )
    page.quote(
        "Modeling the score function naively is difficult, because our estimates of the score function are "
        "inaccurate in low-density regions.",
        "Score Functions, Problems with Naive Langevin Sampling",
    )
    shown = objectives["ism_exact"]
    page.figure(
        "score_error",
        "The error ‖s<sub>θ</sub> − ∇log p‖ of the same model. Left: small inside the outlines that hold "
        "50/90/99% of the mass (cyan), large far from the data and largest on the boundary between the modes. "
        "Right: the error at every grid point against log p there: the error grows as the density falls. "
        f"Its relative Fisher divergence is {shown['fisher']:.2g} under p and {shown['fisher_plane']:.2g} "
        "uniformly over the window.",
        "map of the learned score's error, and the error against the log-density",
    )


# --------------------------------------------------------------------------------------------------
# 3. Langevin dynamics


def _langevin(page: Page, results: dict, budget: Budget) -> None:
    b, lv = budget, results["langevin"]
    page.equation(
        r"x_{i+1} = x_i + \varepsilon\, \nabla_x \log p(x_i) + \sqrt{2 \varepsilon}\, z_i, \qquad "
        r"z_i \sim \mathcal{N}(0, I)",
        "The chain's law tends to p as ε → 0 and the number of steps grows ("
        + doc("langevin-dynamics")
        + ").",
    )
    page.figure(
        "langevin",
        f"{b.gif_particles} particles, uniform on the square [−8, 8]², follow Langevin dynamics with the exact "
        f"score (ε = 0.05, {b.gif_steps} steps; the frames are log-spaced in the step, as the chains move most "
        "at first): the score-functions tutorial's animation of Langevin sampling. Each particle falls into "
        "the basin it starts in and stays there: "
        f"{_pct(lv['gif_start_upper'], 0)} of them start on the light mode's side of the diagonal, and end in "
        "the light mode, which holds 20% of the mass.",
        "animation: particles under Langevin dynamics settle into the mode of the basin they start in",
    )
    page.para(
        "With separated modes, &ldquo;as the number of steps grows&rdquo; means waiting for a jump across a "
        "valley of density e<sup>&minus;25</sup> ("
        + doc("naive-versus-annealed-langevin-on-separated-modes")
        + "). Annealed Langevin (Song &amp; Ermon 2019) starts on the mixture smoothed by a noise as wide as the "
        "data, where the modes overlap and the score sees both, and lowers the noise level by level. Here both "
        f"chains use exact scores from the same uniform start: naive Langevin {b.langevin_steps} steps of 0.05 on "
        f"the score of p (smoothed by σ = 0.01), annealed Langevin {b.n_steps_each} steps at each of 20 levels."
    )
    truth = results["score"]["true_weights"]
    page.table(
        ["chain", "mode weights (measured)", "true weights", "mode-weight error (TV)"],
        [
            [f"naive Langevin ({b.langevin_steps} steps)", _w(lv["naive"]["weights"]), _w(truth),
             lv["naive"]["error"]],
            [f"annealed Langevin ({b.n_steps_each} steps per level)", _w(lv["annealed"]["weights"]), _w(truth),
             lv["annealed"]["error"]],
        ],
    )  # fmt: skip
    page.figure(
        "naive_vs_annealed",
        f"Naive and annealed Langevin with the exact score, from one uniform start. The naive chain keeps "
        f"about the split of its starting points ({_w(lv['naive']['weights'])}); annealing recovers "
        f"{_w(lv['annealed']['weights'])} against the true {_w(truth)}.",
        "samples of naive and annealed Langevin over the density",
    )


# --------------------------------------------------------------------------------------------------
# 4. adding noise


def _noise(page: Page, results: dict, budget: Budget) -> None:
    nz = results["noise"]
    page.para(
        "Adding independent noise to a random variable convolves its density with the noise's: the data "
        "smoothed by "
        + m(r"\mathcal{N}(0, \sigma^2 I)")
        + " has the density "
        + m(r"p_\sigma")
        + " ("
        + doc("smoothing-and-diffusion")
        + "). An empirical data set is a sum of "
        "impulses, so smoothing it gives a mixture of Gaussians, one on each point (the Parzen density):"
    )
    page.equation(
        r"p_\sigma(x) = \int p(y)\, \mathcal{N}(x; y, \sigma^2 I)\, dy = (p * \mathcal{N}(0, \sigma^2 I))(x), "
        r"\qquad q_\sigma(x) = \frac{1}{N} \sum_{i=1}^{N} \mathcal{N}(x; x_i, \sigma^2 I)",
        "The score-functions tutorial writes the kernel once with σ<sub>i</sub> I for its covariance; it is σ<sub>i</sub>² I.",
    )
    page.figure(
        "smoothing",
        "Smoothing as a convolution, in one dimension: the tutorials' mixture seen along the line through its "
        f"modes, 0.8 N({nz['line_means'][0]:.3g}, 1) + 0.2 N({nz['line_means'][1]:.3g}, 1). Left: eight data "
        f"points (impulses), a kernel of σ = {nz['kernel_sigma']:g} on each (blue) and their sum (red), a "
        f"mixture of Gaussians. Right: the density smoothed at σ = {', '.join(f'{s:g}' for s in nz['smoothing_sigmas'])}: "
        "the bumps widen, the valley between them fills, and far from both the density is no longer "
        "negligible. That is what noise does for the scores: a smoothed density has mass, hence training "
        "data, where the clean one has none.",
        "kernels summing to a mixture, and a density smoothed at three noise levels",
    )
    page.para(
        "Sampling " + m(r"p_\sigma") + " is easy (add noise to a data point), and the score of the noise's "
        "own density is known exactly: it points from the noisy point back to its clean one. That is the "
        "target of denoising score matching, and its average over all the clean points a noisy point could "
        "have come from is the score of " + m(r"p_\sigma") + " (" + doc("denoising-score-matching") + "):"
    )
    page.equation(
        r"\tilde x = x + \sigma z: \quad \nabla_{\tilde x} \log \mathcal{N}(\tilde x; x, \sigma^2 I) = "
        r"-\frac{\tilde x - x}{\sigma^2} = -\frac{z}{\sigma}, \qquad "
        r"\mathbb{E}\Big[-\frac{z}{\sigma} \,\Big|\, \tilde x\Big] = \nabla_{\tilde x} \log p_\sigma(\tilde x)"
    )
    page.figure(
        "dsm_target",
        "The denoising target −z/σ. Left: three clean points (crosses), six noisy copies of each, and each "
        "copy's target drawn times σ² so that it ends on its own clean point; where copies of different points "
        "mingle, their targets disagree. Right, in one dimension (the mixture on the line, σ = "
        f"{nz['dsm_sigma']:g}): the targets scatter widely, but their average in each bin of x̃ (orange) lies on "
        "the exact score of p<sub>σ</sub> (red). Least squares learns that average.",
        "noisy copies with their targets, and the targets' average against the smoothed score",
    )


# --------------------------------------------------------------------------------------------------
# 5. noise-conditional score networks


def _ncsn(page: Page, results: dict, budget: Budget) -> None:
    b, nc = budget, results["ncsn"]
    L = nc["n_levels"]
    page.para(
        "One network "
        + m(r"s_\theta(x, \sigma)")
        + " learns the score of every smoothed "
        + m(r"p_{\sigma_i}")
        + f" on L = {L} geometric levels, "
        + m(rf"\sigma_1 = {nc['sigma_min']:g} < \sigma_2 < \cdots < \sigma_L = {nc['sigma_max']:.3g}")
        + ", σ<sub>L</sub> the largest distance between two training points, with the tutorial's weighting "
        + m(r"\lambda(i) = \sigma_i^2")
        + f" ({b.ncsn_steps} steps, {nc['train_s']:.1f} s; "
        + doc("noise-conditional-score-matching")
        + ", where the library lists the levels largest first, the order in which a sampler visits them):"
    )
    page.equation(
        r"J(\theta) = \frac{1}{L} \sum_{i=1}^{L} \lambda(i)\, \mathbb{E}_{x \sim p,\, z} "
        r"\Big[\tfrac12 \Big\| s_\theta(x + \sigma_i z, \sigma_i) + \frac{z}{\sigma_i} \Big\|^2\Big], \qquad "
        r"\lambda(i) = \sigma_i^2"
    )
    levels = nc["levels"]
    ordered = sorted(levels, key=lambda v: v["index"])
    rows = "; ".join(
        f"σ<sub>{v['index']}</sub> = {v['sigma']:.3g}: {v['fisher']:.2g} under p<sub>σ</sub>, "
        f"{v['fisher_plane']:.2g} over the window"
        for v in sorted(levels, key=lambda v: v["index"])
    )
    page.figure(
        "noise_levels",
        "The core figure of the score-functions tutorial's <em>Adding Noise</em>: at four of the levels, the "
        "smoothed density p<sub>σ</sub> and its exact score (left), and the learned score's error, times σ to "
        "put every level on one scale (right, one colour scale for all rows, with the outlines holding "
        "50/90/99% of p<sub>σ</sub>). At the smallest level the error is small only on the data, as in "
        "section 2; as σ grows p<sub>σ</sub> covers more of the window, the noisy training points reach "
        f"there, and the error over the window falls from {ordered[0]['fisher_plane']:.2g} (relative Fisher "
        f"divergence at σ<sub>{ordered[0]['index']}</sub>) to {ordered[-1]['fisher_plane']:.2g} "
        f"(σ<sub>{ordered[-1]['index']}</sub>). Per level: {rows}.",
        "smoothed density, its score and the learned score's error at four noise levels",
    )
    page.para(
        "Annealed Langevin runs Langevin dynamics at each level, from the largest to the smallest, each "
        "chain starting where the previous one ended, with a step that scales with the level's variance, and "
        "ends with one denoising step (" + doc("annealed-langevin") + "):"
    )
    page.equation(
        r"\text{for } i = L, L-1, \ldots, 1: \quad x \leftarrow x + \alpha_i\, s_\theta(x, \sigma_i) + "
        r"\sqrt{2 \alpha_i}\, z, \quad \alpha_i = \varepsilon \frac{\sigma_i^2}{\sigma_1^2}; \qquad "
        r"\text{then } x \leftarrow x + \sigma_1^2\, s_\theta(x, \sigma_1)",
        f"Here ε = {nc['step_lr']:g} and {b.n_steps_each} steps at each level; naive Langevin runs "
        f"{b.langevin_steps} steps at σ<sub>1</sub> alone.",
    )
    page.table(
        ["chain (learned score)", "mode weights", "mode-weight error (TV)", "MMD²", "± s.e."],
        [
            [name, _w(nc[name]["weights"]), nc[name]["error"], nc[name]["mmd"], nc[name]["mmd_stderr"]]
            for name in ("naive", "annealed")
        ],
    )
    page.figure(
        "ncsn_samples",
        f"Naive and annealed Langevin with the learned noise-conditional score: naive keeps "
        f"{_w(nc['naive']['weights'])}, annealed finds {_w(nc['annealed']['weights'])}; MMD² to fresh exact "
        f"samples {nc['naive']['mmd']:.2g} &plusmn; {nc['naive']['mmd_stderr']:.2g} and "
        f"{nc['annealed']['mmd']:.2g} &plusmn; {nc['annealed']['mmd_stderr']:.2g}.",
        "samples of naive and annealed Langevin with the learned score",
    )
    page.figure(
        "annealed_langevin",
        f"Annealed Langevin with the learned score, the chain of the table: {b.gif_particles} particles from the "
        f"same uniform square through the L = {L} levels, from σ<sub>L</sub> = {nc['sigma_max']:.3g} down to "
        f"σ<sub>1</sub> = {nc['sigma_min']:g}, {b.n_steps_each} steps per level. Each frame's background is the "
        "smoothed density p<sub>σ</sub> of its level, and each level has its own window, wide enough for that "
        "density (its half-width is in the title): at the largest levels p<sub>σ</sub> is one bump tens of "
        "units across and the particles spread over it; as σ falls they gather where the mass is, then settle "
        "into the two modes in proportion to their weights.",
        "animation: annealed Langevin over the smoothed density of each noise level",
    )


# --------------------------------------------------------------------------------------------------
# 6. diffusion


def _diffusion(page: Page, results: dict, budget: Budget) -> None:
    b, df = budget, results["diffusion"]
    page.para(
        "Letting the number of levels go to infinity turns the ladder into a stochastic differential "
        "equation that adds noise continuously, from the data at t = 0 to pure noise at t = 1 (Song et al. "
        "2021; " + doc("sdes") + "). This page uses the variance-preserving one:"
    )
    page.equation(
        r"dx = f(x, t)\, dt + g(t)\, dW_t, \qquad f(x, t) = -\tfrac12 \beta(t)\, x, \quad g(t) = \sqrt{\beta(t)}, "
        r"\quad \beta(t) = 0.1 + 19.9\, t"
    )
    page.equation(
        r"x_t = m(t)\, x_0 + \operatorname{std}(t)\, z, \qquad m(t) = \exp\Big(-\tfrac12 \int_0^t \beta(s)\, ds\Big), "
        r"\quad \operatorname{std}(t)^2 = 1 - m(t)^2",
        f"So m(1) = {df['m1']:.4f} and std(1) = {df['std1']:.4f}: at t = 1 the data are forgotten.",
    )
    page.para("Run backwards, the same marginals are generated by a reverse SDE, or by an ODE without noise:")
    page.equation(
        r"dx = \big[f(x, t) - g(t)^2\, \nabla_x \log p_t(x)\big]\, dt + g(t)\, d\bar W_t \quad (t: 1 \to 0), "
        r"\qquad \frac{dx}{dt} = f(x, t) - \tfrac12 g(t)^2\, \nabla_x \log p_t(x)"
    )
    line = df["line"]
    page.figure(
        "diffusion_1d",
        "A density over time, in one dimension: the tutorials' mixture along the line through its modes, "
        f"standardised (modes at {line['means'][0]:.2f} and {line['means'][1]:.2f}, standard deviation "
        f"{line['std']:.3f}), diffused by the VP SDE: p<sub>t</sub>(x) exactly, scaled at each t to its "
        "maximum, on a logarithmic time axis (most of the change happens before t = 0.3). Paths from the same "
        "prior draws with the exact score: the reverse SDE's (left) jitter and cross, the probability-flow "
        "ODE's (right) are smooth and never cross; both end distributed as the data, most in the heavy mode.",
        "one-dimensional density over time with reverse-SDE and probability-flow paths",
    )
    page.para(
        "One network " + m(r"s_\theta(x, t)") + f" is trained on standardised data by continuous-time "
        f"denoising score matching ({b.vp_steps} steps, {df['train_s']:.1f} s; "
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
    jumps = df["jumps"]
    j4, j1 = jumps["0.4"], jumps["1"]
    times = ", ".join(f"{t:g}" for t in DENOISING_TIMES)
    page.figure(
        "denoising_chain",
        "Stacked denoisers as a chain (the diffusion tutorial's figure of denoising models between "
        "neighbouring noise levels), in standardised units, every panel on one window; rows are the times "
        f"t = {times}, the noise growing downwards. Left: the data noised to t; at t = 1 the noised points are "
        "N(0, I) noise, the data forgotten. Middle: one denoising jump to E[x<sub>0</sub> | x<sub>t</sub>]. At "
        "small t it puts each point back on its mode; at t = 0.4 a noisy point could have come from either "
        f"mode and the posterior mean blends them: {_pct(j4['between'], 0)} of the jumps land between the modes "
        "(more than 3 standard deviations from both); at t = 1 they collapse towards the data's mean (cross), "
        f"{j1['to_mean']:.2f} from it on average against {j1['noisy_to_mean']:.2f} for the noised points. One "
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
        f"&asymp; {df['weight_stderr']:.3f}); MMD² compares the samples with fresh exact samples; NFE counts "
        "evaluations of the network."
    )
    page.table(
        ["sampler", "mode weights", "mode-weight error (TV)", "MMD²", "± s.e.", "NFE", "time (s)"],
        [
            [v["label"], _w(v["weights"]), v["error"], v["mmd"], v["mmd_stderr"], v["nfe"], v["wall_s"]]
            for v in df["samplers"].values()
        ],
    )
    page.figure(
        "reverse_sde",
        f"The reverse SDE (reverse-diffusion predictor and Langevin corrector, {b.pc_steps} steps) carries "
        f"{b.gif_particles} prior draws to the standardised data (grey). The background of each frame is the "
        "exact p<sub>t</sub> at its time; the frames crowd towards t = 0, where the two modes form.",
        "animation: the reverse SDE over the exact diffused density",
    )
    rk4 = df["samplers"]["ode_rk4"]
    page.figure(
        "ode_trajectories",
        f"The probability-flow ODE (rk4, {b.ode_steps} steps) carries {b.n_trajectories} prior points (crosses) "
        "to samples (red), in standardised coordinates: deterministic paths that bend towards the modes late, "
        f"when the noise is small. Of the sampler's {b.n_samples} samples, {_pct(rk4['weights'][0], 0)} reach "
        "the heavy mode.",
        "probability-flow ODE paths from prior points to samples",
    )
    dopri = df["samplers"]["ode_dopri5"]
    page.figure(
        "diffusion_samples",
        "Exact samples of the mixture (left) and samples of the learned model through the probability-flow "
        f"ODE (dopri5; right), in data units: mode weights {_w(dopri['weights'])}, MMD² {dopri['mmd']:.2g} "
        f"&plusmn; {dopri['mmd_stderr']:.2g}.",
        "exact samples beside the model's samples",
    )


# --------------------------------------------------------------------------------------------------
# 7. likelihood


def _likelihood(page: Page, results: dict, budget: Budget) -> None:
    lk = results["likelihood"]
    page.para(
        "A score has no normalising constant, yet the model defines a density: along the probability-flow ODE "
        "the log-density changes by the divergence of the velocity, so integrating from the data point to the "
        "prior gives "
        + m(r"\log p_\theta(x)")
        + " (Song et al. 2021; "
        + doc("instantaneous-change-of-variables")
        + "):"
    )
    page.equation(
        r"\log p_\varepsilon(x_\varepsilon) = \log \pi(x_1) + \int_\varepsilon^1 \nabla \cdot \tilde f(x_t, t)\, dt, "
        r"\qquad \tilde f = f - \tfrac12 g^2\, s_\theta",
        f"Solved by dopri5 (rtol = atol = 10<sup>−5</sup>), with the exact divergence, from ε = {VP_EPS:g} to "
        "1; π = N(0, I) stands in for p<sub>1</sub>; plus the log-determinant of the standardisation.",
    )
    page.para(
        f"On {lk['n_test']} fresh samples it is compared with the mixture's exact log-density at the same "
        "points, and with the closed form "
        + m(r"\mathbb{E}_p[\log p] = \sum_k w_k (\log w_k - \log 2\pi e)")
        + " of two non-overlapping unit Gaussians."
    )
    page.table(
        ["quantity", "nats"],
        [
            [markup("model: mean log p<sub>θ</sub>(x) on the test points"), lk["model_nats"]],
            ["truth: mean log p(x) on the same points", lk["exact_on_test_nats"]],
            [markup("truth: E<sub>p</sub>[log p], closed form"), lk["closed_form_nats"]],
            ["model − truth, mean over the points (± s.e.)",
             f"{lk['error_nats']:.4f} ± {lk['error_stderr']:.4f}"],
            ["mean |model − truth| per point", lk["mean_abs_error_nats"]],
            ["the same computation with the exact score: − truth (± s.e.)",
             f"{lk['pipeline_error_nats']:.2g} ± {lk['pipeline_error_stderr']:.2g}"],
            [f"solver: largest change at rtol = atol = 1e-7 ({lk['solver_points']} points)", lk["solver_max_abs_nats"]],
            ["Hutchinson (one probe) − exact divergence, mean (± s.e.)",
             f"{lk['hutchinson_minus_exact_nats']:.3f} ± {lk['hutchinson_minus_exact_stderr']:.3f}"],
            ["Hutchinson − exact, spread per point (s.d.)", lk["hutchinson_spread_nats"]],
            [f"cost: {lk['nfe']} network evaluations", f"{lk['wall_s']:.2f} s"],
        ],
    )  # fmt: skip
    sig = abs(lk["error_nats"]) / lk["error_stderr"] if lk["error_stderr"] > 0 else math.inf
    small = abs(lk["pipeline_error_nats"]) + 2 * lk["pipeline_error_stderr"] < 0.2 * abs(lk["error_nats"])
    cause = (
        "The computation itself contributes far less: the difference is the model's own error."
        if small
        else "Part of it comes from the computation itself:"
    )
    page.para(
        f"The model's log-likelihood is {lk['error_nats']:.4f} &plusmn; {lk['error_stderr']:.4f} nats per point "
        f"from the truth's ({sig:.1f} standard errors). A negative mean is what any imperfect model must give: "
        + m(r"\mathbb{E}_p[\log p_\theta(x) - \log p(x)] = -\mathrm{KL}(p \,\|\, p_\theta) \le 0")
        + f", so the mean estimates minus the divergence from the data to the model, about "
        f"{max(-lk['error_nats'], 0.0):.3f} nats; point by point the model is off by {lk['mean_abs_error_nats']:.3f} "
        f"nats on average, in both directions. {cause} Driven by the exact score "
        f"of the mixture, the same ODE, solver, small time and prior give {lk['pipeline_error_nats']:.2g} "
        f"&plusmn; {lk['pipeline_error_stderr']:.2g} nats: evaluating at t = {VP_EPS:g} (where the data are "
        f"smoothed by std(ε) = {lk['std_eps']:.1g}) and replacing p<sub>1</sub> by N(0, I) cost nothing visible "
        f"({doc('the-priors-approximation-error')}, {doc('evaluating-at-a-small-time')}). A tighter solver "
        f"tolerance moves the model's values by at most {lk['solver_max_abs_nats']:.2g} nats. The divergence is "
        "exact here (two dimensions); Hutchinson's one-probe estimate, the choice in high dimension, is unbiased "
        f"(the mean moves by {lk['hutchinson_minus_exact_nats']:.3f} &plusmn; "
        f"{lk['hutchinson_minus_exact_stderr']:.3f} nats) but would scatter each point by "
        f"{lk['hutchinson_spread_nats']:.2f} nats ({doc('exact-divergence-and-hutchinsons-estimate')})."
    )


# --------------------------------------------------------------------------------------------------
# 8. moons


def _moons(page: Page, results: dict, budget: Budget) -> None:
    b, mo = budget, results["moons"]
    kde, c2st, ref = mo["kde"], mo["c2st"], mo["c2st_reference"]
    gap = mo["test_log_likelihood_nats"] - kde["nats"]
    page.para(
        f"The same recipe on data whose density is not known: two interleaved half circles with noise of "
        f"standard deviation 0.05 ({b.n_train} points, standardised), a VP score model preconditioned as a "
        f"denoiser, trained for {b.moons_steps} steps ({mo['train_s']:.1f} s), samples by the probability-flow "
        "ODE. A picture of samples can look right while the density is wrong, and a kernel two-sample statistic "
        f"with a wide kernel can miss it (MMD² here: {mo['mmd']:.2g} &plusmn; {mo['mmd_stderr']:.2g}), so the "
        "model is checked three ways that see thin structure:"
    )
    page.raw(
        "<ul>"
        f"<li>its mean log-likelihood on {mo['n_test']} held-out points, <b>{mo['test_log_likelihood_nats']:.3f} "
        f"&plusmn; {mo['test_log_likelihood_stderr']:.3f}</b> nats, against a Gaussian kernel density estimate "
        + m(r"\hat p(x) = \frac1N \sum_i \mathcal{N}(x; x_i, h^2 I)")
        + f" with its bandwidth h = {kde['bandwidth']:.3g} chosen by 5-fold cross-validated likelihood on "
        f"{kde['cv_points']} training points, <b>{kde['nats']:.3f} &plusmn; {kde['stderr']:.3f}</b> nats: the "
        f"model is {abs(gap):.3f} nats {'above' if gap >= 0 else 'below'} it;</li>"
        f"<li>a classifier two-sample test: a 20-nearest-neighbour classifier, cross-validated, tells samples "
        f"from held-out data with accuracy <b>{c2st['accuracy']:.3f} &plusmn; {c2st['stderr']:.3f}</b>; between "
        f"two held-out sets it reaches {ref['accuracy']:.3f} &plusmn; {ref['stderr']:.3f} (0.5 is chance);</li>"
        f"<li>the share of points farther than {mo['off_arc_threshold']:.2g} (three noise standard deviations) "
        f"from both arcs: <b>{_pct(mo['off_arc_samples'])}</b> of the samples, {_pct(mo['off_arc_heldout'])} of "
        f"held-out data; and near the arcs' inner tips (within 0.25): {_pct(mo['inner_tips_samples'])} of the "
        f"samples, {_pct(mo['inner_tips_heldout'])} of the data.</li>"
        "</ul>"
    )
    page.figure(
        "moons_samples",
        f"Held-out moons (left) and {b.n_samples} model samples (right). Samples off the arcs (farther than "
        f"{mo['off_arc_threshold']:.2g} from both) are circled: {_pct(mo['off_arc_samples'])} of the samples "
        f"against {_pct(mo['off_arc_heldout'])} of the data; the inner tips hold "
        f"{_pct(mo['inner_tips_samples'])} of the samples against {_pct(mo['inner_tips_heldout'])} of the data.",
        "held-out moons beside the model's samples",
    )
    page.figure(
        "moons_density",
        f"The learned density exp(log p<sub>θ</sub>) from the probability-flow ODE on a {b.density_grid} "
        f"&times; {b.density_grid} grid, under the learned score at t = {VP_EPS:g}, with training points in red. "
        f"Its held-out log-likelihood is {mo['test_log_likelihood_nats']:.3f} nats against the KDE's "
        f"{kde['nats']:.3f}.",
        "the learned density of moons and its score",
    )


# --------------------------------------------------------------------------------------------------
# the outline, the summary and the glossary

OUTLINE: tuple[tuple[str, str, tuple[str, str] | None, Callable[[Page, dict, Budget], None]], ...] = (
    (
        "score",
        "The score of a mixture",
        (
            "The score function is the gradient of the log of the probability density function. [...] "
            "Modeling the score function does not require knowing the normalizing constant.",
            "Score Functions, Definition",
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
            "Score functions, denoising and diffusion, Score matching",
        ),
        _score_matching,
    ),
    (
        "langevin",
        "Langevin dynamics",
        (
            "As the step size ε → 0, and the number of steps K → ∞, this will result in a sample from p(x).",
            "Score Functions, Langevin Sampling",
        ),
        _langevin,
    ),
    (
        "noise",
        "Adding noise",
        (
            "By adding noise to our data, we are essentially smoothing the data distribution with a gaussian "
            "kernel. [...] The ground truth score estimates are usually −z/σ.",
            "Score Functions, Adding Noise",
        ),
        _noise,
    ),
    (
        "ncsn",
        "Noise-conditional score networks",
        (
            "We can choose L levels of noise: σ<sub>1</sub> &lt; σ<sub>2</sub> &lt; ⋯ &lt; σ<sub>L</sub>. [...] "
            "We can choose the noise levels in a geometric progression [...]. σ<sub>L</sub> can be the maximum "
            "pairwise distance between two datapoints [...] Usually, the loss weighting is λ(i) = σ<sub>i</sub>².",
            "Score Functions, Improved Score Matching",
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
            "Score functions, denoising and diffusion, Diffusion",
        ),
        _diffusion,
    ),
    (
        "likelihood",
        "Likelihood",
        (
            "With this model of the data distribution we can generate our own samples x ∼ p<sub>θ</sub>(x), and "
            "we can evaluate the likelihood p<sub>θ</sub>(x).",
            "Score functions, denoising and diffusion, introduction",
        ),
        _likelihood,
    ),
    ("moons", "Moons", None, _moons),
)


def summary(results: dict) -> list[list]:
    """The numbers that matter, one row each: quantity, value, time (s)."""
    sm, lv, nc, df, lk, mo = (results[k] for k in ("score_matching", "langevin", "ncsn", "diffusion",
                                                    "likelihood", "moons"))  # fmt: skip
    rows = [
        [f"relative Fisher divergence under p, {LABELS[k]}", v["fisher"], v["train_s"]]
        for k, v in sm["objectives"].items()
    ]
    rows += [
        [
            "share of the window the learned (ISM) field sends to the wrong mode",
            sm["basins"]["wrong_fraction"],
            "",
        ],
        ["mode-weight error (TV), naive Langevin, exact score", lv["naive"]["error"], lv["wall_s"]],
        ["mode-weight error (TV), annealed Langevin, exact score", lv["annealed"]["error"], ""],
        ["mode-weight error (TV), NCSN + naive Langevin", nc["naive"]["error"], ""],
        [
            "mode-weight error (TV), NCSN + annealed Langevin",
            nc["annealed"]["error"],
            nc["train_s"] + nc["sample_s"],
        ],
    ]
    rows += [
        [f"mode-weight error (TV), {v['label']} (NFE {v['nfe']})", v["error"], v["wall_s"]]
        for v in df["samplers"].values()
    ]
    rows += [
        ["log-likelihood, model − exact on test points (nats)", lk["error_nats"], lk["wall_s"]],
        ["the same with the exact score (nats)", lk["pipeline_error_nats"], ""],
        ["moons: held-out log-likelihood, model (nats)", mo["test_log_likelihood_nats"], mo["train_s"]],
        ["moons: held-out log-likelihood, KDE with cross-validated bandwidth (nats)", mo["kde"]["nats"], ""],
        [
            "moons: classifier two-sample accuracy, samples vs held-out (0.5 = chance)",
            mo["c2st"]["accuracy"],
            "",
        ],
        ["moons: share of samples off the arcs", mo["off_arc_samples"], ""],
        ["moons: share of held-out data off the arcs", mo["off_arc_heldout"], ""],
    ]
    return rows


def glossary(results: dict, budget: Budget) -> str:
    """The definitions of every term in the tables, as an HTML definition list."""
    terms = [
        ("nats", "Units of log-likelihood: natural logarithms (1 nat = 1/ln 2 bits)."),
        ("relative Fisher divergence",
         "E‖s<sub>θ</sub>(x) − ∇log p(x)‖² / E‖∇log p(x)‖², x drawn from p (or uniformly over the window): "
         "0 for the exact score, 1 for a model that predicts zero."),
        ("ESM, ISM, SSM, DSM",
         "Explicit, implicit (Hyvärinen), sliced and denoising score matching: the objectives of section 2."),
        ("Hutchinson",
         "Hutchinson's estimator of a trace, tr A = E<sub>v</sub>[vᵀAv] with random ±1 (Rademacher) vectors v: "
         "one backward pass instead of one per dimension, unbiased but noisy."),
        ("mode weights, mode-weight error (TV)",
         "The share of samples nearest each mixture component (by responsibility), and the total-variation "
         "distance ½ Σ<sub>k</sub> |ŵ<sub>k</sub> − w<sub>k</sub>| between those shares and the true weights "
         "0.8 / 0.2."),
        ("MMD², ± s.e.",
         "The squared maximum mean discrepancy between two sample sets (unbiased estimate, a sum of Gaussian "
         "kernels scaled to the median distance): about 0 when they come from one distribution; ± s.e. is its "
         "standard error. Its kernels are as wide as the data's spread, so it can miss thin structure (see moons)."),
        ("PC (predictor-corrector)",
         "Samplers of the reverse SDE: at each of the time steps a predictor moves from t to the next time "
         "(Euler–Maruyama, reverse diffusion or ancestral sampling), and an optional Langevin corrector step "
         "at the current time pulls the particles towards p<sub>t</sub>."),
        ("NFE", "Number of function evaluations: how many times the network was evaluated to draw the samples."),
        ("dopri5, rk4",
         "ODE solvers: Dormand–Prince 5(4), adaptive steps to a relative and absolute tolerance (rtol, atol); "
         "a fourth-order Runge–Kutta method (Kutta's 3/8 rule) on fixed steps."),
        ("KDE", "Kernel density estimate: a Gaussian bump of bandwidth h on every training point."),
        ("classifier two-sample test",
         "Train a classifier to tell two sets apart and measure its cross-validated accuracy: 0.5 means it "
         "cannot."),
        ("off the arcs", f"Farther than {results['moons']['off_arc_threshold']:.2g} (three noise standard deviations) from the noise-free half circles of moons."),
        ("± s.e.", "One standard error of the mean over the points or samples."),
        ("time (s)", "Wall time on one CPU thread."),
    ]  # fmt: skip
    items = "".join(f"<dt>{term}</dt><dd>{text}</dd>" for term, text in terms)
    return f'<dl class="terms">{items}</dl>'
