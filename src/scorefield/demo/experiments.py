"""The demo's experiments that are more than a sampler call: the score-functions tutorial's
"problems with naive Langevin sampling" (naive and annealed Langevin chains from one uniform start,
driven by the exact score of the smoothed mixture or by a learned noise-conditional score), the
basins a score field sends points to, the mixture seen in other coordinates (standardised, or
along a line), and the checks of a model of moons that see what its pictures show: the distance
of samples from the arcs, a kernel density estimate with a cross-validated bandwidth, and a
classifier two-sample test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.neighbors import KernelDensity, KNeighborsClassifier

from ..distributions import GaussianMixture
from ..langevin import annealed_langevin, langevin
from ..noise import geometric_sigmas
from ..scalers import Standardizer
from ..viz import NoiseScoreFn, at_level

__all__ = [
    "KdeBaseline",
    "TwoSampleTest",
    "classifier_two_sample_test",
    "distance_to_arcs",
    "flow_basins",
    "kde_log_likelihood",
    "line_mixture",
    "moons_arcs",
    "near_inner_tips",
    "run_naive_vs_annealed",
    "standardized_mixture",
]


def run_naive_vs_annealed(
    mixture: GaussianMixture,
    n: int = 1000,
    noise_score_fn: NoiseScoreFn | None = None,
    sigmas: torch.Tensor | None = None,
    step_size: float = 0.05,
    n_steps: int = 500,
    annealed_step_size: float | None = None,
    n_steps_each: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The score-functions tutorial's "problems with naive Langevin sampling": naive and annealed chains from one uniform start.

    ``x_init`` is uniform over a square holding every mode of ``mixture`` with 3 standard deviations
    to spare (docs/math.md#naive-versus-annealed-langevin-on-separated-modes). The naive chain follows the score at the smallest level ``sigmas[-1]``; the annealed
    chain descends the geometric ``sigmas`` (default 20 levels from the width of that square down to
    0.01) with ``annealed_step_size`` (default ``0.1 σ_L²``: every step ``α_i`` is at most a tenth of the
    smoothed variance ``1 + σ_i²``, stable, and long enough to mix at each level). The score at
    level ``σ`` is ``noise_score_fn(x, σ[B])``, by default the exact score of the smoothed mixture
    ``p * N(0, σ²I)`` (``mixture.smooth(σ).score``; docs/math.md#smoothing-and-diffusion), so the
    naive chain then follows the exact ``∇log p`` but for a ``σ_L`` of 0.01.

    Returns ``(x_init, naive, annealed)``, each ``[n, d]``.
    """
    means, covs = mixture.means, mixture.covs
    spread = torch.diagonal(covs, dim1=-2, dim2=-1).sqrt().max()
    lo, hi = float(means.min() - 3 * spread), float(means.max() + 3 * spread)
    if sigmas is None:
        sigmas = geometric_sigmas(hi - lo, 0.01, 20, dtype=means.dtype)
    sigmas = torch.as_tensor(sigmas, dtype=means.dtype)
    score = (
        (lambda x, sigma: mixture.smooth(float(sigma[0])).score(x))
        if noise_score_fn is None
        else noise_score_fn
    )
    annealed_step_size = 0.1 * float(sigmas[-1]) ** 2 if annealed_step_size is None else annealed_step_size
    x_init = lo + (hi - lo) * torch.rand(n, mixture.dim, generator=generator, dtype=means.dtype)
    naive, _ = langevin(
        at_level(score, float(sigmas[-1])), x_init, n_steps, step_size=step_size, generator=generator
    )
    annealed, _ = annealed_langevin(
        score, x_init, sigmas, n_steps_each=n_steps_each, step_size=annealed_step_size, generator=generator
    )
    return x_init, naive, annealed


@torch.no_grad()
def flow_basins(
    score_fn,
    points: torch.Tensor,
    modes: torch.Tensor,
    step: float = 0.1,
    n_steps: int = 300,
    radius: float = 2.0,
) -> torch.Tensor:
    """Which mode each of ``points`` flows to along the score, ``x <- x + step s(x)`` (gradient
    ascent on ``log p``, Langevin without its noise): the index into ``modes [K, d]`` of the mode
    within ``radius`` of where it ends after ``n_steps`` steps, or -1 when it ends near none."""
    x = points.clone()
    for _ in range(n_steps):
        x = x + step * score_fn(x)
        x = torch.where(torch.isfinite(x), x, torch.full_like(x, 1e6))
    distance = torch.cdist(x.double(), modes.double())
    nearest = distance.argmin(1)
    return torch.where(distance.min(1).values <= radius, nearest, torch.full_like(nearest, -1))


