"""Probability-flow log-likelihoods against the closed form: exact vs Hutchinson divergence, dopri5 tolerances.

The score is the exact score of a diffused Gaussian mixture, so ``log_likelihood`` should return the
mixture's exact ``log p_eps(x)`` (``mixture.diffuse(sde, eps).log_prob``) up to the ODE solver's error,
the Hutchinson estimator's noise and the prior's mismatch with ``p_1`` (negligible for VP). Errors are
in nats per example; wall times are for the whole batch, taken in the same run.
"""

from __future__ import annotations

import time

import torch

from scorefield.distributions import GaussianMixture
from scorefield.likelihood import log_likelihood
from scorefield.sde import VPSDE

from .bench_samplers import ExactScore, target
from .common import markdown_table, one_thread, write_results

EPS = 1e-5


def mixture_in(dim: int) -> GaussianMixture:
    """The 2-D target, or for ``dim > 2`` three modes at random places with unit-ish covariances."""
    if dim == 2:
        return target()
    g = torch.Generator().manual_seed(dim)
    means = 2.5 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    covs = (0.5 * torch.eye(dim, dtype=torch.float64)).expand(3, dim, dim).clone()
    return GaussianMixture(means, covs, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))


def evaluate(score_fn, sde, x, truth, **options) -> dict:
    start = time.perf_counter()
    logp, info = log_likelihood(
        score_fn, sde, x, t_eval=EPS, generator=torch.Generator().manual_seed(0), **options
    )
    wall = time.perf_counter() - start
    error = logp - truth
    return {
        "mae": float(error.abs().mean()),
        "bias": float(error.mean()),
        "stderr": float(info["stderr"].mean()),
        "nfe": info["nfe"],
        "wall": wall,
    }


@one_thread
def main(quick: bool = False) -> None:
    n = 16 if quick else 128
    dims = [2] if quick else [2, 16]
    probes = [1, 4] if quick else [1, 4, 16]
    tolerances = [1e-3, 1e-5] if quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    sde = VPSDE()
    sections = []
    header = [
        "divergence",
        "mean abs error (nats)",
        "mean error",
        "mean reported stderr",
        "NFE",
        "wall s",
        "time / exact",
    ]
    for dim in dims:
        mixture = mixture_in(dim)
        x = mixture.sample(n, torch.Generator().manual_seed(1))
        truth = mixture.diffuse(sde, EPS).log_prob(x)
        score_fn = ExactScore(mixture).at_time(sde)
        evaluate(score_fn, sde, x[:2], truth[:2], rtol=1e-2, atol=1e-2)  # warm-up
        runs = {"exact": evaluate(score_fn, sde, x, truth)}
        for p in probes:
            runs[f"hutchinson, {p} probe{'s' * (p > 1)}"] = evaluate(
                score_fn, sde, x, truth, divergence="hutchinson", n_probes=p
            )
        exact_wall = runs["exact"]["wall"]
        rows = [
            [name, r["mae"], r["bias"], r["stderr"], r["nfe"], r["wall"], r["wall"] / exact_wall]
            for name, r in runs.items()
        ]
        sections.append(
            (
                f"d = {dim}: exact vs Hutchinson divergence (dopri5, rtol = atol = 1e-5)",
                markdown_table(header, rows),
            )
        )
    mixture = mixture_in(2)
    x = mixture.sample(n, torch.Generator().manual_seed(1))
    truth = mixture.diffuse(sde, EPS).log_prob(x)
    score_fn = ExactScore(mixture).at_time(sde)
    rows = []
    for tol in tolerances:
        r = evaluate(score_fn, sde, x, truth, rtol=tol, atol=tol)
        rows.append([f"{tol:g}", r["mae"], r["bias"], r["nfe"], r["wall"]])
    sections.append(
        (
            "d = 2: dopri5 tolerance (exact divergence)",
            markdown_table(["rtol = atol", "mean abs error (nats)", "mean error", "NFE", "wall s"], rows),
        )
    )
    notes = f"""
{n} points drawn from each mixture (VP SDE, eps = {EPS:g}); the truth is the closed-form log-density of the
mixture diffused to eps. "mean reported stderr": the standard error that log_likelihood reports for
Hutchinson (mean over points; NaN for one probe set, where it cannot be estimated). The probe sets are
integrated along one shared path, so NFE does not grow with the probes; the cost of each evaluation does.
One thread.
"""
    write_results("likelihood", "Likelihood accuracy against cost", sections, notes)
