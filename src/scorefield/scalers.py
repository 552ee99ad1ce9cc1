"""Scalers: the affine maps ``z = T(x)`` between data units and the units a model works in, and the one
place where a density or a score modelled in ``z`` is seen in data units (docs/math.md#densities-in-data-units).

A model of ``p_z`` gives ``log p_x(x) = log p_z(T x) + log |det dT/dx|`` and ``∇_x log p_x(x) = Jᵀ s_z(T x)``
(``J = dT/dx``): ``Scaler.log_prob`` and ``Scaler.score`` apply them, so the command line's runs, the
estimators and the demo report densities and scores in the data's own units through the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Scaler", "Standardizer", "Whitener"]


class Scaler(ABC):
    """An invertible affine map ``z = T(x)`` with a constant log-determinant."""

    @abstractmethod
    def transform(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def pullback(self, score_z: torch.Tensor) -> torch.Tensor:
        """``Jᵀ s``: a gradient with respect to ``z`` as one with respect to ``x``."""

    @property
    @abstractmethod
    def log_det(self) -> torch.Tensor:
        """``log |det dz/dx|`` (0-d, float64)."""

    def log_prob(self, log_prob_z: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``log p_x(x) = log p_z(T x) + log |det dT/dx|``, float64 ``[N]``, for a density ``log_prob_z`` of ``z``."""
        logp = log_prob_z(self.transform(x))
        return logp.double() + self.log_det.to(device=logp.device, dtype=torch.float64)

    def score(self, score_z: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``∇_x log p_x(x) = Jᵀ s_z(T x)`` for a score ``score_z`` of ``z``: shaped like ``x``."""
        return self.pullback(score_z(self.transform(x)))


class Standardizer(Scaler):
    """Per-feature standardisation ``z = (x - mean) / std`` with its inverse and log-determinant.

    Features are everything after the batch dimension (a pixel of an image is one feature). A
    constant feature keeps ``std = 1``. If ``p_z`` is the density of standardised data, the density
    in data units is ``log p_x(x) = log p_z(z) + log_det`` with ``log_det = -sum log std``, the same
    for every example.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.mean, self.std = mean, std

    def fit(self, x: torch.Tensor, min_std: float = 1e-8) -> Standardizer:
        if x.ndim < 2 or x.shape[0] < 1:
            raise ValueError(f"need data [N, ...] with N >= 1, got shape {tuple(x.shape)}")
        x64 = x.to(torch.float64)
        std = x64.std(0, correction=0) if x.shape[0] > 1 else torch.ones_like(x64[0])
        self.mean = x64.mean(0).to(x.dtype)
        self.std = torch.where(std > min_std, std, torch.ones_like(std)).to(x.dtype)
        return self

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("the Standardizer is not fitted; call fit(x) first")
        return self.mean, self.std

    def _check(self, x: torch.Tensor) -> None:
        mean, _ = self._fitted()
        if tuple(x.shape[1:]) != tuple(mean.shape):
            raise ValueError(
                f"data have shape {tuple(x.shape[1:])} per example but the scaler was fitted on "
                f"{tuple(mean.shape)}"
            )

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        mean, std = self._fitted()
        return (x - mean.to(x)) / std.to(x)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        mean, std = self._fitted()
        return z * std.to(z) + mean.to(z)

    @property
    def log_det(self) -> torch.Tensor:
        """``log |det dz/dx| = -sum log std`` (0-d): add it to ``log p_z`` to get ``log p_x``."""
        return -self._fitted()[1].to(torch.float64).log().sum()

    def pullback(self, score_z: torch.Tensor) -> torch.Tensor:
        """A gradient in standardised units back in data units: ``s_x = s_z / std`` (chain rule)."""
        return score_z / self._fitted()[1].to(score_z)

    def state_dict(self) -> dict[str, torch.Tensor]:
        mean, std = self._fitted()
        return {"mean": mean, "std": std}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Standardizer:
        return cls(state["mean"], state["std"])


class Whitener(Scaler):
    """``z = W (x - mean) / std``: per-feature standardisation, then ZCA whitening with a shrunk correlation.

    ``W = C^{-1/2}`` (symmetric) for ``C = (1 - a) S + a tr(S)/d I``, the standardised rows' covariance
    ``S`` shrunk towards a multiple of the identity, so that a few dozen rows in many dimensions still
    give a well-conditioned ``C``. The weight ``a`` is the one whose Gaussian has the best mean
    log-likelihood on held-out rows (5-fold cross-validation over ``SHRINKAGES`` and the Ledoit-Wolf
    weight; Ledoit & Wolf 2004 minimise the expected squared error of ``C`` instead, which on 200 rows
    of breast_cancer's 30 features shrinks 20 times as much and smears out the near-exact relations
    between radius, perimeter and area that held-out rows keep). Tables of fewer than ``MIN_CV_ROWS``
    rows use the Ledoit-Wolf weight. The score network then models the departure from this Gaussian
    rather than the correlations themselves. ZCA keeps each whitened feature aligned with its original
    one. ``log_det = log |det dz/dx| = -sum log std - 1/2 log det C``, added to ``log p_z`` to give
    ``log p_x``. Eigenvalues of ``C`` are floored at 1e-3 of their mean, so an exactly degenerate
    direction (a constant feature, an exact linear relation between features) cannot make ``W``
    infinite. ``shrinkage`` is the weight chosen (docs/math.md#standardiser-and-whitener).
    """

    SHRINKAGES = tuple(10 ** (k / 4) for k in range(-16, 1))  # 1e-4 .. 1, four per decade
    MIN_CV_ROWS = 20

    def __init__(self, standardizer: Standardizer | None = None, matrix: torch.Tensor | None = None):
        self.standardizer, self.matrix = standardizer, matrix
        self.shrinkage: float | None = None

    def fit(self, x: torch.Tensor) -> Whitener:
        self.standardizer = Standardizer().fit(x)
        z = self.standardizer.transform(x).double().numpy()
        self.shrinkage = self.choose_shrinkage(z)
        s = torch.from_numpy(np.cov(z.T, bias=True)).reshape(z.shape[1], z.shape[1])
        d = s.shape[0]
        cov = (1 - self.shrinkage) * s + self.shrinkage * s.trace() / d * torch.eye(d, dtype=s.dtype)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(1e-3 * evals.mean())  # an exactly degenerate direction stays finite
        self.matrix = (evecs * evals.rsqrt()) @ evecs.T
        return self

    @classmethod
    def choose_shrinkage(cls, z) -> float:
        """The shrinkage weight with the best 5-fold cross-validated Gaussian log-likelihood of the
        standardised rows ``z`` (numpy ``[n, d]``) among ``SHRINKAGES`` and the Ledoit-Wolf weight.

        Each fold's covariance ``S`` is decomposed once: ``C = (1 - a) S + a tr(S)/d I`` has ``S``'s
        eigenvectors and eigenvalues ``(1 - a) lam + a tr(S)/d``, so every weight costs ``O(n d)``
        (``ShrunkCovariance`` in a grid search would invert ``C`` per weight and fold: most of a small
        table's fit).
        """
        from sklearn.covariance import LedoitWolf
        from sklearn.model_selection import KFold

        ledoit_wolf = float(LedoitWolf().fit(z).shrinkage_)
        if len(z) < cls.MIN_CV_ROWS or z.shape[1] < 2:
            return ledoit_wolf
        grid = np.array(sorted({*cls.SHRINKAGES, ledoit_wolf}))
        total = np.zeros(len(grid))
        folds = KFold(5, shuffle=True, random_state=0)  # rows may come sorted (by class, by time)
        for train, test in folds.split(z):
            mean = z[train].mean(0)
            lam, vecs = np.linalg.eigh(np.cov(z[train].T, bias=True))
            y2 = np.square((z[test] - mean) @ vecs)  # [n_test, d] in S's eigenbasis
            var = (1 - grid)[:, None] * lam + grid[:, None] * lam.sum() / len(lam)  # [G, d]
            with np.errstate(divide="ignore", invalid="ignore"):  # a singular fold's -inf only loses
                total += -0.5 * ((y2.mean(0) / var).sum(1) + np.log(var).sum(1))
        total = np.where(np.isfinite(total), total, -np.inf)
        if not np.isfinite(total.max()):
            return ledoit_wolf
        return float(grid[int(np.argmax(total))])

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardizer.transform(x) @ self.matrix.to(x)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        return self.standardizer.inverse_transform(torch.linalg.solve(self.matrix.to(z), z.T).T)

    def pullback(self, score_z: torch.Tensor) -> torch.Tensor:
        """A gradient in whitened units back in data units: ``J^T s`` with ``J = W diag(1/std)``."""
        return (score_z @ self.matrix.to(score_z)) / self.standardizer.std.to(score_z)

    @property
    def log_det(self) -> torch.Tensor:
        return self.standardizer.log_det + torch.linalg.slogdet(self.matrix.double())[1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.standardizer.state_dict(), "matrix": self.matrix}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Whitener:
        return cls(Standardizer.from_state_dict(state), state["matrix"])