def standardized_mixture(mixture: GaussianMixture, scaler: Standardizer) -> GaussianMixture:
    """``mixture`` in the coordinates ``z = (x - mean) / std`` of ``scaler``: exact, as an affine map
    of a Gaussian mixture is a Gaussian mixture."""
    mean, std = (v.to(mixture.means) for v in (scaler.mean, scaler.std))
    return mixture.affine(torch.diag(1 / std), -mean / std)


def line_mixture(
    mixture: GaussianMixture, direction: torch.Tensor, standardize: bool = True
) -> GaussianMixture:
    """The 1-D mixture of ``u = eᵀx`` for ``x ~ mixture`` and the unit vector ``e`` along
    ``direction``; with ``standardize``, of ``(u - E u) / std(u)``."""
    e = (direction / torch.linalg.norm(direction)).to(mixture.means)
    line = mixture.affine(e[None])
    if not standardize:
        return line
    spread = line.covariance().sqrt()  # [1, 1]
    return line.affine(1 / spread, -line.mean() / spread[0])


def moons_arcs(n: int = 2000) -> torch.Tensor:
    """``2n`` points along the two noise-free half circles of ``datasets.moons``: ``[2n, 2]``."""
    angle = torch.linspace(0.0, math.pi, n, dtype=torch.float64)
    upper = torch.stack([angle.cos() - 0.5, angle.sin() - 0.25], 1)
    lower = torch.stack([0.5 - angle.cos(), 0.25 - angle.sin()], 1)
    return torch.cat([upper, lower])


def distance_to_arcs(x: torch.Tensor) -> torch.Tensor:
    """Each point's distance to the nearest point of the moons' noise-free arcs: ``[N]``."""
    return torch.cdist(x.double(), moons_arcs()).min(1).values


# the ends of the two arcs that lie inside the other arc's bend: the upper arc's right end and
# the lower arc's left end
INNER_TIPS = torch.tensor([[0.5, -0.25], [-0.5, 0.25]], dtype=torch.float64)


def near_inner_tips(x: torch.Tensor, radius: float = 0.25) -> float:
    """The fraction of ``x`` within ``radius`` of either inner tip of the moons (``INNER_TIPS``)."""
    return float((torch.cdist(x.double(), INNER_TIPS).min(1).values <= radius).double().mean())


@dataclass(frozen=True)
class KdeBaseline:
    """A kernel density estimate's mean held-out log-likelihood (``nats``) and its standard error, its
    bandwidth, the bandwidths tried and the training rows they were tried on."""

    nats: float
    stderr: float
    bandwidth: float
    bandwidths: list[float]
    cv_points: int


def kde_log_likelihood(
    train: torch.Tensor, test: torch.Tensor, cv_points: int, seed: int, folds: int = 5
) -> KdeBaseline:
    """A Gaussian kernel density estimate as the baseline a density model must beat: its bandwidth
    chosen by ``folds``-fold cross-validated log-likelihood (scikit-learn's ``GridSearchCV``) on
    ``cv_points`` of the training rows, then fitted on all of them. Returns the mean held-out
    log-likelihood of ``test`` (nats), its standard error, the bandwidth and the bandwidths tried."""
    bandwidths = np.geomspace(0.005, 0.5, 15)
    rows = train.double().numpy()
    rng = np.random.default_rng(seed)
    subset = rows[rng.choice(len(rows), size=min(cv_points, len(rows)), replace=False)]
    search = GridSearchCV(KernelDensity(), {"bandwidth": bandwidths}, cv=folds).fit(subset)
    bandwidth = float(search.best_params_["bandwidth"])
    scores = KernelDensity(bandwidth=bandwidth).fit(rows).score_samples(test.double().numpy())
    return KdeBaseline(
        nats=float(scores.mean()),
        stderr=float(scores.std(ddof=1) / math.sqrt(len(scores))),
        bandwidth=bandwidth,
        bandwidths=[float(b) for b in bandwidths],
        cv_points=int(len(subset)),
    )


@dataclass(frozen=True)
class TwoSampleTest:
    """A classifier two-sample test's cross-validated accuracy, its binomial standard error and the
    number of points classified."""

    accuracy: float
    stderr: float
    n: int


def classifier_two_sample_test(
    a: torch.Tensor, b: torch.Tensor, seed: int, neighbours: int = 20
) -> TwoSampleTest:
    """A classifier two-sample test (Lopez-Paz & Oquab 2017): the cross-validated accuracy of a
    k-nearest-neighbour classifier told to separate ``a`` from ``b``. About 0.5 when the two sets
    come from one distribution; above it by several standard errors when a classifier can tell
    them apart (where one set has points and the other none). Returns the accuracy and its binomial
    standard error."""
    x = torch.cat([a, b]).double().numpy()
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    accuracy = float(cross_val_score(KNeighborsClassifier(neighbours), x, y, cv=folds).mean())
    return TwoSampleTest(accuracy, math.sqrt(accuracy * (1 - accuracy) / len(x)), int(len(x)))
