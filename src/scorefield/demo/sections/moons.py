"""8. Moons: the diffusion of section 6 on data whose density is unknown, checked by what its pictures
show: the held-out log-likelihood against a kernel density estimate, a classifier two-sample test,
and the share of samples off the arcs."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ... import datasets, viz
from ...metrics import mmd
from ...samplers import sample_ode
from ..document import Page
from ..experiments import (
    KdeBaseline,
    TwoSampleTest,
    classifier_two_sample_test,
    distance_to_arcs,
    kde_log_likelihood,
    near_inner_tips,
)
from ..models import LearnedDensity, train_vp
from ..settings import MOONS_EXTENT, MOONS_NOISE, VP_T_MIN, Budget, Streams
from .common import Section, m, mean_and_stderr, percent

__all__ = ["ANCHOR", "OFF_ARC", "OPENING", "TITLE", "MoonsNumbers", "compute", "write"]

ANCHOR, TITLE = "moons", "Moons"
OPENING = None


@dataclass(frozen=True)
class MoonsNumbers:
    """Training (time, steps); the MMD² of samples to held-out data; the held-out log-likelihood
    against the kernel density estimate's; the classifier two-sample test of samples and, for scale,
    of held-out data against more data; the shares of samples and of held-out data off the arcs
    (farther than ``off_arc_threshold``) and near the inner tips; the times of the checks."""

    train_s: float
    steps: int
    mmd: float
    mmd_stderr: float
    test_log_likelihood_nats: float
    test_log_likelihood_stderr: float
    kde: KdeBaseline
    c2st: TwoSampleTest
    c2st_reference: TwoSampleTest
    off_arc_threshold: float
    off_arc_samples: float
    off_arc_heldout: float
    inner_tips_samples: float
    inner_tips_heldout: float
    density_s: float
    checks_s: float
    n_test: int


OFF_ARC = 3 * MOONS_NOISE  # a moons point farther than this from both arcs is "off the arcs"


def compute(budget: Budget, streams: Streams) -> Section[MoonsNumbers]:
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
    density_figure.axes[0].set_title(f"learned density and score, t = {VP_T_MIN:g}", fontsize="medium")
    density_figure.set_size_inches(4.6, 3.6)
    density_s = time.perf_counter() - start
    start = time.perf_counter()
    kde = kde_log_likelihood(data, test, b.kde_points, streams.seed)
    c2st = classifier_two_sample_test(samples, heldout, streams.seed)
    reference = classifier_two_sample_test(more, heldout, streams.seed)
    off = distance_to_arcs(samples) > OFF_ARC
    off_data = distance_to_arcs(heldout) > OFF_ARC
    checks_s = time.perf_counter() - start
    numbers = MoonsNumbers(
        train_s=wall,
        steps=b.moons_steps,
        mmd=sample_mmd,
        mmd_stderr=sample_stderr,
        test_log_likelihood_nats=loglik,
        test_log_likelihood_stderr=loglik_stderr,
        kde=kde,
        c2st=c2st,
        c2st_reference=reference,
        off_arc_threshold=OFF_ARC,
        off_arc_samples=float(off.double().mean()),
        off_arc_heldout=float(off_data.double().mean()),
        inner_tips_samples=near_inner_tips(samples),
        inner_tips_heldout=near_inner_tips(heldout),
        density_s=density_s,
        checks_s=checks_s,
        n_test=int(test.shape[0]),
    )
    shown = viz.plot_samples(samples, heldout)
    ax = shown.axes[1]
    if off.any():
        ax.scatter(*samples[off].T, s=22, facecolors="none", edgecolors="k", linewidths=0.8,
                   label=f"off the arcs (> {OFF_ARC:g})")  # fmt: skip
        ax.legend(loc="upper right", fontsize="x-small")
    shown.axes[0].set_title(f"held-out data ({len(heldout)})")
    figures = {"moons_samples": shown, "moons_density": density_figure}
    return Section(numbers, figures)


def write(page: Page, mo: MoonsNumbers, budget: Budget) -> None:
    b = budget
    kde, c2st, ref = mo.kde, mo.c2st, mo.c2st_reference
    gap = mo.test_log_likelihood_nats - kde.nats
    page.para(
        f"The same recipe on data whose density is not known: two interleaved half circles with noise of "
        f"standard deviation 0.05 ({b.n_train} points, standardised), a VP score model preconditioned as a "
        f"denoiser, trained for {b.moons_steps} steps ({mo.train_s:.1f} s), samples by the probability-flow "
        "ODE. A picture of samples can look right while the density is wrong, and a kernel two-sample statistic "
        f"with a wide kernel can miss it (MMD² here: {mo.mmd:.2g} &plusmn; {mo.mmd_stderr:.2g}), so the "
        "model is checked three ways that see thin structure:"
    )
    page.raw(
        "<ul>"
        f"<li>its mean log-likelihood on {mo.n_test} held-out points, <b>{mo.test_log_likelihood_nats:.3f} "
        f"&plusmn; {mo.test_log_likelihood_stderr:.3f}</b> nats, against a Gaussian kernel density estimate "
        + m(r"\hat p(x) = \frac1N \sum_i \mathcal{N}(x; x_i, h^2 I)")
        + f" with its bandwidth h = {kde.bandwidth:.3g} chosen by 5-fold cross-validated likelihood on "
        f"{kde.cv_points} training points, <b>{kde.nats:.3f} &plusmn; {kde.stderr:.3f}</b> nats: the "
        f"model is {abs(gap):.3f} nats {'above' if gap >= 0 else 'below'} it;</li>"
        f"<li>a classifier two-sample test: a 20-nearest-neighbour classifier, cross-validated, tells samples "
        f"from held-out data with accuracy <b>{c2st.accuracy:.3f} &plusmn; {c2st.stderr:.3f}</b>; between "
        f"two held-out sets it reaches {ref.accuracy:.3f} &plusmn; {ref.stderr:.3f} (0.5 is chance; an "
        "accuracy a little below it is chance too, sampling noise and cross-validation's lean, see the glossary);</li>"
        f"<li>the share of points farther than {mo.off_arc_threshold:.2g} (three noise standard deviations) "
        f"from both arcs: <b>{percent(mo.off_arc_samples)}</b> of the samples, {percent(mo.off_arc_heldout)} of "
        f"held-out data; and near the arcs' inner tips (within 0.25): {percent(mo.inner_tips_samples)} of the "
        f"samples, {percent(mo.inner_tips_heldout)} of the data.</li>"
        "</ul>"
    )
    page.figure(
        "moons_samples",
        f"Held-out moons (left) and {b.n_samples} model samples (right). Samples off the arcs (farther than "
        f"{mo.off_arc_threshold:.2g} from both) are circled: {percent(mo.off_arc_samples)} of the samples "
        f"against {percent(mo.off_arc_heldout)} of the data; the inner tips hold "
        f"{percent(mo.inner_tips_samples)} of the samples against {percent(mo.inner_tips_heldout)} of the data.",
        "held-out moons beside the model's samples",
    )
    page.figure(
        "moons_density",
        f"The learned density exp(log p<sub>θ</sub>) from the probability-flow ODE on a {b.density_grid} "
        f"&times; {b.density_grid} grid, under the learned score at t = {VP_T_MIN:g}, with training points in red. "
        f"Its held-out log-likelihood is {mo.test_log_likelihood_nats:.3f} nats against the KDE's "
        f"{kde.nats:.3f}.",
        "the learned density of moons and its score",
    )
