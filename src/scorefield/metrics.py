"""Distances between sample sets, score errors and detection quality.

Everything here compares things whose true value is known in the tests: two sample sets from one
distribution (distance ~ 0 within its standard error), shifted Gaussians (closed forms), a learned
score against an exact one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "fisher_divergence",
    "mmd",
    "energy_distance",
    "sliced_wasserstein",
    "mode_weights",
    "frechet_distance",
    "auroc",
]


def fisher_divergence(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    true_score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    relative: bool = True,
) -> float:
    """Fisher divergence ``E_p ||s_theta - grad log p||^2`` estimated on samples ``x ~ p``.

    With ``relative=True`` it is divided by ``E_p ||grad log p||^2`` (Hyvärinen 2005's objective,
    normalised so 0 is perfect and 1 is as bad as predicting zero everywhere).
    """
    with torch.no_grad():
        s_true = true_score_fn(x)
    s = score_fn(x).detach()
    err = (s - s_true).flatten(1).square().sum(1).mean()
    if relative:
        err = err / s_true.flatten(1).square().sum(1).mean()
    return float(err)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.flatten(1), b.flatten(1)).square()


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: Sequence[float] | None = None,
    return_stderr: bool = False,
) -> float | tuple[float, float]:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3) with a sum of RBF kernels.

    ``k(a, b) = sum_h exp(-||a - b||^2 / (2 h^2))``; the bandwidths default to the median pairwise
    distance of the pooled samples times (1/4, 1/2, 1, 2, 4). With ``return_stderr`` (equal sizes
    only) it also returns the standard error of the U-statistic from its first-order (Hoeffding)
    projection, ``sqrt(4 Var_i(mean_j h_ij) / n)``.
    """
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd needs at least two samples on each side")
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidths is None:
        pooled = torch.cat([dxx.flatten(), dyy.flatten(), dxy.flatten()])
        median = pooled[pooled > 0].median().sqrt().item()
        bandwidths = [median * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]

    def kernel(d2: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    kxx, kyy, kxy = kernel(dxx), kernel(dyy), kernel(dxy)
    kxx.fill_diagonal_(0)
    kyy.fill_diagonal_(0)
    value = kxx.sum() / (n * (n - 1)) + kyy.sum() / (m * (m - 1)) - 2 * kxy.mean()
    if not return_stderr:
        return float(value)
    if n != m:
        raise ValueError("the standard error is implemented for equal sample sizes only")
    h = kxx + kyy - kxy - kxy.T
    h.fill_diagonal_(0)
    h_bar = h.sum(1) / (n - 1)
    return float(value), float(torch.sqrt(4 * h_bar.var() / n))


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (Székely & Rizzo 2013).

    Within-set terms exclude the diagonal, so the estimate is unbiased and fluctuates around zero
    when ``x`` and ``y`` come from the same distribution.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("energy_distance needs at least two samples on each side")
    exy = torch.cdist(x, y).mean()
    exx = torch.cdist(x, x).sum() / (n * (n - 1))
    eyy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * exy - exx - eyy)


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    n_projections: int = 256,
    p: int = 2,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced p-Wasserstein distance (Bonneel et al. 2015): ``(E_theta W_p^p(theta.x, theta.y))^(1/p)``.

    Directions are uniform on the sphere; each 1-D distance compares quantile functions on a common
    grid, so the two sets may have different sizes.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values
    n = max(px.shape[0], py.shape[0])
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qx = torch.quantile(px, levels, dim=0) if px.shape[0] != n else px
    qy = torch.quantile(py, levels, dim=0) if py.shape[0] != n else py
    return float((qx - qy).abs().pow(p).mean() ** (1 / p))


def mode_weights(x: torch.Tensor, mixture) -> torch.Tensor:
    """Fraction of samples assigned to each component of ``mixture`` (most responsible component): ``[K]``."""
    k = mixture.component_of(x.to(mixture.means.dtype))
    return torch.bincount(k, minlength=mixture.n_components).to(torch.float64) / x.shape[0]


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID's formula).

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr (S_a S_b)^{1/2} = tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}: symmetric, so eigvalsh is stable
    evals, evecs = np.linalg.eigh(s_a)
    sqrt_a = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ s_b @ sqrt_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)


def auroc(scores_normal: torch.Tensor | np.ndarray, scores_anomalous: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve for anomaly scores where higher means more anomalous."""
    from sklearn.metrics import roc_auc_score

    a = np.asarray(scores_normal, dtype=np.float64).ravel()
    b = np.asarray(scores_anomalous, dtype=np.float64).ravel()
    labels = np.concatenate([np.zeros_like(a), np.ones_like(b)])
    return float(roc_auc_score(labels, np.concatenate([a, b])))
