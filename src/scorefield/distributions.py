"""Analytic targets with exact log-densities, scores and samples.

These are the ground truth every objective, sampler and likelihood in scorefield is tested against:
a Gaussian, a Gaussian mixture with full covariances, and the Parzen density (the empirical
distribution of a data set smoothed by ``N(0, sigma^2 I)``). All three stay in log space, so they are
finite and correct far (50 standard deviations and more) from every mode, in float32 and float64.

Each can be smoothed (``p * N(0, sigma^2 I)``) and diffused under an SDE (the exact marginal
``p_t`` of ``x_t = m(t) x_0 + std(t) z``), which is again a distribution of the same kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from .utils import Generator, rand_like, randn_like

if TYPE_CHECKING:  # (sde imports the Gaussian log-density from here)
    from .sde import HasMarginal

__all__ = [
    "LOG_2PI",
    "Banana",
    "ConditionalMixture",
    "Gaussian",
    "GaussianMixture",
    "Parzen",
    "gaussian_log_density",
    "two_gaussians",
]

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(sq: torch.Tensor, log_det: torch.Tensor | float, d: int) -> torch.Tensor:
    """``log N(x; mu, Sigma) = -(sq + log det Sigma + d log 2 pi) / 2`` from the squared Mahalanobis
    distance ``sq`` and ``log det Sigma`` (broadcast): the one place the Gaussian's normaliser is written."""
    return -0.5 * (sq + log_det + d * LOG_2PI)


def _marginal_floats(sde: HasMarginal, t: float) -> tuple[float, float]:
    scale, std = sde.marginal(float(t))
    return float(scale), float(std)


def _check_x(x: torch.Tensor, dim: int) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected points of shape [N, {dim}], got {tuple(x.shape)}")


