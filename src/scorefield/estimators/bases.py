"""The estimators' starting point: the base density the network corrects and the dequantisation of
columns with ties.

``MixtureBase`` is a Gaussian mixture whose diffused posterior mean is exact: under
``x_t = m x_0 + std z`` a mixture ``sum_k w_k N(mu_k, Sigma_k)`` stays a mixture,
``sum_k w_k N(m mu_k, m^2 Sigma_k + std^2 I)``, and ``E[x_0 | x_t]`` is the responsibility-weighted sum
of each component's Gaussian posterior mean (docs/math.md#a-base-density-for-the-denoiser).
``ScoreModel(param="denoiser", base=...)`` adds a network's correction to it, so the untrained model
(a zero output layer) *is* the base at every diffusion time. It is an ``nn.Module`` whose parameters
are buffers, saved and loaded with the network's weights (safetensors, no pickle).

The base is a whitened Gaussian, a Gaussian mixture by BIC or a kernel density estimate, chosen on
held-out rows and refitted on every row when the correction is not kept (``choose_base``,
``refit_base``); docs/math.md#ties-and-dequantisation for ``lattice_steps`` and ``dequantiser``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..distributions import gaussian_log_density

__all__ = [
    "BASES",
    "TAIL_WEIGHT",
    "MixtureBase",
    "choose_base",
    "dequantiser",
    "fit_gmm",
    "fit_kde",
    "lattice_steps",
    "refit_base",
]

# -- ties ------------------------------------------------------------------------------------------
# A column whose distinct values number at most TIES_FRACTION of the rows is on a lattice (integers,
# rounded readings, a binary code): a density fitted to it spikes on the lattice points and its
# log-densities grow without bound. Such a column is dequantised (``lattice_steps``).
TIES_FRACTION = 0.5

# -- the base density ------------------------------------------------------------------------------
# Candidates for the closed-form base the network corrects (``choose_base``), each fitted on the
# training rows and judged by its exact mean log-density on the held-out rows: the whitened Gaussian
# (no base), a Gaussian mixture with full covariances and BIC_COMPONENTS components by BIC (fits with
# more parameters than BIC_ROWS_PER_PARAM rows per parameter are skipped), and the kernel density
# estimate of up to MAX_KERNELS training rows with the best of KDE_BANDWIDTHS (Silverman's rule times
# these factors).
BIC_COMPONENTS, BIC_ROWS_PER_PARAM = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32), 2.0
MAX_KERNELS = 8192
# Every base (mixture or KDE) carries the whitened Gaussian N(0, I) at weight TAIL_WEIGHT: a KDE whose
# bandwidth suits the bulk has Gaussian tails of that narrow width, and on star98 (22 columns) it put
# a held-out row 2,400 nats below the worse of a cross-validated KDE and a BIC mixture; with the tail
# no row falls more than 4.6 nats below the whitened Gaussian, at a cost of -log(0.99) = 0.01 nat.
TAIL_WEIGHT = 0.01
KDE_BANDWIDTHS = tuple(2.0 ** (k / 4) for k in range(-16, 5))


# -- the base density as a module --------------------------------------------------------------
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
            log_n = gaussian_log_density(sq / var, x.shape[1] * var.log(), x.shape[1])
            return log_n + self.log_weights.to(x), var
        rot = self.rotations.to(x)  # [K, d, d]
        y = torch.einsum("kdj,bkd->bkj", rot, x[:, None, :] - m[:, None, None] * mu)  # U^T (x - m mu)
        var = m2 * self.variances.to(x) + s2  # [B, K, d]
        log_n = gaussian_log_density(y.square().div(var).sum(-1), var.log().sum(-1), y.shape[-1])
        return log_n + self.log_weights.to(x), (y, var)

    def with_tail(self, weight: float) -> MixtureBase:
        """This mixture at ``1 - weight`` plus the whitened Gaussian ``N(0, I)`` at ``weight``: no row falls
        more than ``-log(weight)`` below that Gaussian's log-density, however narrow the other components."""
        d = self.means.shape[1]
        means = torch.cat([self.means, self.means.new_zeros(1, d)])
        weights = torch.cat([(1 - weight) * self.log_weights.exp(), self.log_weights.new_tensor([weight])])
        variances = torch.cat([self.variances, self.variances.new_ones(1, self.variances.shape[1])])
        if self.isotropic:
            return MixtureBase(means, weights, variances)
        eye = torch.eye(d, dtype=self.rotations.dtype, device=self.rotations.device)[None]
        return MixtureBase(means, weights, variances, torch.cat([self.rotations, eye]))

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


# -- ties ------------------------------------------------------------------------------------------
def lattice_steps(x: torch.Tensor) -> torch.Tensor:
    """Each column's lattice step, ``[d]``: the smallest gap between its distinct values for a column
    with at most ``TIES_FRACTION`` of the rows distinct, else 0 (a continuous or constant column)."""
    steps = torch.zeros(x.shape[1], dtype=torch.float64)
    for j, column in enumerate(x.double().T):
        values = torch.unique(column)
        if 1 < len(values) <= TIES_FRACTION * len(column):  # (a constant column has no step)
            steps[j] = (values[1:] - values[:-1]).min()
    return steps


