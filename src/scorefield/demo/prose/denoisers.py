"""The prose of sections 5 to 8, on models that denoise: noise-conditional score networks,
diffusion as stacked denoisers, likelihood, and moons. ``OUTLINE`` holds their entries of the
page's outline."""

from __future__ import annotations

import math

from ..page import Page, markup
from ..settings import DENOISING_TIMES, VP_EPS, Budget
from .common import Entry, doc, m, percent, weights_text

__all__ = ["OUTLINE"]


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
            [
                name,
                weights_text(nc[name]["weights"]),
                nc[name]["error"],
                nc[name]["mmd"],
                nc[name]["mmd_stderr"],
            ]
            for name in ("naive", "annealed")
        ],
    )
    page.figure(
        "ncsn_samples",
        f"Naive and annealed Langevin with the learned noise-conditional score: naive keeps "
        f"{weights_text(nc['naive']['weights'])}, annealed finds {weights_text(nc['annealed']['weights'])}; MMD² to fresh exact "
        f"samples {nc['naive']['mmd']:.2g} &plusmn; {nc['naive']['mmd_stderr']:.2g} and "
        f"{nc['annealed']['mmd']:.2g} &plusmn; {nc['annealed']['mmd_stderr']:.2g}.",
        "samples of naive and annealed Langevin with the learned score",
    )
    page.figure(
        "annealed_langevin",
        f"Annealed Langevin with the learned score, the chain of the table: {b.gif_particles} particles from the "
        f"same uniform square through the L = {L} levels, from σ<sub>L</sub> = {nc['sigma_max']:.3g} down to "
        f"σ<sub>1</sub> = {nc['sigma_min']:g}, {b.n_steps_each} steps per level. Each frame's background is the "
        "smoothed density p<sub>σ</sub> of its level, on axes that stay fixed around the data: at the largest "
        "levels p<sub>σ</sub> is one bump tens of units across and most particles wander outside the window "
        "(the title counts them); as σ falls they gather where the mass is, then settle into the two modes in "
        "proportion to their weights.",
        "animation: annealed Langevin over the smoothed density of each noise level",
    )


# --------------------------------------------------------------------------------------------------
# 6. diffusion


def _diffusion(page: Page, results: dict, budget: Budget) -> None:
    b, df = budget, results["diffusion"]
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
        f"So m(1) = {df['m1']:.4f} and std(1) = {df['std1']:.4f}: at t = 1 the data are forgotten.",
    )
    fw = df["forward"]
    page.figure(
        "forward_paths",
        f"Forward paths from the same {fw['paths']} points of the mixture (its line through the modes, "
        "standardised) with the same Brownian increments, under the VE SDE (left; σ<sub>min</sub> = "
        f"{fw['sigma_min']:g}, σ<sub>max</sub> = {fw['sigma_max']:g}) and the VP SDE (right). Shaded: the "
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
    line = df["line"]
    page.figure(
        "diffusion_1d",
        "A density over time, in one dimension: the tutorials' mixture along the line through its modes, "
        f"standardised (modes at {line['means'][0]:.2f} and {line['means'][1]:.2f}, standard deviation "
        f"{line['std']:.3f}), diffused by the VP SDE: p<sub>t</sub>(x) exactly, scaled at each t to its "
        "maximum. The VP SDE shrinks the data by m(t) = "
        f"{line['scale'][0]:.2f}, {line['scale'][1]:.2f} and {line['scale'][2]:.3f} at t = 0.25, 0.5 "
        "and 0.75 while it adds noise: by t = 0.5 the two modes have merged, and after "
        "t = 0.75 the density is all but the prior. Paths from the same "
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
        f"mode and the posterior mean blends them: {percent(j4['between'], 0)} of the jumps land between the modes "
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
            [
                v["label"],
                weights_text(v["weights"]),
                v["error"],
                v["mmd"],
                v["mmd_stderr"],
                v["nfe"],
                v["wall_s"],
            ]
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
        f"when the noise is small. Of the sampler's {b.n_samples} samples, {percent(rk4['weights'][0], 0)} reach "
        "the heavy mode.",
        "probability-flow ODE paths from prior points to samples",
    )
    dopri = df["samplers"]["ode_dopri5"]
    page.figure(
        "diffusion_samples",
        "Exact samples of the mixture (left) and samples of the learned model through the probability-flow "
        f"ODE (dopri5; right), in data units: mode weights {weights_text(dopri['weights'])}, MMD² {dopri['mmd']:.2g} "
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
        f"two held-out sets it reaches {ref['accuracy']:.3f} &plusmn; {ref['stderr']:.3f} (0.5 is chance; an "
        "accuracy a little below it is chance too, sampling noise and cross-validation's lean, see the glossary);</li>"
        f"<li>the share of points farther than {mo['off_arc_threshold']:.2g} (three noise standard deviations) "
        f"from both arcs: <b>{percent(mo['off_arc_samples'])}</b> of the samples, {percent(mo['off_arc_heldout'])} of "
        f"held-out data; and near the arcs' inner tips (within 0.25): {percent(mo['inner_tips_samples'])} of the "
        f"samples, {percent(mo['inner_tips_heldout'])} of the data.</li>"
        "</ul>"
    )
    page.figure(
        "moons_samples",
        f"Held-out moons (left) and {b.n_samples} model samples (right). Samples off the arcs (farther than "
        f"{mo['off_arc_threshold']:.2g} from both) are circled: {percent(mo['off_arc_samples'])} of the samples "
        f"against {percent(mo['off_arc_heldout'])} of the data; the inner tips hold "
        f"{percent(mo['inner_tips_samples'])} of the samples against {percent(mo['inner_tips_heldout'])} of the data.",
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
# their entries of the outline

OUTLINE: tuple[Entry, ...] = (
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