class GaussianMixture:
    """A mixture ``sum_k w_k N(mu_k, Sigma_k)`` with exact log-density, score and samples.

    Args:
        means: ``[K, d]`` component means.
        covs: ``[K, d, d]`` symmetric positive-definite covariances.
        weights: ``[K]`` non-negative mixture weights (normalised here).

    The score is ``sum_k r_k(x) (-Sigma_k^{-1}(x - mu_k))`` with responsibilities
    ``r_k = softmax_k(log w_k + log N(x; mu_k, Sigma_k))`` (docs/math.md#gaussians-and-mixtures), computed in log space.

    Examples:
        Two unit Gaussians at -2 and 2 in one dimension. Halfway between them the score is zero;
        beyond a mode it points back to it. Diffused to ``t = 1`` under the VP SDE, the means have
        shrunk by ``m(1) = 0.0066`` and the covariances become ``m² + std² = 1``.

        >>> from scorefield.sde import VPSDE
        >>> mixture = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.ones(2, 1, 1), [0.5, 0.5])
        >>> mixture.score(torch.tensor([[-3.0], [3.0]])).flatten()
        tensor([ 1.0000, -1.0000])
        >>> abs(mixture.score(torch.zeros(1, 1)).item()) < 1e-6
        True
        >>> diffused = mixture.diffuse(VPSDE(), 1.0)
        >>> diffused.means.flatten(), diffused.covs.flatten()
        (tensor([-0.0131,  0.0131]), tensor([1., 1.]))
    """

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor | Sequence[float]):
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if means.ndim != 2:
            raise ValueError(f"means must be [K, d], got shape {tuple(means.shape)}")
        k, d = means.shape
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must be [K, d, d] = [{k}, {d}, {d}], got {tuple(covs.shape)}")
        if weights.shape != (k,):
            raise ValueError(f"weights must be [K] = [{k}], got {tuple(weights.shape)}")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        chol, info = torch.linalg.cholesky_ex(covs)
        if (info != 0).any():
            raise ValueError("every covariance must be symmetric positive definite")
        self.means = means
        self.covs = covs
        self.weights = weights / weights.sum()
        self._chol = chol
        self._log_weights = torch.log(self.weights)
        # log N normaliser per component (sq = 0): -d/2 log 2pi - sum log diag(L)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        self._log_norm = gaussian_log_density(torch.zeros_like(log_det), log_det, d)

    # -- construction helpers -------------------------------------------------------------------
    def _like(self, means: torch.Tensor, covs: torch.Tensor) -> GaussianMixture:
        return GaussianMixture(means, covs, self.weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def to(self, *args, **kwargs) -> GaussianMixture:
        """A copy with every parameter moved/cast like ``Tensor.to``."""
        out = self._like(self.means.to(*args, **kwargs), self.covs.to(*args, **kwargs))
        out.weights = self.weights.to(*args, **kwargs)
        out._log_weights = torch.log(out.weights)
        return out

    # -- densities ------------------------------------------------------------------------------
    def _whitened(self, x: torch.Tensor) -> torch.Tensor:
        """``L_k^{-1}(x - mu_k)`` for every point and component: ``[K, d, N]``."""
        _check_x(x, self.dim)
        diff = (x.unsqueeze(0) - self.means.to(x).unsqueeze(1)).transpose(1, 2)  # (K, d, N)
        return torch.linalg.solve_triangular(self._chol.to(x), diff, upper=False)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; mu_k, Sigma_k)`` for every point and component: ``[N, K]``."""
        y = self._whitened(x)  # (K, d, N)
        quad = y.square().sum(1)  # (K, N)
        return (self._log_weights.to(x)[:, None] + self._log_norm.to(x)[:, None] - 0.5 * quad).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``: ``[N, d] -> [N]``."""
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)``: ``[N, K]``."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def component_of(self, x: torch.Tensor) -> torch.Tensor:
        """The most responsible component of each point: ``[N]`` (long)."""
        return self.component_log_probs(x).argmax(dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``grad_x log p(x)``: ``[N, d] -> [N, d]`` (docs/math.md#gaussians-and-mixtures)."""
        y = self._whitened(x)  # (K, d, N)
        log_r = self._log_weights.to(x)[:, None] + self._log_norm.to(x)[:, None] - 0.5 * y.square().sum(1)
        r = torch.softmax(log_r, dim=0)  # (K, N)
        # Sigma_k^{-1}(x - mu_k) = L_k^{-T} L_k^{-1}(x - mu_k)
        prec_diff = torch.linalg.solve_triangular(self._chol.to(x).transpose(1, 2), y, upper=True)
        return -(r.unsqueeze(1) * prec_diff).sum(0).T

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples: ``[n, d]``."""
        device = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=device)
        return self.means[k] + (self._chol[k] @ z.unsqueeze(-1)).squeeze(-1)

    def mean(self) -> torch.Tensor:
        """The mixture's mean ``sum_k w_k mu_k``: ``[d]``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance ``sum_k w_k (C_k + mu_k mu_k^T) - mu mu^T``: ``[d, d]``."""
        centred = self.means - self.mean()
        return torch.einsum("k,kij->ij", self.weights, self.covs + centred[:, :, None] * centred[:, None, :])

    # -- transformations ------------------------------------------------------------------------
    def smooth(self, sigma: float) -> GaussianMixture:
        """``p * N(0, sigma^2 I)``: each component's covariance grows by ``sigma^2 I``."""
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        eye = torch.eye(self.dim, dtype=self.covs.dtype, device=self.covs.device)
        return self._like(self.means, self.covs + sigma**2 * eye)

    def diffuse(self, sde: HasMarginal, t: float) -> GaussianMixture:
        """The exact marginal ``p_t`` of ``x_t = m(t) x_0 + std(t) z`` with ``x_0 ~ p``."""
        scale, std = _marginal_floats(sde, t)
        eye = torch.eye(self.dim, dtype=self.covs.dtype, device=self.covs.device)
        return self._like(scale * self.means, scale**2 * self.covs + std**2 * eye)

    def condition(self, x: torch.Tensor, missing: torch.Tensor) -> ConditionalMixture:
        """Each row's ``missing`` cells given its observed ones, rows of different patterns at once: the
        conditional law, again a Gaussian mixture per row (docs/math.md#conditioning-a-mixture).

        Component ``k`` keeps its conditional Gaussian, mean ``mu_M + S_MO S_OO^-1 (x_O - mu_O)`` and
        covariance ``S_MM - S_MO S_OO^-1 S_OM`` (the Schur complement), and its weight becomes
        proportional to ``w_k N(x_O; mu_O, S_OO)``. Both come from the Cholesky factor of
        ``S o (o o^T) + diag(m)`` (``o``, ``m``: the row's observed and missing indicators), which is
        ``S_OO``'s factor on the observed block and the identity on the missing one, so rows of every
        pattern share one batched factorisation. Components with equal covariances share it too (a
        kernel density estimate costs one factorisation per row, not one per kernel).

        Args:
            x: ``[n, d]``; the missing cells are not read (they may hold NaN).
            missing: ``[n, d]`` booleans, True where a cell is to be filled.
        """
        _check_x(x, self.dim)
        if missing.shape != x.shape or missing.dtype != torch.bool:
            raise ValueError(
                f"missing must be booleans shaped like x {tuple(x.shape)}, got {missing.dtype} "
                f"{tuple(missing.shape)}"
            )
        observed = ~missing
        x = torch.where(missing, 0.0, x)
        n, d = x.shape
        covs, group = torch.unique(self.covs.to(x).flatten(1), dim=0, return_inverse=True)
        covs = covs.view(-1, d, d)
        means, log_w = self.means.to(x), self._log_weights.to(x)
        pair_oo = observed[:, :, None] & observed[:, None, :]
        pair_mo = missing[:, :, None] & observed[:, None, :]
        pair_mm = missing[:, :, None] & missing[:, None, :]
        n_obs = observed.sum(1, keepdim=True).to(x.dtype)
        log_joint = x.new_empty(n, len(means))
        filled = x.new_empty(n, len(means), d)
        cond_covs = x.new_empty(n, len(covs), d, d)
        for g, cov in enumerate(covs):
            k = torch.nonzero(group == g).flatten()
            chol = torch.linalg.cholesky(torch.where(pair_oo, cov, 0.0) + torch.diag_embed(missing.to(x)))
            log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1, keepdim=True)  # S_OO's
            delta = torch.where(observed[:, None, :], x[:, None, :] - means[k], 0.0).transpose(1, 2)
            quad = torch.linalg.solve_triangular(chol, delta, upper=False).square().sum(1)  # [n, K_g]
            log_joint[:, k] = log_w[k] + gaussian_log_density(quad, log_det, n_obs)
            shift = torch.where(pair_mo, cov, 0.0) @ torch.cholesky_solve(delta, chol)  # S_MO S_OO^-1 delta_O
            filled[:, k] = torch.where(missing[:, None, :], means[k] + shift.transpose(1, 2), x[:, None, :])
            gain = torch.linalg.solve_triangular(
                chol, torch.where(pair_mo.transpose(1, 2), cov, 0.0), upper=False
            )
            cond_covs[:, g] = torch.where(pair_mm, cov, 0.0) - gain.transpose(1, 2) @ gain
        log_evidence = torch.logsumexp(log_joint, dim=1)
        return ConditionalMixture(
            log_joint - log_evidence[:, None], filled, cond_covs, group, missing, log_evidence
        )


class ConditionalMixture(NamedTuple):
    """The law of each row's missing cells given its observed ones (``GaussianMixture.condition``): per
    row a Gaussian mixture over the whole row, degenerate on the observed cells, which it holds fixed.

    Fields: ``log_weights`` ``[n, K]`` (each component's log posterior weight given the observed cells),
    ``means`` ``[n, K, d]`` (each component's conditional mean, the observed cells as given), ``covs``
    ``[n, G, d, d]`` (the ``G`` distinct conditional covariances, zero outside the missing block),
    ``group`` ``[K]`` (the covariance of each component), ``missing`` ``[n, d]`` and ``log_evidence``
    ``[n]`` (``log p(x_O)``, the observed cells' marginal log-density).
    """

    log_weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    group: torch.Tensor
    missing: torch.Tensor
    log_evidence: torch.Tensor

    def mean(self) -> torch.Tensor:
        """The conditional mean of each row, ``sum_k r_k m_k``: ``[n, d]``, the observed cells as given."""
        mean = torch.einsum("nk,nkd->nd", self.log_weights.exp(), self.means)
        return torch.where(self.missing, mean, self.means[:, 0])  # (a weighted sum may round x_O)

    def sample(self, n: int, generator: Generator | None = None) -> torch.Tensor:
        """``n`` exact draws of each row: ``[n, rows, d]``, the observed cells exactly as given. A component
        by inverse transform of one uniform, then its Gaussian; with a ``KeyedNoise`` (one key per row),
        a row's draws do not depend on the other rows."""
        rows = len(self.means)
        u = rand_like(self.means.new_empty(rows, n), generator)
        cdf = self.log_weights.exp().cumsum(1)
        k = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_(max=cdf.shape[1] - 1)  # [rows, n]
        at = torch.arange(rows, device=k.device)[:, None]
        eye = torch.diag_embed((~self.missing).to(self.covs))[:, None]
        chol = torch.linalg.cholesky(self.covs + eye)  # the identity on the observed block: blocks kept apart
        z = randn_like(self.means.new_empty(rows, n, self.means.shape[2]), generator)
        noise = (chol[at, self.group[k]] @ z[..., None])[..., 0]
        return torch.where(self.missing[:, None], noise, 0.0).add_(self.means[at, k]).transpose(0, 1)


class Gaussian(GaussianMixture):
    """A single Gaussian ``N(mean, cov)``; score ``-cov^{-1}(x - mean)``."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        mean = torch.as_tensor(mean)
        if mean.ndim != 1:
            raise ValueError(f"mean must be [d], got shape {tuple(mean.shape)}")
        cov = torch.as_tensor(cov, dtype=mean.dtype if mean.is_floating_point() else None)
        super().__init__(mean.unsqueeze(0), cov.unsqueeze(0), torch.ones(1))

    def _like(self, means: torch.Tensor, covs: torch.Tensor) -> Gaussian:
        return Gaussian(means[0], covs[0])

    @property
    def cov(self) -> torch.Tensor:
        return self.covs[0]

    def mean(self) -> torch.Tensor:  # type: ignore[override]
        return self.means[0]


class Parzen:
    """The Parzen density ``q_sigma(x) = (1/N) sum_i N(x; x_i, sigma^2 I)``.

    The empirical distribution of ``data`` smoothed by Gaussian noise of standard deviation
    ``sigma``: its exact score is the optimal denoising-score-matching solution for a finite data
    set (Vincent 2011). Computed in chunks so large data sets fit in memory.
    """

    def __init__(self, data: torch.Tensor, sigma: float, chunk_size: int = 4096):
        data = torch.as_tensor(data)
        if data.ndim != 2:
            raise ValueError(f"data must be [N, d], got shape {tuple(data.shape)}")
        if not data.is_floating_point():
            data = data.to(torch.get_default_dtype())
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.data = data
        self.sigma = float(sigma)
        self.chunk_size = chunk_size

    @property
    def dim(self) -> int:
        return self.data.shape[1]

    def _log_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; x_i, sigma^2 I) - log N`` for a chunk of points: ``[n, N]``."""
        data = self.data.to(x)
        sq = torch.cdist(x, data).square()
        d, n_data = self.dim, data.shape[0]
        return gaussian_log_density(sq / self.sigma**2, 2 * d * math.log(self.sigma), d) - math.log(n_data)

    def _chunks(self, x: torch.Tensor):
        _check_x(x, self.dim)
        return x.split(self.chunk_size)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log q_sigma(x)``: ``[M, d] -> [M]``."""
        return torch.cat([torch.logsumexp(self._log_kernel(c), dim=1) for c in self._chunks(x)])

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``grad log q_sigma(x) = sum_i r_i(x) (x_i - x) / sigma^2``: ``[M, d] -> [M, d]``."""
        out = []
        data = self.data.to(x)
        for c in self._chunks(x):
            r = torch.softmax(self._log_kernel(c), dim=1)  # (m, N)
            out.append((r @ data - c) / self.sigma**2)
        return torch.cat(out)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples: a random data point plus ``sigma z``."""
        idx = torch.randint(0, self.data.shape[0], (n,), generator=generator, device=self.data.device)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.data.dtype, device=self.data.device)
        return self.data[idx] + self.sigma * z

    def smooth(self, sigma: float) -> Parzen:
        """``q_sigma * N(0, s^2 I) = q_sqrt(sigma^2 + s^2)``."""
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        return Parzen(self.data, math.sqrt(self.sigma**2 + sigma**2), self.chunk_size)

    def diffuse(self, sde: HasMarginal, t: float) -> Parzen:
        """Exact marginal at time ``t``: data scaled by ``m(t)``, bandwidth ``sqrt(m^2 sigma^2 + std^2)``."""
        scale, std = _marginal_floats(sde, t)
        return Parzen(scale * self.data, math.sqrt(scale**2 * self.sigma**2 + std**2), self.chunk_size)

    def as_mixture(self) -> GaussianMixture:
        """The same density as an explicit ``GaussianMixture`` (for small data sets)."""
        n, d = self.data.shape
        eye = torch.eye(d, dtype=self.data.dtype, device=self.data.device)
        return GaussianMixture(self.data, (self.sigma**2 * eye).expand(n, d, d).clone(), torch.ones(n))


def two_gaussians(
    weights: Sequence[float] = (0.8, 0.2),
    center: float = 5.0,
    std: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> GaussianMixture:
    """The tutorials' 2-D mixture of two Gaussians: modes at ``-(c, c)`` and ``+(c, c)``, covariance ``std^2 I``.

    With the default ``center=5`` the modes are about 14 standard deviations apart, far enough
    that plain Langevin dynamics cannot move mass between them (the score-functions tutorial, "Langevin").
    """
    means = torch.tensor([[-center, -center], [center, center]], dtype=dtype)
    covs = (std**2 * torch.eye(2, dtype=dtype)).expand(2, 2, 2).clone()
    return GaussianMixture(means, covs, torch.tensor(weights, dtype=dtype))


class Banana:
    """A curved 2-D density with an exact log-density and score, not a Gaussian mixture:
    ``x_1 ~ N(0, s_1^2)``, ``x_2 | x_1 ~ N(b (x_1^2 - s_1^2), s_2^2)`` (Haario et al. 1999's twisted Gaussian).

    ``log p(x) = log N(x_1; 0, s_1^2) + log N(x_2; b (x_1^2 - s_1^2), s_2^2)``; its score is
    ``(-x_1 / s_1^2 + 2 b x_1 r / s_2^2, -r / s_2^2)`` with ``r = x_2 - b (x_1^2 - s_1^2)``.
    """

    dim = 2

    def __init__(self, s1: float = 1.5, s2: float = 0.5, bend: float = 0.5):
        if not (s1 > 0 and s2 > 0):
            raise ValueError(f"s1 and s2 must be > 0, got {s1}, {s2}")
        self.s1, self.s2, self.bend = float(s1), float(s2), float(bend)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1] - self.bend * (x[:, 0] ** 2 - self.s1**2)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``: ``[N, 2] -> [N]``."""
        _check_x(x, 2)
        r = self._residual(x)
        sq = (x[:, 0] / self.s1) ** 2 + (r / self.s2) ** 2
        return gaussian_log_density(sq, 2 * math.log(self.s1 * self.s2), 2)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``grad log p(x)``: ``[N, 2] -> [N, 2]``."""
        _check_x(x, 2)
        r = self._residual(x) / self.s2**2
        return torch.stack([-x[:, 0] / self.s1**2 + 2 * self.bend * x[:, 0] * r, -r], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples."""
        z = torch.randn(n, 2, generator=generator)
        x1 = self.s1 * z[:, 0]
        return torch.stack([x1, self.bend * (x1**2 - self.s1**2) + self.s2 * z[:, 1]], dim=1)
