"""The estimators' starting point: the base density the network corrects and the dequantisation of
columns with ties.

The base is a ``distributions.GaussianMixture``, whose diffused posterior mean is exact at any time
(docs/math.md#a-base-density-for-the-denoiser); ``ScoreModel(param="denoiser", base=...)`` adds a
network's correction to it, so the untrained model (a zero output layer) *is* the base at every
diffusion time. ``MixtureBase`` holds it as the buffers of an ``nn.Module``, saved and loaded with the
network's weights (safetensors, no pickle).

It is a whitened Gaussian, a Gaussian mixture by BIC or a kernel density estimate, chosen on
held-out rows and refitted on every row when the correction is not kept (``choose_base``,
``refit_base``); docs/math.md#ties-and-dequantisation for ``lattice_steps`` and ``dequantiser``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..distributions import GaussianMixture, gaussian_log_density

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
    "with_tail",
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
# An isotropic base (a KDE and its tail) denoises by runs of equal variance (``_denoise_by_runs``) from
# RUNS_MIN_PAIRS row-component pairs: on a batch of 256 rows 2.0x (341 kernels, 30-D), 1.8x (1,105,
# 64-D) and 2.9x (4,250, 2-D) faster than the mixture's generic path, 0.8x on 105 kernels, where the
# per-run bookkeeping outweighs it.
RUNS_MIN_PAIRS = 65536


# -- the base density as a module --------------------------------------------------------------
class MixtureBase(nn.Module):
    """A ``GaussianMixture`` as a denoiser's base: its parameters as buffers, so that it is saved and
    loaded with the network's weights and moves with them (``.to``, ``.double``).

    The buffers are the mixture's eigen-decomposed parameters: ``means`` ``[K, d]``, ``log_weights``
    ``[K]``, ``variances`` (``[K, d]``, or ``[K, 1]`` for a kernel density estimate's spherical kernels)
    and ``rotations`` (``[K, d, d]``, empty for an axis-aligned mixture). ``mixture`` is the distribution
    they make, rebuilt on each use without a factorisation; ``denoise`` is what ``ScoreModel`` asks of it.
    """

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        for name, tensor in mixture.state_dict().items():
            self.register_buffer(name, tensor.clone())

    @classmethod
    def empty_like(cls, state: dict[str, torch.Tensor]) -> MixtureBase:
        """A base of the shapes in ``state`` (a ``state_dict``), ready for ``load_state_dict``."""
        return cls(GaussianMixture.from_state_dict({name: torch.zeros(t.shape) for name, t in state.items()}))

    @property
    def mixture(self) -> GaussianMixture:
        rotations = self.rotations if self.rotations.numel() else None
        return GaussianMixture.from_eigen(self.means, self.log_weights, self.variances, rotations)

    def denoise(self, x: torch.Tensor, m: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The exact posterior mean ``E[x_0 | x_t = x]`` under the mixture diffused to ``(m, std)`` (``[B]`` each)."""
        isotropic = self.rotations.numel() == 0 and self.variances.shape[1] == 1
        if isotropic and x.shape[0] * self.means.shape[0] >= RUNS_MIN_PAIRS:
            return _denoise_by_runs(self.means, self.log_weights, self.variances[:, 0], x, m, std)
        return self.mixture.denoise(x, m, std)


def _denoise_by_runs(
    means: torch.Tensor, log_weights: torch.Tensor, variances: torch.Tensor, x: torch.Tensor, m, std
) -> torch.Tensor:
    """``GaussianMixture.denoise`` of an isotropic mixture whose components come in runs of one
    variance (a KDE's kernels, then the tail), with one matrix product per run for every row's
    log-joint: ``log w_k + log N(x; m mu_k, var I)`` is ``[m x / var, -m^2 / (2 var), 1]`` times
    ``[mu_k, |mu_k|^2, log w_k]`` plus a term of the row alone, and the posterior mean is
    ``sum_runs (1 - m g) (r @ mu) + g (sum r) x`` with ``g = m lam / var`` the run's gain.
    """
    values, counts = torch.unique_consecutive(variances, return_counts=True)
    d, m2, s2 = x.shape[1], m**2, std**2
    x2 = x.square().sum(1)
    logits, runs, start = [], [], 0
    for lam, count in zip(values.tolist(), counts.tolist(), strict=True):
        mu, log_w = means[start : start + count].to(x), log_weights[start : start + count].to(x)
        start += count
        var = m2 * lam + s2  # [B]
        left = torch.cat(
            [x * (m / var)[:, None], (-0.5 * m2 / var)[:, None], torch.ones_like(var)[:, None]], 1
        )
        right = torch.cat([mu, mu.square().sum(1, keepdim=True), log_w[:, None]], 1)
        row = -0.5 * (x2 / var + d * (var.log() + math.log(2 * math.pi)))
        logits.append(torch.addmm(row[:, None], left, right.T))
        runs.append((mu, m * lam / var))
    r = torch.softmax(torch.cat(logits, 1), dim=1)
    out, start = torch.zeros_like(x), 0
    for mu, gain in runs:
        r_run = r[:, start : start + len(mu)]
        start += len(mu)
        out = out + (r_run @ mu) * (1 - m * gain)[:, None] + (gain * r_run.sum(1))[:, None] * x
    return out


def with_tail(mixture: GaussianMixture, weight: float) -> GaussianMixture:
    """``mixture`` at ``1 - weight`` plus the whitened Gaussian ``N(0, I)`` at ``weight``: no row falls
    more than ``-log(weight)`` below that Gaussian's log-density, however narrow the other components."""
    d, like = mixture.dim, mixture.means
    log_weights = torch.cat([mixture.log_weights + math.log1p(-weight), like.new_tensor([math.log(weight)])])
    variances = torch.cat([mixture.variances, like.new_ones(1, mixture.variances.shape[1])])
    rotations = mixture.rotations
    if rotations is not None:
        rotations = torch.cat([rotations, torch.eye(d, dtype=rotations.dtype, device=rotations.device)[None]])
    return GaussianMixture.from_eigen(
        torch.cat([mixture.means, like.new_zeros(1, d)]), log_weights, variances, rotations
    )


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
def _held_out(base: GaussianMixture, z_val: torch.Tensor) -> float:
    with torch.no_grad():
        return float(base.to(z_val.device).log_prob(z_val).mean())


def fit_gmm(
    z_train: torch.Tensor, seed: int, components: tuple[int, ...] = BIC_COMPONENTS
) -> GaussianMixture:
    """A full-covariance Gaussian mixture with the number of components by BIC among ``components``."""
    from sklearn import mixture

    x = z_train.double().cpu().numpy()
    n, d = x.shape
    best, best_bic = None, math.inf
    for k in components:
        if best is not None and k * (1 + d + d * (d + 1) / 2) * BIC_ROWS_PER_PARAM > n:
            break  # (the first size asked for is always fitted)
        gmm = mixture.GaussianMixture(
            k, covariance_type="full", reg_covar=1e-4, random_state=seed % 2**32
        ).fit(x)
        bic = gmm.bic(x)
        if bic < best_bic:
            best, best_bic = gmm, bic
    fitted = GaussianMixture(*(torch.from_numpy(a) for a in (best.means_, best.covariances_, best.weights_)))
    return with_tail(fitted, TAIL_WEIGHT).to(z_train.dtype)


def fit_kde(z_train: torch.Tensor, z_val: torch.Tensor) -> GaussianMixture:
    """The kernel density estimate of (up to ``MAX_KERNELS`` of) the training rows, its bandwidth the
    best of ``KDE_BANDWIDTHS`` times Silverman's rule on the held-out rows."""
    rows = z_train[:MAX_KERNELS]  # the rows come in a seeded random order: a random subset
    n, d = rows.shape
    silverman = (n * (d + 2) / 4) ** (-1 / (d + 4))  # unit-variance (whitened) rows
    bases = [_kde(rows, silverman * f) for f in KDE_BANDWIDTHS]
    return with_tail(max(bases, key=lambda b: _held_out(b, z_val)), TAIL_WEIGHT)


def _kde(rows: torch.Tensor, bandwidth: float) -> GaussianMixture:
    """The kernel density estimate ``(1/N) sum_i N(x; x_i, h^2 I)``, a spherical mixture."""
    n = len(rows)
    return GaussianMixture.spherical(rows, rows.new_full((n,), bandwidth**2), rows.new_ones(n))


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
    candidates: dict[str, tuple[GaussianMixture | None, float]] = {"gaussian": (None, gaussian)}
    if which in ("auto", "gmm"):
        gmm = fit_gmm(z_train, seed)
        if gmm.n_components > 1 or which == "gmm":
            candidates["gmm"] = (gmm, _held_out(gmm, z_val))
    if which in ("auto", "kde"):
        kde = fit_kde(z_train, z_val)
        candidates["kde"] = (kde, _held_out(kde, z_val))
    best = max(candidates, key=lambda k: candidates[k][1]) if which == "auto" else which
    chosen = candidates[best][0]
    return best, None if chosen is None else MixtureBase(chosen), {k: v[1] for k, v in candidates.items()}


def refit_base(name: str, base: MixtureBase, n_val: int, z_all: torch.Tensor, seed: int) -> MixtureBase:
    """The chosen base fitted again on every row of ``z_all`` (the first ``n_val`` were held out), as a
    KDE or a mixture by BIC would be once chosen: the mixture's size chosen again by BIC, the KDE's
    bandwidth scaled by ``(n_all / n_split)^(-1 / (d + 4))``, the rate of a Gaussian kernel's optimal
    bandwidth."""
    if name == "gmm":  # the same selection by BIC, now on every row
        return MixtureBase(fit_gmm(z_all, seed))
    n, d = min(len(z_all) - n_val, MAX_KERNELS), z_all.shape[1]
    rows = z_all[:MAX_KERNELS]
    h = float(base.variances[0, 0].sqrt()) * (len(rows) / n) ** (-1 / (d + 4))
    return MixtureBase(with_tail(_kde(rows, h), TAIL_WEIGHT))
