"""Metrics on pairs whose distance is known: identical distributions and shifted Gaussians."""

import math

import pytest
import torch

from scorefield.distributions import two_gaussians
from scorefield.metrics import (
    auroc,
    energy_distance,
    fisher_divergence,
    frechet_distance,
    mmd,
    mode_weights,
    sliced_wasserstein,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_fisher_divergence_exact_zero_and_scaled():
    p = two_gaussians(dtype=torch.float64)
    x = p.sample(2000, gen(0))
    assert fisher_divergence(p.score, p.score, x) == 0.0
    assert fisher_divergence(lambda x: torch.zeros_like(x), p.score, x) == pytest.approx(1.0)
    assert fisher_divergence(lambda x: 1.1 * p.score(x), p.score, x) == pytest.approx(0.01)
    absolute = fisher_divergence(lambda x: 1.1 * p.score(x), p.score, x, relative=False)
    assert absolute == pytest.approx(0.01 * p.score(x).square().sum(1).mean().item())


def test_mmd_same_distribution_is_zero_within_its_standard_error():
    p = two_gaussians()
    value, se = mmd(p.sample(1000, gen(1)), p.sample(1000, gen(2)), return_stderr=True)
    assert abs(value) < 4 * se
    shifted = p.sample(1000, gen(3)) + 1.0
    value, se = mmd(p.sample(1000, gen(4)), shifted, return_stderr=True)
    assert value > 10 * se


def test_mmd_matches_closed_form_for_shifted_gaussians():
    # N(0, I) vs N(delta, I) in d = 2, kernel exp(-|a-b|^2 / (2h^2)):
    # MMD^2 = 2 (h^2 / (h^2 + 2))^{d/2} (1 - exp(-|delta|^2 / (2 (h^2 + 2))))
    d, h = 2, 1.5
    delta = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x = torch.randn(3000, d, generator=gen(5), dtype=torch.float64)
    y = torch.randn(3000, d, generator=gen(6), dtype=torch.float64) + delta
    value, se = mmd(x, y, bandwidths=[h], return_stderr=True)
    c = h**2 + 2
    exact = 2 * (h**2 / c) ** (d / 2) * (1 - math.exp(-delta.square().sum().item() / (2 * c)))
    assert abs(value - exact) < 4 * se


def test_energy_distance_matches_closed_form_in_one_dimension():
    # X ~ N(0,1), Y ~ N(delta,1): X - Y ~ N(-delta, 2), and
    # E|N(mu, s^2)| = s sqrt(2/pi) e^{-mu^2/2s^2} + mu(1-2Phi(-mu/s))
    def mean_abs(mu, s):
        phi = 0.5 * (1 + math.erf(-mu / s / math.sqrt(2)))
        return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * phi)

    delta = 0.8
    exact = 2 * mean_abs(delta, math.sqrt(2)) - 2 * mean_abs(0.0, math.sqrt(2))
    estimates = []
    for seed in range(5):
        x = torch.randn(2000, 1, generator=gen(10 + seed), dtype=torch.float64)
        y = torch.randn(2000, 1, generator=gen(20 + seed), dtype=torch.float64) + delta
        estimates.append(energy_distance(x, y))
    est = torch.tensor(estimates)
    assert abs(est.mean().item() - exact) < 4 * est.std().item() / math.sqrt(5) + 1e-3
    same = energy_distance(torch.randn(2000, 1, generator=gen(30)), torch.randn(2000, 1, generator=gen(31)))
    assert abs(same) < 0.01


def test_sliced_wasserstein_matches_closed_form_for_shifted_gaussians():
    # projections of N(0,I) and N(delta,I) differ by a shift theta.delta,
    # so SW_2^2 = E(theta.delta)^2 = |delta|^2/d
    d = 3
    delta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = torch.randn(10000, d, generator=gen(40), dtype=torch.float64)
    y = torch.randn(10000, d, generator=gen(41), dtype=torch.float64) + delta
    sw = sliced_wasserstein(x, y, n_projections=1000, generator=gen(42))
    assert sw == pytest.approx(math.sqrt(delta.square().sum().item() / d), rel=0.03)
    # unequal sizes go through quantiles
    assert sliced_wasserstein(x[:4000], x[4000:], generator=gen(43)) < 0.05


def test_mode_weights_recover_mixture_weights():
    p = two_gaussians(weights=(0.65, 0.35))
    w = mode_weights(p.sample(50_000, gen(50)), p)
    assert w.sum().item() == pytest.approx(1.0)
    assert abs(w[0].item() - 0.65) < 4 * math.sqrt(0.65 * 0.35 / 50_000)


def test_frechet_distance_closed_form():
    delta = torch.tensor([1.0, 2.0])
    a = torch.randn(50_000, 2, generator=gen(60), dtype=torch.float64)
    b = torch.randn(50_000, 2, generator=gen(61), dtype=torch.float64) * 2 + delta
    # identical covariances I and 4I: tr(I + 4I - 2*2I) = 2*(1+4-4) = 2, plus |delta|^2 = 5
    assert frechet_distance(a, b) == pytest.approx(7.0, rel=0.03)


def test_auroc():
    assert auroc(torch.zeros(10), torch.ones(10)) == 1.0
    assert auroc(torch.ones(10), torch.zeros(10)) == 0.0
    assert auroc(torch.randn(4000, generator=gen(70)), torch.randn(4000, generator=gen(71))) == pytest.approx(
        0.5, abs=0.03
    )
