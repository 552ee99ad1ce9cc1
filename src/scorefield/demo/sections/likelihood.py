"""7. Likelihood: the diffusion model's exact log-likelihood by the probability-flow ODE against the
mixture's, and where its error comes from."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ... import viz
from ...distributions import GaussianMixture
from ...likelihood import log_likelihood
from ...scalers import Standardizer
from ...score import ScoreModel
from ..document import Page, markup
from ..experiments import standardized_mixture
from ..settings import VP_T_MIN, Budget, Streams
from .common import Section, doc, m, mean_and_stderr

__all__ = ["ANCHOR", "OPENING", "TITLE", "LikelihoodNumbers", "compute", "write"]

ANCHOR, TITLE = "likelihood", "Likelihood"
OPENING = (
    "With this model of the data distribution we can generate our own samples x ∼ p<sub>θ</sub>(x), and "
    "we can evaluate the likelihood p<sub>θ</sub>(x).",
    "Score functions, denoising and diffusion, introduction",
)


@dataclass(frozen=True)
class LikelihoodNumbers:
    """The model's mean log-likelihood on the test points against the exact one there and the closed
    form of ``E_p[log p]``; its error (mean, standard error, mean absolute); the same computation with
    the exact score (``pipeline``); the change at a tighter solver tolerance; Hutchinson's estimate
    against the exact divergence; the cost; and ``std(ε)``."""

    model_nats: float
    exact_on_test_nats: float
    closed_form_nats: float
    error_nats: float
    error_stderr: float
    mean_abs_error_nats: float
    pipeline_error_nats: float
    pipeline_error_stderr: float
    solver_max_abs_nats: float
    solver_mean_abs_nats: float
    solver_points: int
    solver_tight_nfe: int
    hutchinson_minus_exact_nats: float
    hutchinson_minus_exact_stderr: float
    hutchinson_spread_nats: float
    nfe: int
    wall_s: float
    n_test: int
    std_eps: float


def _expected_log_prob_separated(mixture: GaussianMixture) -> float:
    """``E_p[log p]`` of a mixture whose components do not overlap: ``Σ_k w_k (log w_k - ½ log det(2πe Σ_k))``.

    Exact up to the overlap of the components, which for ``two_gaussians()`` (modes 14 standard
    deviations apart) is far below float precision.
    """
    w = mixture.weights.double()
    return float((w * (w.log() - mixture.to(torch.float64).component_entropies())).sum())


def compute(
    mixture: GaussianMixture, model: ScoreModel, scaler: Standardizer, budget: Budget, streams: Streams
) -> Section[LikelihoodNumbers]:
    """7. The exact log-likelihood of ``model`` (trained on data standardised by ``scaler``) by the
    probability-flow ODE on fresh samples, against the mixture's exact log-density at the same
    points and the closed form of ``E_p[log p]``; and the error taken apart: the same computation
    with the exact score (what the solver, the small time ``VP_T_MIN`` and the prior contribute), the
    learned model at a tighter solver tolerance, and Hutchinson's estimate in place of the exact
    divergence."""
    b = budget
    sde = model.sde
    x = mixture.sample(b.n_test, generator=streams.generator(70))
    z = scaler.transform(x)
    start = time.perf_counter()
    logp_z, info = log_likelihood(model, sde, z, t_eval=VP_T_MIN)
    wall = time.perf_counter() - start
    logp = logp_z.double() + scaler.log_det
    exact = mixture.to(torch.float64).log_prob(x.double())
    diff = logp - exact
    error, error_stderr = mean_and_stderr(diff)
    standardised = standardized_mixture(mixture.to(torch.float64), scaler)
    exact_score = viz.exact_time_score(standardised, sde)
    pipeline_z, _ = log_likelihood(exact_score, sde, z.double(), t_eval=VP_T_MIN)
    pipeline, pipeline_stderr = mean_and_stderr(pipeline_z + scaler.log_det.double() - exact)
    n = b.n_solver_check
    tight_z, tight_info = log_likelihood(model, sde, z[:n], t_eval=VP_T_MIN, rtol=1e-7, atol=1e-7)
    solver = (logp_z[:n].double() - tight_z.double()).abs()
    hutchinson_z, _ = log_likelihood(model, sde, z, divergence="hutchinson", t_eval=VP_T_MIN,
                                     generator=streams.generator(71))  # fmt: skip
    hutch, hutch_stderr = mean_and_stderr(hutchinson_z.double() - logp_z.double())
    numbers = LikelihoodNumbers(
        model_nats=float(logp.mean()),
        exact_on_test_nats=float(exact.mean()),
        closed_form_nats=_expected_log_prob_separated(mixture),
        error_nats=error,
        error_stderr=error_stderr,
        mean_abs_error_nats=float(diff.abs().mean()),
        pipeline_error_nats=pipeline,
        pipeline_error_stderr=pipeline_stderr,
        solver_max_abs_nats=float(solver.max()),
        solver_mean_abs_nats=float(solver.mean()),
        solver_points=n,
        solver_tight_nfe=tight_info["nfe"],
        hutchinson_minus_exact_nats=hutch,
        hutchinson_minus_exact_stderr=hutch_stderr,
        hutchinson_spread_nats=float((hutchinson_z.double() - logp_z.double()).std()),
        nfe=info["nfe"],
        wall_s=wall,
        n_test=b.n_test,
        std_eps=float(sde.marginal(VP_T_MIN)[1]),
    )
    return Section(numbers, {})


def write(page: Page, lk: LikelihoodNumbers, budget: Budget) -> None:
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
        f"Solved by dopri5 (rtol = atol = 10<sup>−5</sup>), with the exact divergence, from ε = {VP_T_MIN:g} to "
        "1; π = N(0, I) stands in for p<sub>1</sub>; plus the log-determinant of the standardisation.",
    )
    page.para(
        f"On {lk.n_test} fresh samples it is compared with the mixture's exact log-density at the same "
        "points, and with the closed form "
        + m(r"\mathbb{E}_p[\log p] = \sum_k w_k (\log w_k - \log 2\pi e)")
        + " of two non-overlapping unit Gaussians."
    )
    page.table(
        ["quantity", "nats"],
        [
            [markup("model: mean log p<sub>θ</sub>(x) on the test points"), lk.model_nats],
            ["truth: mean log p(x) on the same points", lk.exact_on_test_nats],
            [markup("truth: E<sub>p</sub>[log p], closed form"), lk.closed_form_nats],
            ["model − truth, mean over the points (± s.e.)",
             f"{lk.error_nats:.4f} ± {lk.error_stderr:.4f}"],
            ["mean |model − truth| per point", lk.mean_abs_error_nats],
            ["the same computation with the exact score: − truth (± s.e.)",
             f"{lk.pipeline_error_nats:.2g} ± {lk.pipeline_error_stderr:.2g}"],
            [f"solver: largest change at rtol = atol = 1e-7 ({lk.solver_points} points)", lk.solver_max_abs_nats],
            ["Hutchinson (one probe) − exact divergence, mean (± s.e.)",
             f"{lk.hutchinson_minus_exact_nats:.3f} ± {lk.hutchinson_minus_exact_stderr:.3f}"],
            ["Hutchinson − exact, spread per point (s.d.)", lk.hutchinson_spread_nats],
            [f"cost: {lk.nfe} network evaluations", f"{lk.wall_s:.2f} s"],
        ],
    )  # fmt: skip
    sig = abs(lk.error_nats) / lk.error_stderr if lk.error_stderr > 0 else math.inf
    small = abs(lk.pipeline_error_nats) + 2 * lk.pipeline_error_stderr < 0.2 * abs(lk.error_nats)
    cause = (
        "The computation itself contributes far less: the difference is the model's own error."
        if small
        else "Part of it comes from the computation itself:"
    )
    page.para(
        f"The model's log-likelihood is {lk.error_nats:.4f} &plusmn; {lk.error_stderr:.4f} nats per point "
        f"from the truth's ({sig:.1f} standard errors). A negative mean is what any imperfect model must give: "
        + m(r"\mathbb{E}_p[\log p_\theta(x) - \log p(x)] = -\mathrm{KL}(p \,\|\, p_\theta) \le 0")
        + f", so the mean estimates minus the divergence from the data to the model, about "
        f"{max(-lk.error_nats, 0.0):.3f} nats; point by point the model is off by {lk.mean_abs_error_nats:.3f} "
        f"nats on average, in both directions. {cause} Driven by the exact score "
        f"of the mixture, the same ODE, solver, small time and prior give {lk.pipeline_error_nats:.2g} "
        f"&plusmn; {lk.pipeline_error_stderr:.2g} nats: evaluating at t = {VP_T_MIN:g} (where the data are "
        f"smoothed by std(ε) = {lk.std_eps:.1g}) and replacing p<sub>1</sub> by N(0, I) cost nothing visible "
        f"({doc('the-priors-approximation-error')}, {doc('evaluating-at-a-small-time')}). A tighter solver "
        f"tolerance moves the model's values by at most {lk.solver_max_abs_nats:.2g} nats. The divergence is "
        "exact here (two dimensions); Hutchinson's one-probe estimate, the choice in high dimension, is unbiased "
        f"(the mean moves by {lk.hutchinson_minus_exact_nats:.3f} &plusmn; "
        f"{lk.hutchinson_minus_exact_stderr:.3f} nats) but would scatter each point by "
        f"{lk.hutchinson_spread_nats:.2f} nats ({doc('exact-divergence-and-hutchinsons-estimate')})."
    )
