"""Closed-form base densities for a denoiser: Gaussian mixtures whose diffused posterior mean is exact.

Under ``x_t = m x_0 + std z`` a mixture ``sum_k w_k N(mu_k, Sigma_k)`` stays a mixture,
``sum_k w_k N(m mu_k, m^2 Sigma_k + std^2 I)``, and its posterior mean ``E[x_0 | x_t]`` is the
responsibility-weighted sum of each component's Gaussian posterior mean
(docs/math.md#a-base-density-for-the-denoiser):

    E[x_0 | x_t, k] = mu_k + m Sigma_k (m^2 Sigma_k + std^2 I)^{-1} (x_t - m mu_k).

``ScoreModel(param="denoiser", base=...)`` adds a network's correction to this closed form, so the
untrained model (a zero output layer) *is* the base density at every diffusion time: a Gaussian
mixture chosen by BIC, or a kernel density estimate (one isotropic component per data row, the
Parzen density), and training learns only where the data depart from it.

``MixtureBase`` is an ``nn.Module`` whose parameters are buffers, so it is saved and loaded with the
network's weights (safetensors, no pickle) and moves with ``.to(device)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MixtureBase"]

_LOG_2PI = math.log(2 * math.pi)


class MixtureBase(nn.Module):
    """A Gaussian mixture as a denoiser's base: exact ``E[x_0 | x_t]`` and ``log p_t`` for any ``(m, std)``.

    Two layouts, chosen by the constructors:

    - ``full`` (``from_mixture``): each component has its own covariance, stored by its eigen-
      decomposition ``Sigma_k = U_k diag(lam_k) U_k^T`` (``rotations`` ``[K, d, d]``, ``variances``
      ``[K, d]``), so every diffusion time costs one rotation per component and no matrix inverse;
    - ``isotropic`` (``parzen``): every component has covariance ``h^2 I`` (``variances`` ``[K, 1]``,
      no rotations), the kernel density estimate of the rows ``means`` with bandwidth ``h``, computed
      from squared distances: ``O(B K d)`` per batch however many rows it holds.
    """

    def __init__(self, means: torch.Tensor, weights: torch.Tensor, variances: torch.Tensor, rotations=None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.get_default_dtype())
        k, d = means.shape
        variances = torch.as_tensor(variances, dtype=means.dtype)
        weights = torch.as_tensor(weights, dtype=means.dtype)
        if weights.shape != (k,) or not (weights >= 0).all() or not weights.sum() > 0:
            raise ValueError(f"weights must be [K] = [{k}] non-negative numbers with a positive sum")
        iso = rotations is None
        if variances.shape != ((k, 1) if iso else (k, d)) or not (variances > 0).all():
            raise ValueError(f"variances must be positive, shape {[k, 1] if iso else [k, d]}")
        rotations = torch.zeros(0) if iso else torch.as_tensor(rotations, dtype=means.dtype)
        if not iso and rotations.shape != (k, d, d):
            raise ValueError(f"rotations must be [K, d, d] = [{k}, {d}, {d}], got {tuple(rotations.shape)}")
        self.register_buffer("means", means.clone())
        self.register_buffer("log_weights", (weights / weights.sum()).log())
        self.register_buffer("variances", variances.clone())
        self.register_buffer("rotations", rotations.clone())

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_mixture(cls, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor) -> MixtureBase:
        """A ``full`` base from component means ``[K, d]``, covariances ``[K, d, d]`` and weights ``[K]``."""
        covs = torch.as_tensor(covs, dtype=torch.float64)
        evals, evecs = torch.linalg.eigh(0.5 * (covs + covs.transpose(-1, -2)))
        return cls(means, weights, evals.clamp_min(1e-12), evecs)

    @classmethod
    def parzen(cls, rows: torch.Tensor, bandwidth: float) -> MixtureBase:
        """The kernel density estimate ``(1/N) sum_i N(x; x_i, h^2 I)``, an ``isotropic`` base."""
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        n = len(rows)
        return cls(rows, torch.ones(n), torch.full((n, 1), float(bandwidth) ** 2))

    @classmethod
    def empty_like(cls, state: dict[str, torch.Tensor]) -> MixtureBase:
        """A base of the shapes in ``state`` (a ``state_dict``), ready for ``load_state_dict``."""
        k, d = state["means"].shape
        iso = state["rotations"].numel() == 0
        rotations = None if iso else torch.eye(d).expand(k, d, d)
        return cls(torch.zeros(k, d), torch.ones(k), torch.ones(k, 1 if iso else d), rotations)

    @property
    def isotropic(self) -> bool:
        return self.rotations.numel() == 0

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    # -- the diffused mixture -------------------------------------------------------------------
    def _components(self, x: torch.Tensor, m: torch.Tensor, std: torch.Tensor):
        """Per component: ``log w_k + log N(x; m mu_k, m^2 Sigma_k + std^2 I)`` ``[B, K]`` and what the
        posterior means need. ``m`` and ``std`` are ``[B]``."""
        mu = self.means.to(x)
        m2, s2 = (m**2)[:, None, None], (std**2)[:, None, None]
        if self.isotropic:
            var = m2[:, :, 0] * self.variances.to(x)[:, 0] + s2[:, :, 0]  # [B, K]
            sq = _sq_dist(x, mu, m)
            log_n = -0.5 * (sq / var + x.shape[1] * (_LOG_2PI + var.log()))
            return log_n + self.log_weights.to(x), var
        rot = self.rotations.to(x)  # [K, d, d]
        y = torch.einsum("kdj,bkd->bkj", rot, x[:, None, :] - m[:, None, None] * mu)  # U^T (x - m mu)
        var = m2 * self.variances.to(x) + s2  # [B, K, d]
        log_n = -0.5 * (y.square() / var + _LOG_2PI + var.log()).sum(-1)
        return log_n + self.log_weights.to(x), (y, var)

    def log_prob(self, x: torch.Tensor, m: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``log p_t(x)`` of the diffused mixture, ``[B]``, for ``x_t = m x_0 + std z`` (``m``, ``std``: ``[B]``)."""
        return torch.logsumexp(self._components(x, m, std)[0], dim=1)

    def denoise(self, x: torch.Tensor, m: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The exact posterior mean ``E[x_0 | x_t = x]`` under the diffused mixture: ``[B, d]``."""
        log_joint, extra = self._components(x, m, std)
        r = torch.softmax(log_joint, dim=1)  # [B, K]
        mu = self.means.to(x)
        if self.isotropic:
            var = extra  # [B, K]
            mean_mu = r @ mu  # sum_k r_k mu_k
            # sum_k r_k (mu_k + m h^2 / var (x - m mu_k)); h^2 / var is the same for every k when all
            # kernels share a bandwidth, but the weights keep it general
            gain = r * (m[:, None] * self.variances.to(x)[:, 0] / var)  # [B, K]
            return mean_mu + gain.sum(1, keepdim=True) * x - m[:, None] * (gain @ mu)
        y, var = extra
        shrink = m[:, None, None] * self.variances.to(x) / var * y  # [B, K, d] in each eigenbasis
        back = torch.einsum("kdj,bkj->bkd", self.rotations.to(x), shrink)
        return torch.einsum("bk,bkd->bd", r, mu + back)

    def score(self, x: torch.Tensor, m: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``grad log p_t(x)`` of the diffused mixture by Tweedie's formula, ``(m E[x_0 | x] - x) / std^2``."""
        return (m[:, None] * self.denoise(x, m, std) - x) / (std**2)[:, None]

    def sample(
        self, m: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``len(m)`` exact draws of the mixture diffused to ``(m, std)`` (``[B]`` each): ``[B, d]``."""
        n, d = len(m), self.means.shape[1]
        like = dict(dtype=self.means.dtype, device=self.means.device)
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        noise = torch.randn(n, d, generator=generator, **like)
        m, std = m.to(**like)[:, None], std.to(**like)[:, None]
        spread = (m**2 * self.variances[k] + std**2).sqrt() * noise  # in each component's eigenbasis
        if not self.isotropic:
            spread = torch.einsum("bdj,bj->bd", self.rotations[k], spread)
        return m * self.means[k] + spread


def _sq_dist(x: torch.Tensor, mu: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``||x_b - m_b mu_k||^2``, ``[B, K]``, expanded as ``|x|^2 - 2 m x.mu + m^2 |mu|^2`` (one matmul)."""
    cross = x @ mu.T
    return (
        x.square().sum(1, keepdim=True) - 2 * m[:, None] * cross + (m**2)[:, None] * mu.square().sum(1)
    ).clamp_min(0)