def dequantiser(scaler, steps: torch.Tensor) -> Callable[[int, torch.Generator], torch.Tensor] | None:
    """``jitter(n, generator)``: ``n`` draws of uniform dequantisation noise, ``U(-q/2, q/2)`` on each
    lattice column of step ``q``, mapped into the scaler's (linear) units; ``None`` without a lattice
    column (docs/math.md#ties-and-dequantisation)."""
    lattice = torch.nonzero(steps > 0).flatten()
    if not len(lattice):
        return None
    d = len(steps)
    cells = torch.zeros(len(lattice), d, dtype=torch.float64)
    cells[torch.arange(len(lattice)), lattice] = steps[lattice]
    zero = scaler.transform(torch.zeros(1, d))
    directions = (scaler.transform(cells.float()) - zero).float()  # [k, d]: one lattice cell in z units

    def jitter(n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, len(lattice), generator=generator, device=generator.device)
        return (u - 0.5) @ directions.to(u.device)

    return jitter


# -- the base density ------------------------------------------------------------------------------
def _held_out(base: MixtureBase, z_val: torch.Tensor) -> float:
    one = torch.ones(len(z_val), dtype=z_val.dtype, device=z_val.device)
    with torch.no_grad():
        return float(base.to(z_val.device).log_prob(z_val, one, 0 * one).mean())


def fit_gmm(z_train: torch.Tensor, seed: int, components: tuple[int, ...] = BIC_COMPONENTS) -> MixtureBase:
    """A full-covariance Gaussian mixture with the number of components by BIC among ``components``."""
    from sklearn.mixture import GaussianMixture

    x = z_train.double().cpu().numpy()
    n, d = x.shape
    best, best_bic = None, math.inf
    for k in components:
        if best is not None and k * (1 + d + d * (d + 1) / 2) * BIC_ROWS_PER_PARAM > n:
            break  # (the first size asked for is always fitted)
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed % 2**32).fit(x)
        bic = gmm.bic(x)
        if bic < best_bic:
            best, best_bic = gmm, bic
    return (
        MixtureBase.from_mixture(
            torch.from_numpy(best.means_),
            torch.from_numpy(best.covariances_),
            torch.from_numpy(best.weights_),
        )
        .with_tail(TAIL_WEIGHT)
        .to(z_train.dtype)
    )


def fit_kde(z_train: torch.Tensor, z_val: torch.Tensor) -> MixtureBase:
    """The kernel density estimate of (up to ``MAX_KERNELS`` of) the training rows, its bandwidth the
    best of ``KDE_BANDWIDTHS`` times Silverman's rule on the held-out rows."""
    rows = z_train[:MAX_KERNELS]  # the rows come in a seeded random order: a random subset
    n, d = rows.shape
    silverman = (n * (d + 2) / 4) ** (-1 / (d + 4))  # unit-variance (whitened) rows
    bases = [MixtureBase.parzen(rows, silverman * f) for f in KDE_BANDWIDTHS]
    return max(bases, key=lambda b: _held_out(b, z_val)).with_tail(TAIL_WEIGHT)


BASES = ("auto", "gaussian", "gmm", "kde")


def choose_base(
    z_train: torch.Tensor, z_val: torch.Tensor, seed: int, which: str = "auto"
) -> tuple[str, MixtureBase | None, dict[str, float]]:
    """The base density: ``which`` (one of ``BASES``), or for ``"auto"`` the candidate with the best
    held-out mean log-density. Returns ``(name, base, {candidate: held-out score})``, the base ``None``
    for the whitened Gaussian (the network's own skip term). A mixture by BIC with one component is
    the Gaussian and is not a separate candidate."""
    d = z_train.shape[1]
    gaussian = float(gaussian_log_density(z_val.square().sum(1), 0.0, d).mean())
    candidates: dict[str, tuple[MixtureBase | None, float]] = {"gaussian": (None, gaussian)}
    if which in ("auto", "gmm"):
        gmm = fit_gmm(z_train, seed)
        if gmm.n_components > 1 or which == "gmm":
            candidates["gmm"] = (gmm, _held_out(gmm, z_val))
    if which in ("auto", "kde"):
        kde = fit_kde(z_train, z_val)
        candidates["kde"] = (kde, _held_out(kde, z_val))
    best = max(candidates, key=lambda k: candidates[k][1]) if which == "auto" else which
    return best, candidates[best][0], {k: v[1] for k, v in candidates.items()}


def refit_base(name: str, base: MixtureBase, n_val: int, z_all: torch.Tensor, seed: int) -> MixtureBase:
    """The chosen base fitted again on every row of ``z_all`` (the first ``n_val`` were held out), as a
    KDE or a mixture by BIC would be once chosen: the mixture's size chosen again by BIC, the KDE's
    bandwidth scaled by ``(n_all / n_split)^(-1 / (d + 4))``, the rate of a Gaussian kernel's optimal
    bandwidth."""
    if name == "gmm":  # the same selection by BIC, now on every row
        return fit_gmm(z_all, seed)
    n, d = min(len(z_all) - n_val, MAX_KERNELS), z_all.shape[1]
    rows = z_all[:MAX_KERNELS]
    h = float(base.variances[0, 0].sqrt()) * (len(rows) / n) ** (-1 / (d + 4))
    return MixtureBase.parzen(rows, h).with_tail(TAIL_WEIGHT)
