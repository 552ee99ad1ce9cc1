"""The prose of sections 1 to 4, on the tutorials' mixture: the score, score matching, Langevin
dynamics and adding noise. ``OUTLINE`` holds their entries of the page's outline."""

from __future__ import annotations

from ..page import Page
from ..settings import Budget
from .common import LABELS, Entry, doc, m, percent, weights_text

__all__ = ["OUTLINE"]


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
        r"s(x) = \nabla_x \log p(x), \qquad p_\theta(x) = \frac{e^{-f_\theta(x)}}{Z_\theta} \quad \Rightarrow \quad "
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
    bumps = sc["bumps"]
    page.para(
        "Where, then, are the sinks at the data? Implicit score matching is fitted to samples, not to p, and "
        "what samples have is their own density, a spike at each point. Smoothed by a Gaussian bump of width "
        f"σ = {bumps['sigma']:g} on each point (what denoising score matching learns from them at that noise), "
        "its score flows into every point, and the points stand out as sinks:"
    )
    page.figure(
        "score_divergence_data",
        "The divergence of the score of the 200 samples above, each smoothed by a Gaussian bump of width "
        f"σ = {bumps['sigma']:g}. Look at the black points: each sits in a blue sink (median "
        f"{bumps['at_points_median']:.3g} at the points; a lone bump's is −d/σ² = {bumps['single_bump']:.3g}, "
        "shallower where bumps overlap), and red sources fill the gaps between them (up to "
        f"{bumps['max']:.3g}), where the field points apart towards different points. This is the picture of "
        'the tutorial\'s "the score should be a sink at the data": it holds for the density of the samples '
        "a network sees; the figure above is the limit it approaches as the samples grow and σ shrinks.",
        "divergence of the smoothed samples' score: a sink at every sample, sources between them",
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
        r"J_{\text{ESM}}(\theta) = \tfrac12\, \mathbb{E}_{p(x)} \|s_\theta(x) - \nabla_x \log p(x)\|^2 \quad "
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
            f"From {percent(wrong)} of the window (red), gradient ascent along the learned field ends at the other "
            f"mode than along the true field: a band along the boundary, no nearer than "
            f"{basins['wrong_min_distance']:.1f} to either mode, where the training data never go; "
            f"{percent(basins['wrong_from_heavy'] if heavy else 1 - basins['wrong_from_heavy'], 0)} of it belongs to "
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
    shown, err = objectives["ism_exact"], sm["error"]
    page.figure(
        "score_error",
        "The error ‖s<sub>θ</sub> − ∇log p‖ of the same model. Left: small inside the outlines that hold "
        "50/90/99% of the mass (cyan), and largest along the boundary between the modes (up to "
        f"{err['plane_max']:.2g}; the median over the window is {err['plane_median']:.2g}), where the true "
        "score turns abruptly from one mode's field to the other's and the network smooths the turn. Far from "
        "the data the error is not uniformly large: in the corners beyond each mode, where no sample lies, it "
        f"is at most {err['corners']:.2g}, because there the true score is almost the mode's own linear field, "
        "which the network carries on. What the data leave unconstrained is wrong where the true field is "
        "hard to guess, not merely where it is far. Right: the error at every grid point against log p there: "
        "it tends to grow as the density falls, with a wide spread. Its relative Fisher divergence is "
        f"{shown['fisher']:.2g} under p and {shown['fisher_plane']:.2g} uniformly over the window.",
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
        f"{percent(lv['gif_start_upper'], 0)} of them start on the light mode's side of the diagonal, and end in "
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
            [f"naive Langevin ({b.langevin_steps} steps)", weights_text(lv["naive"]["weights"]), weights_text(truth),
             lv["naive"]["error"]],
            [f"annealed Langevin ({b.n_steps_each} steps per level)", weights_text(lv["annealed"]["weights"]), weights_text(truth),
             lv["annealed"]["error"]],
        ],
    )  # fmt: skip
    page.figure(
        "naive_vs_annealed",
        f"Naive and annealed Langevin with the exact score, from one uniform start. The naive chain keeps "
        f"about the split of its starting points ({weights_text(lv['naive']['weights'])}); annealing recovers "
        f"{weights_text(lv['annealed']['weights'])} against the true {weights_text(truth)}.",
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
# their entries of the outline

OUTLINE: tuple[Entry, ...] = (
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
)
