"""Scalers see a density and a score modelled in scaled units in data units: exact for Gaussians."""

import numpy as np
import torch

from scorefield.distributions import Gaussian
from scorefield.scalers import Standardizer, Whitener

MEAN = torch.tensor([50.0, -3.0, 0.5], dtype=torch.float64)
COV = torch.tensor([[100.0, 2.0, 1.0], [2.0, 0.25, 0.1], [1.0, 0.1, 4.0]], dtype=torch.float64)


def _data(n=20_000):
    return Gaussian(MEAN, COV).sample(n, torch.Generator().manual_seed(0))


def test_a_whitener_turns_the_standard_normal_into_the_fitted_gaussian():
    """A whitener fitted to many rows maps N(0, I) in z to N(mean, cov) in x: log-density and score."""
    x = _data()
    scaler = Whitener().fit(x)
    standard = Gaussian(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    fitted = Gaussian(x.mean(0), torch.cov(x.T, correction=0))
    rows = x[:50]
    # the shrinkage is O(1/n) or less for 20,000 rows: the fitted Gaussian is matched to that order
    torch.testing.assert_close(
        scaler.log_prob(standard.log_prob, rows), fitted.log_prob(rows), atol=2e-2, rtol=0
    )
    torch.testing.assert_close(scaler.score(standard.score, rows), fitted.score(rows), atol=2e-2, rtol=2e-2)


def test_a_standardizer_is_exact_for_the_diagonal_gaussian():
    x = _data()
    scaler = Standardizer().fit(x)
    standard = Gaussian(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    diagonal = Gaussian(scaler.mean, torch.diag(scaler.std**2))
    rows = x[:50]
    torch.testing.assert_close(scaler.log_prob(standard.log_prob, rows), diagonal.log_prob(rows))
    torch.testing.assert_close(scaler.score(standard.score, rows), diagonal.score(rows))
    torch.testing.assert_close(scaler.pullback(torch.ones(1, 3, dtype=torch.float64)), 1 / scaler.std[None])


def _gaussian_held_out(scaler: Whitener, rows: torch.Tensor) -> float:
    standard = Gaussian(
        torch.zeros(rows.shape[1], dtype=torch.float64), torch.eye(rows.shape[1], dtype=torch.float64)
    )
    return float(scaler.log_prob(standard.log_prob, rows).mean())


def test_the_whitener_shrinks_by_held_out_likelihood():
    """The shrinkage is chosen for held-out rows: little where a near-exact linear relation holds (and the
    fitted Gaussian then beats Ledoit-Wolf's on fresh rows by nats), much for few isotropic rows."""
    from sklearn.covariance import LedoitWolf

    g = torch.Generator().manual_seed(3)
    factors = torch.randn(4200, 6, generator=g, dtype=torch.float64)
    relation = (
        factors[:, :1] + factors[:, 1:2] + 0.01 * torch.randn(4200, 1, generator=g, dtype=torch.float64)
    )
    x = torch.cat([factors, relation], dim=1) * torch.linspace(1, 10, 7, dtype=torch.float64)
    train, fresh = x[:200], x[200:]
    chosen = Whitener().fit(train)
    assert chosen.shrinkage < 0.01
    ledoit_wolf = Whitener().fit(train)
    z = ledoit_wolf.standardizer.transform(train).numpy()
    a = LedoitWolf().fit(z).shrinkage_
    assert a > 5 * chosen.shrinkage
    cov = (1 - a) * torch.from_numpy(np.cov(z.T, bias=True)) + a * torch.eye(7, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(cov)
    ledoit_wolf.matrix = (evecs * evals.rsqrt()) @ evecs.T
    assert _gaussian_held_out(chosen, fresh) > _gaussian_held_out(ledoit_wolf, fresh) + 1.0

    isotropic = torch.randn(30, 20, generator=g, dtype=torch.float64)
    assert Whitener().fit(isotropic).shrinkage >= 0.3
