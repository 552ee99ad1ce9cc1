"""The demo's one experiment that is more than a sampler call: the score-functions tutorial's
"problems with naive Langevin sampling", naive and annealed Langevin chains from one uniform start,
driven by the exact score of the smoothed mixture or by a learned noise-conditional score.
"""

from __future__ import annotations

import torch

from ..distributions import GaussianMixture
from ..langevin import annealed_langevin, langevin
from ..noise import geometric_sigmas
from ..viz import NoiseScoreFn, at_level

__all__ = ["run_naive_vs_annealed"]


def run_naive_vs_annealed(
    mixture: GaussianMixture,
    n: int = 1000,
    noise_score_fn: NoiseScoreFn | None = None,
    sigmas: torch.Tensor | None = None,
    step_size: float = 0.05,
    n_steps: int = 500,
    step_lr: float | None = None,
    n_steps_each: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The score-functions tutorial's "problems with naive Langevin sampling": naive and annealed chains from one uniform start.

    ``x0`` is uniform over a square holding every mode of ``mixture`` with 3 standard deviations
    to spare (docs/math.md#naive-versus-annealed-langevin-on-separated-modes). The naive chain follows the score at the smallest level ``sigmas[-1]``; the annealed
    chain descends the geometric ``sigmas`` (default 20 levels from the width of that square down to
    0.01) with ``step_lr`` (default ``0.1 σ_L²``: every step ``α_i`` is at most a tenth of the
    smoothed variance ``1 + σ_i²``, stable, and long enough to mix at each level). The score at
    level ``σ`` is ``noise_score_fn(x, σ[B])``, by default the exact score of the smoothed mixture
    ``p * N(0, σ²I)`` (``mixture.smooth(σ).score``; docs/math.md#smoothing-and-diffusion), so the
    naive chain then follows the exact ``∇log p`` but for a ``σ_L`` of 0.01.

    Returns ``(x0, naive, annealed)``, each ``[n, d]``.
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
    step_lr = 0.1 * float(sigmas[-1]) ** 2 if step_lr is None else step_lr
    x0 = lo + (hi - lo) * torch.rand(n, mixture.dim, generator=generator, dtype=means.dtype)
    naive = langevin(at_level(score, float(sigmas[-1])), x0, step_size, n_steps, generator=generator)
    annealed = annealed_langevin(score, x0, sigmas, step_lr, n_steps_each, generator=generator)
    return x0, naive, annealed
