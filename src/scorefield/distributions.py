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


Marginal = float | torch.Tensor  # a noise's scale or std: a number, or one value per row [N]


def _per_row(value: Marginal, x: torch.Tensor) -> torch.Tensor:
    """``scale`` or ``std`` as ``[N]`` in ``x``'s dtype and device."""
    return torch.as_tensor(value).to(x).expand(x.shape[0])


def _means_and_weights(means, weights) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``[K, d]`` means and ``[K]`` weights normalised to sum to 1."""
    means = torch.as_tensor(means)
    if not means.is_floating_point():
        means = means.to(torch.get_default_dtype())
    weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
    if means.ndim != 2:
        raise ValueError(f"means must be [K, d], got shape {tuple(means.shape)}")
    if weights.shape != (means.shape[0],):
        raise ValueError(f"weights must be [K] = [{means.shape[0]}], got {tuple(weights.shape)}")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return means, weights / weights.sum()


class GaussianMixture:
    """A mixture ``sum_k w_k N(mu_k, Sigma_k)`` with exact log-density, score, posterior mean and samples,
    of itself and of its law under noise: ``scale x_0 + std z``, ``x_0`` drawn from it, ``z ~ N(0, I)``.

    Each covariance is kept by its eigen-decomposition ``Sigma_k = U_k diag(lam_k) U_k^T`` (``variances``
    ``[K, d]``, ``rotations`` ``[K, d, d]``), or axis-aligned without rotations: diagonal (``variances``
    ``[K, d]``) or spherical (``[K, 1]``, ``lam_k I``). Under noise a component stays in its eigenbasis with
    variances ``scale^2 lam_k + std^2``, so an SDE's marginal at any time, or at a different time for each
    row, costs one rotation per component and no factorisation: every density method takes ``scale`` and
    ``std``, numbers or ``[N]`` (``sde.marginal(t)``), and evaluates that law (the mixture itself by default).
    A spherical mixture is evaluated from squared distances, one matrix product for all components.

    The score is ``sum_k r_k(x) (-Sigma_k^{-1}(x - mu_k))`` with responsibilities
    ``r_k = softmax_k(log w_k + log N(x; mu_k, Sigma_k))`` (docs/math.md#gaussians-and-mixtures),
    computed in log space; the posterior mean of ``x_0`` sums each component's Gaussian posterior mean
    with the same responsibilities (docs/math.md#a-base-density-for-the-denoiser).

    Args:
        means: ``[K, d]`` component means.
        covs: ``[K, d, d]`` symmetric positive-definite covariances (``diagonal`` and ``spherical``
            build the axis-aligned kinds).
        weights: ``[K]`` non-negative mixture weights (normalised here).

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

    means: torch.Tensor
    log_weights: torch.Tensor
    variances: torch.Tensor
    rotations: torch.Tensor | None

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor | Sequence[float]):
        means, weights = _means_and_weights(means, weights)
        k, d = means.shape
        covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must be [K, d, d] = [{k}, {d}, {d}], got {tuple(covs.shape)}")
        variances, rotations = torch.linalg.eigh(0.5 * (covs + covs.mT))
        if not (variances > 0).all():
            raise ValueError("every covariance must be symmetric positive definite")
        self.means, self.log_weights, self.variances, self.rotations = (
            means,
            weights.log(),
            variances,
            rotations,
        )

    @classmethod
    def diagonal(cls, means: torch.Tensor, variances: torch.Tensor, weights) -> GaussianMixture:
        """The mixture of diagonal covariances ``diag(variances_k)`` (``variances``: ``[K, d]``, positive)."""
        means, weights = _means_and_weights(means, weights)
        return cls._axis_aligned(means, weights, variances, means.shape)

    @classmethod
    def spherical(cls, means: torch.Tensor, variances: torch.Tensor, weights) -> GaussianMixture:
        """The mixture of spherical covariances ``variances_k I`` (``variances``: ``[K]``, positive)."""
        means, weights = _means_and_weights(means, weights)
        variances = torch.as_tensor(variances, dtype=means.dtype, device=means.device)
        return cls._axis_aligned(means, weights, variances[:, None], (means.shape[0], 1))

    @classmethod
    def _axis_aligned(cls, means, weights, variances, shape) -> GaussianMixture:
        variances = torch.as_tensor(variances, dtype=means.dtype, device=means.device)
        if variances.shape != shape or not (variances > 0).all():
            raise ValueError(
                f"variances must be positive, of shape {list(shape)}, got {tuple(variances.shape)}"
            )
        return cls._new(means, weights.log(), variances, None)

    @classmethod
    def from_eigen(
        cls,
        means: torch.Tensor,
        log_weights: torch.Tensor,
        variances: torch.Tensor,
        rotations: torch.Tensor | None = None,
    ) -> GaussianMixture:
        """The mixture of these parameters as they are (normalised log-weights ``[K]``, positive
        variances ``[K, d]`` or ``[K, 1]``, orthogonal ``rotations`` or ``None``), checking shapes only:
        a value check would wait for the device on every call, and this is how a module holding the
        parameters as buffers (``estimators.bases.MixtureBase``) rebuilds the mixture on each use."""
        k, d = means.shape
        ok = log_weights.shape == (k,) and variances.shape in ((k, d), (k, 1))
        if not ok or (rotations is not None and (rotations.shape != (k, d, d) or variances.shape[1] != d)):
            raise ValueError(
                f"a mixture of {k} components in {d} dimensions needs log_weights [K], variances "
                f"[K, d] or [K, 1] and rotations [K, d, d] or None"
            )
        return cls._new(means, log_weights, variances, rotations)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> GaussianMixture:
        """The mixture ``state_dict`` describes (``from_eigen``'s checks: shapes only)."""
        rotations = state["rotations"] if state["rotations"].numel() else None
        return cls.from_eigen(state["means"], state["log_weights"], state["variances"], rotations)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters as named tensors (``rotations`` empty for an axis-aligned mixture), for a file."""
        rotations = self.rotations if self.rotations is not None else self.means.new_zeros(0)
        return {
            "means": self.means,
            "log_weights": self.log_weights,
            "variances": self.variances,
            "rotations": rotations,
        }

    @classmethod
    def _new(cls, means, log_weights, variances, rotations) -> GaussianMixture:
        """An instance of ``cls`` (``Gaussian`` stays ``Gaussian``) holding these parameters unchecked."""
        out = object.__new__(cls)
        out.means, out.log_weights, out.variances, out.rotations = means, log_weights, variances, rotations
        return out

    def _with(self, means: torch.Tensor, variances: torch.Tensor) -> GaussianMixture:
        """The same kind of mixture (and class) with the same weights and rotations."""
        return self._new(means, self.log_weights, variances, self.rotations)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    @property
    def isotropic(self) -> bool:
        """Whether each covariance is a multiple of the identity (``spherical``)."""
        return self.rotations is None and self.variances.shape[1] == 1

    @property
    def covs(self) -> torch.Tensor:
        """The covariances ``[K, d, d]``, built from the stored kind."""
        if self.rotations is None:
            return torch.diag_embed(self.variances.expand(self.means.shape))
        return (self.rotations * self.variances[:, None, :]) @ self.rotations.mT

    def to(self, *args, **kwargs) -> GaussianMixture:
        """A copy with every parameter moved/cast like ``Tensor.to``."""
        rotations = None if self.rotations is None else self.rotations.to(*args, **kwargs)
        return self._new(
            *(v.to(*args, **kwargs) for v in (self.means, self.log_weights, self.variances)), rotations
        )

    # -- densities ------------------------------------------------------------------------------
    def _terms(self, x: torch.Tensor, scale: Marginal, std: Marginal):
        """``log w_k + log N(x; m mu_k, m^2 Sigma_k + std^2 I)`` ``[N, K]`` (``m = scale``), each row's
        ``y = U_k^T (x - m mu_k)`` ``[N, K, d]`` (``None`` for a spherical mixture) and the noised
        variances (``[N, K, d]``, or ``[N, K]`` for a spherical mixture), ``m`` and ``std^2`` as ``[N]``."""
        _check_x(x, self.dim)
        m, s2 = _per_row(scale, x), _per_row(std, x) ** 2
        mu, lam, d = self.means.to(x), self.variances.to(x), self.dim
        if self.isotropic:
            var = (m**2)[:, None] * lam[:, 0] + s2[:, None]  # [N, K]
            # ||x - m mu_k||^2 as |x|^2 - 2 m x.mu_k + m^2 |mu_k|^2: one matrix product for every component
            sq = (
                x.square().sum(1, keepdim=True)
                - 2 * m[:, None] * (x @ mu.T)
                + (m**2)[:, None] * mu.square().sum(1)
            )
            log_n = gaussian_log_density(sq.clamp_min(0) / var, d * var.log(), d)
            return log_n + self.log_weights.to(x), None, var, m, s2
        y = x[:, None, :] - m[:, None, None] * mu  # [N, K, d]
        if self.rotations is not None:
            y = torch.einsum("kdj,nkd->nkj", self.rotations.to(x), y)
        var = (m**2)[:, None, None] * lam + s2[:, None, None]  # [N, K, d]
        log_n = gaussian_log_density(y.square().div(var).sum(-1), var.log().sum(-1), d)
        return log_n + self.log_weights.to(x), y, var, m, s2

    def _weighted(self, r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``sum_k r_k U_k v_k``: ``[N, d]`` from responsibilities ``[N, K]`` and eigenbasis vectors ``[N, K, d]``."""
        if self.rotations is None:
            return torch.einsum("nk,nkd->nd", r, v)
        # weighting first makes the rotation back and the sum over k one matrix product, [N, K d] @ [K d, d]
        # (written out: einsum's own reshapes measured 1.4x slower at N = 256, K = 13, d = 30)
        back = self.rotations.to(v).mT.reshape(-1, self.dim)
        return (r[:, :, None] * v).reshape(len(v), -1) @ back

    def component_log_probs(
        self, x: torch.Tensor, scale: Marginal = 1.0, std: Marginal = 0.0
    ) -> torch.Tensor:
        """``log w_k + log N(x; m mu_k, m^2 Sigma_k + std^2 I)`` for every point and component: ``[N, K]``."""
        return self._terms(x, scale, std)[0]

    def observed_log_probs(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x_O; mu_k,O, Sigma_k,OO)`` ``[N, K]``: each row's entries ``observed`` (True;
        ``[N, d]`` or broadcast to it) under each component's marginal on them. Rows that observe the same
        entries share one marginal; a row that observes nothing scores ``log w_k``."""
        _check_x(x, self.dim)
        seen = torch.as_tensor(observed, dtype=torch.bool, device=x.device).expand(x.shape)
        out = self.log_weights.to(x).expand(x.shape[0], -1).clone()
        patterns, which = torch.unique(seen, dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows, index = which == p, pattern.nonzero().flatten()
            if index.numel():
                out[rows] = self.marginal(index).component_log_probs(x[rows][:, index])
        return out

    def log_prob(self, x: torch.Tensor, scale: Marginal = 1.0, std: Marginal = 0.0) -> torch.Tensor:
        """Exact ``log p(x)`` (of ``scale x_0 + std z``): ``[N, d] -> [N]``."""
        return torch.logsumexp(self.component_log_probs(x, scale, std), dim=1)

    def responsibilities(self, x: torch.Tensor, scale: Marginal = 1.0, std: Marginal = 0.0) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)``: ``[N, K]``."""
        return torch.softmax(self.component_log_probs(x, scale, std), dim=1)

    def component_of(self, x: torch.Tensor) -> torch.Tensor:
        """The most responsible component of each point: ``[N]`` (long)."""
        return self.component_log_probs(x).argmax(dim=1)

    def score(self, x: torch.Tensor, scale: Marginal = 1.0, std: Marginal = 0.0) -> torch.Tensor:
        """Exact ``grad_x log p(x)`` (of ``scale x_0 + std z``): ``[N, d] -> [N, d]``
        (docs/math.md#gaussians-and-mixtures)."""
        log_joint, y, var, m, _ = self._terms(x, scale, std)
        r = torch.softmax(log_joint, dim=1)
        if y is None:  # -sum_k r_k (x - m mu_k) / var_k
            g = r / var
            return m[:, None] * (g @ self.means.to(x)) - g.sum(1, keepdim=True) * x
        return -self._weighted(r, y / var)

    def denoise(self, x: torch.Tensor, scale: Marginal = 1.0, std: Marginal = 0.0) -> torch.Tensor:
        """The exact posterior mean ``E[x_0 | scale x_0 + std z = x]``: ``[N, d]``; per component
        ``mu_k + m Sigma_k (m^2 Sigma_k + std^2 I)^{-1} (x - m mu_k)`` (docs/math.md#a-base-density-for-the-denoiser)."""
        log_joint, y, var, m, _ = self._terms(x, scale, std)
        r = torch.softmax(log_joint, dim=1)
        mu, lam = self.means.to(x), self.variances.to(x)
        if y is None:  # sum_k r_k (mu_k + g_k (x - m mu_k)), g_k = m lam_k / var_k
            g = r * (m[:, None] * lam[:, 0] / var)
            return r @ mu + g.sum(1, keepdim=True) * x - m[:, None] * (g @ mu)
        return r @ mu + self._weighted(r, m[:, None, None] * lam / var * y)

    def sample(
        self, n: int, generator: torch.Generator | None = None, scale: Marginal = 1.0, std: Marginal = 0.0
    ) -> torch.Tensor:
        """``n`` exact draws (of ``scale x_0 + std z``; ``scale``, ``std`` numbers or ``[n]``): ``[n, d]``."""
        like = dict(dtype=self.means.dtype, device=self.means.device)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, **like)
        m, s = (torch.as_tensor(v).to(**like).expand(n)[:, None] for v in (scale, std))
        spread = (m**2 * self.variances[k] + s**2).sqrt() * z  # in each component's eigenbasis
        if self.rotations is not None:
            spread = torch.einsum("ndj,nj->nd", self.rotations[k], spread)
        return m * self.means[k] + spread

    def component_entropies(self) -> torch.Tensor:
        """Each component's differential entropy ``-E[log N(x; mu_k, Sigma_k)] = log det(2 pi e Sigma_k) / 2``: ``[K]``."""
        log_det = self.variances.log().sum(1) * (self.dim // self.variances.shape[1])
        return -gaussian_log_density(torch.full_like(log_det, self.dim), log_det, self.dim)  # E[sq] = d

    def component(self, k: int) -> Gaussian:
        """The ``k``-th component as a ``Gaussian``."""
        rotations = None if self.rotations is None else self.rotations[k : k + 1]
        return Gaussian._new(
            self.means[k : k + 1], self.log_weights.new_zeros(1), self.variances[k : k + 1], rotations
        )

    def marginal(self, index: torch.Tensor) -> GaussianMixture:
        """The law of the coordinates ``index`` (``[d']`` indices): each component's mean and covariance
        restricted to them, the same weights."""
        index = torch.as_tensor(index, device=self.means.device)
        means = self.means[:, index]
        if self.rotations is None:
            variances = self.variances if self.isotropic else self.variances[:, index]
            return self._new(means, self.log_weights, variances, None)
        covs = self.covs[:, index][:, :, index]
        variances, rotations = torch.linalg.eigh(0.5 * (covs + covs.mT))
        return self._new(means, self.log_weights, variances, rotations)

    def mean(self) -> torch.Tensor:
        """The mixture's mean ``sum_k w_k mu_k``: ``[d]``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance ``sum_k w_k (C_k + mu_k mu_k^T) - mu mu^T``: ``[d, d]``."""
        centred = self.means - self.mean()
        return torch.einsum("k,kij->ij", self.weights, self.covs + centred[:, :, None] * centred[:, None, :])

    # -- transformations ------------------------------------------------------------------------
    def noised(self, scale: float, std: float) -> GaussianMixture:
        """The law of ``scale x_0 + std z`` as a mixture: means ``scale mu_k``, variances ``scale^2 lam_k + std^2``."""
        return self._with(scale * self.means, scale**2 * self.variances + std**2)

    def affine(self, matrix: torch.Tensor, shift: torch.Tensor | None = None) -> GaussianMixture:
        """The law of ``A x + b`` for ``x ~ self`` (``A = matrix [m, d]``, ``b = shift [m]``, default 0):
        means ``A mu_k + b``, covariances ``A S_k Aᵀ``, the same weights. ``A`` must have full row rank,
        so that each image covariance is positive definite (a projection onto ``m < d`` directions is one)."""
        if matrix.dim() != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"matrix must be [m, {self.dim}], got {tuple(matrix.shape)}")
        a = matrix.to(self.means)
        means = self.means @ a.T + (0.0 if shift is None else shift.to(self.means))
        covs = a @ self.covs @ a.T
        return GaussianMixture(means, 0.5 * (covs + covs.transpose(1, 2)), self.weights)

    def smooth(self, sigma: float) -> GaussianMixture:
        """``p * N(0, sigma^2 I)``: each component's covariance grows by ``sigma^2 I``."""
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        return self.noised(1.0, sigma)

    def diffuse(self, sde: HasMarginal, t: float) -> GaussianMixture:
        """The exact marginal ``p_t`` of ``x_t = m(t) x_0 + std(t) z`` with ``x_0 ~ p`` (for a different
        time on each row, pass ``sde.marginal(t)`` to the density methods instead)."""
        return self.noised(*_marginal_floats(sde, t))

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
        means, log_w = self.means.to(x), self.log_weights.to(x)
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
    """A single Gaussian ``N(mean, cov)``: a mixture of one component; score ``-cov^{-1}(x - mean)``."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        mean = torch.as_tensor(mean)
        if mean.ndim != 1:
            raise ValueError(f"mean must be [d], got shape {tuple(mean.shape)}")
        cov = torch.as_tensor(cov, dtype=mean.dtype if mean.is_floating_point() else None)
        super().__init__(mean.unsqueeze(0), cov.unsqueeze(0), torch.ones(1))

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
        n = self.data.shape[0]
        return GaussianMixture.spherical(self.data, self.data.new_full((n,), self.sigma**2), torch.ones(n))


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
