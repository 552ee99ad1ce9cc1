"""Scalers see a density and a score modelled in scaled units in data units: exact for Gaussians."""

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
    # Ledoit-Wolf shrinks the correlation by O(1/n): the fitted Gaussian is matched to that order
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
