"""The demo's page: the introduction, each section in order (its heading, the tutorial's words that open
it, and what its ``write`` adds), the summary table, the glossary of its terms, and the HTML around them.

Every number printed comes from the results; a caption that states what a figure shows states it
from the numbers computed with it. The equations are written in the tutorials' notation (noise
levels ascending, ``σ_1 < … < σ_L``, as the score-functions tutorial orders them), corrected where
the tutorials slip; the corrections are named where they occur. The library's own conventions are
in ``docs/math.md``, which the text cites by section.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from .document import CSS, Page
from .mathml import tex
from .sections import diffusion, langevin, likelihood, moons, ncsn, noise, score, score_matching
from .sections.common import LABELS, Figures
from .sections.diffusion import DiffusionNumbers
from .sections.langevin import LangevinNumbers
from .sections.likelihood import LikelihoodNumbers
from .sections.moons import MoonsNumbers
from .sections.ncsn import NcsnNumbers
from .sections.noise import NoiseNumbers
from .sections.score import ScoreNumbers
from .sections.score_matching import ScoreMatchingNumbers
from .settings import Budget

__all__ = ["INTRODUCTION", "OUTLINE", "Results", "glossary", "render", "summary"]

OUTLINE = (score, score_matching, langevin, noise, ncsn, diffusion, likelihood, moons)
"""The page's sections in order."""

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


@dataclass(frozen=True)
class Results:
    """Every section's numbers, the wall time of each section and in all (``wall_s``), and the run's
    settings: ``results.json``, as ``dataclasses.asdict`` writes it."""

    score: ScoreNumbers
    score_matching: ScoreMatchingNumbers
    langevin: LangevinNumbers
    noise: NoiseNumbers
    ncsn: NcsnNumbers
    diffusion: DiffusionNumbers
    likelihood: LikelihoodNumbers
    moons: MoonsNumbers
    wall_s: dict[str, float]
    settings: dict


def summary(results: Results) -> list[list]:
    """The numbers that matter, one row each: quantity, value, time (s)."""
    r = results
    sm, lv, nc, df, lk, mo = r.score_matching, r.langevin, r.ncsn, r.diffusion, r.likelihood, r.moons
    rows = [
        [f"relative Fisher divergence under p, {LABELS[k]}", v.fisher, v.train_s]
        for k, v in sm.objectives.items()
    ]
    rows += [
        [
            "share of the window the learned (ISM) field sends to the wrong mode",
            sm.basins.wrong_fraction,
            "",
        ],
        ["mode-weight error (TV), naive Langevin, exact score", lv.naive.error, lv.wall_s],
        ["mode-weight error (TV), annealed Langevin, exact score", lv.annealed.error, ""],
        ["mode-weight error (TV), NCSN + naive Langevin", nc.naive.error, ""],
        [
            "mode-weight error (TV), NCSN + annealed Langevin",
            nc.annealed.error,
            nc.train_s + nc.sample_s,
        ],
    ]
    rows += [
        [f"mode-weight error (TV), {v.label} (NFE {v.nfe})", v.error, v.wall_s] for v in df.samplers.values()
    ]
    rows += [
        ["log-likelihood, model − exact on test points (nats)", lk.error_nats, lk.wall_s],
        ["the same with the exact score (nats)", lk.pipeline_error_nats, ""],
        ["moons: held-out log-likelihood, model (nats)", mo.test_log_likelihood_nats, mo.train_s],
        ["moons: held-out log-likelihood, KDE with cross-validated bandwidth (nats)", mo.kde.nats, ""],
        [
            "moons: classifier two-sample accuracy, samples vs held-out (0.5 = chance)",
            mo.c2st.accuracy,
            "",
        ],
        ["moons: share of samples off the arcs", mo.off_arc_samples, ""],
        ["moons: share of held-out data off the arcs", mo.off_arc_heldout, ""],
    ]
    return rows


def glossary(off_arc_threshold: float) -> str:
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
         "standard error. Being unbiased, the estimate scatters around its true value, so when that value is 0 "
         "half the estimates are negative: a negative MMD² is sampling noise, and a value within about two "
         "standard errors of 0, of either sign, means no difference was detected. Its kernels are as wide as "
         "the data's spread, so it can miss thin structure (see moons)."),
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
         "cannot. An accuracy a little below 0.5 is no better than 0.5: it is sampling noise (within about two "
         "standard errors of chance), and cross-validation leans below chance besides, since holding a point "
         "out leaves its own set one point short in the training folds, so a nearest-neighbour vote tips, "
         "slightly, towards the other set."),
        ("off the arcs", f"Farther than {off_arc_threshold:.2g} (three noise standard deviations) from the noise-free half circles of moons."),
        ("± s.e.", "One standard error of the mean over the points or samples."),
        ("time (s)", "Wall time on one CPU thread."),
    ]  # fmt: skip
    items = "".join(f"<dt>{term}</dt><dd>{text}</dd>" for term, text in terms)
    return f'<dl class="terms">{items}</dl>'


def render(out: Path, results: Results, figures: Figures, budget: Budget) -> str:
    """The page of ``results`` and the sections' ``figures`` by name, each PNG written to ``out``."""
    page = Page(out, figures)
    r = results
    numbers = (r.score, r.score_matching, r.langevin, r.noise, r.ncsn, r.diffusion, r.likelihood, r.moons)
    for number, (section, shown) in enumerate(zip(OUTLINE, numbers, strict=True), start=1):
        page.heading(f"{number}. {section.TITLE}", section.ANCHOR)
        if section.OPENING is not None:
            page.quote(*section.OPENING)
        section.write(page, shown, budget)
    page.heading(f"{len(OUTLINE) + 1}. The numbers", "numbers")
    page.para(
        "The numbers that matter, from every section, with the wall time of the work behind each "
        "(one CPU thread). Every number on this page is also in <code>results.json</code>; the terms are "
        'defined <a href="#terms">below</a>.'
    )
    page.table(["quantity", "value", "time (s)"], summary(results))
    page.heading("What the terms mean", "terms", level=3)
    page.raw(glossary(r.moons.off_arc_threshold))
    wall, settings = r.wall_s, r.settings
    contents = (
        "".join(f'<li><a href="#{s.ANCHOR}">{html.escape(s.TITLE)}</a></li>' for s in OUTLINE)
        + '<li><a href="#numbers">The numbers</a></li>'
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>scorefield demo: score functions, denoising and diffusion</title>
<style>{CSS}</style>
</head>
<body>
<h1>Score functions, denoising and diffusion</h1>
<p class="meta">scorefield demo{" (quick)" if settings["quick"] else ""}: seed {settings["seed"]},
one CPU thread, torch {html.escape(settings["torch"])}, {wall["total"]:.0f} s in all.
Every number below is also in <code>results.json</code>; the formulas are those of the project's
<code>docs/math.md</code>.</p>
{INTRODUCTION}
<ol>{contents}</ol>
{"".join(page.parts)}
</body>
</html>
"""
