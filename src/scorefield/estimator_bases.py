"""The estimators' starting point: the base density the network corrects (a whitened Gaussian, a
Gaussian mixture by BIC or a kernel density estimate, chosen on held-out rows and refitted on every
row when the correction is not kept) and the dequantisation of columns with ties. Part of the recipe
(``estimator_recipe``, which re-exports these names); docs/math.md#a-base-density-for-the-denoiser and
docs/math.md#ties-and-dequantisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .bases import MixtureBase

__all__ = [
    "BASES",
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
KDE_BANDWIDTHS = tuple(2.0 ** (k / 4) for k in range(-16, 5))


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
    return MixtureBase.from_mixture(
        torch.from_numpy(best.means_), torch.from_numpy(best.covariances_), torch.from_numpy(best.weights_)
    ).to(z_train.dtype)


def fit_kde(z_train: torch.Tensor, z_val: torch.Tensor) -> MixtureBase:
    """The kernel density estimate of (up to ``MAX_KERNELS`` of) the training rows, its bandwidth the
    best of ``KDE_BANDWIDTHS`` times Silverman's rule on the held-out rows."""
    rows = z_train[:MAX_KERNELS]  # the rows come in a seeded random order: a random subset
    n, d = rows.shape
    silverman = (n * (d + 2) / 4) ** (-1 / (d + 4))  # unit-variance (whitened) rows
    bases = [MixtureBase.parzen(rows, silverman * f) for f in KDE_BANDWIDTHS]
    return max(bases, key=lambda b: _held_out(b, z_val))


BASES = ("auto", "gaussian", "gmm", "kde")


def choose_base(
    z_train: torch.Tensor, z_val: torch.Tensor, seed: int, which: str = "auto"
) -> tuple[str, MixtureBase | None, dict[str, float]]:
    """The base density: ``which`` (one of ``BASES``), or for ``"auto"`` the candidate with the best
    held-out mean log-density. Returns ``(name, base, {candidate: held-out score})``, the base ``None``
    for the whitened Gaussian (the network's own skip term). A mixture by BIC with one component is
    the Gaussian and is not a separate candidate."""
    d = z_train.shape[1]
    gaussian = float((-0.5 * (z_val.square().sum(1) + d * math.log(2 * math.pi))).mean())
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
    return MixtureBase.parzen(rows, h)
