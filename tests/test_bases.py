"""MixtureBase: a mixture held as buffers, whose per-row diffused log-density and posterior mean are
the closed forms of ``distributions`` (GaussianMixture.diffuse, Parzen.diffuse and Tweedie's formula)."""

import math

import pytest
import torch

import scorefield as sf
from scorefield.distributions import GaussianMixture, Parzen
from scorefield.estimators.bases import MixtureBase, with_tail
from scorefield.nets.mlp import MLP
from scorefield.score import ScoreModel, posterior_mean


def _mixture(d: int = 3, k: int = 4) -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    means = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(means, covs, torch.rand(k, generator=g, dtype=torch.float64) + 0.2)


@pytest.mark.parametrize("t", [1e-3, 0.1, 0.5, 1.0])
def test_full_base_is_the_diffused_mixture(t):
    torch.set_default_dtype(torch.float64)
    try:
        mix, sde = _mixture(), sf.VPSDE()
        base = MixtureBase(mix).mixture
        x = mix.diffuse(sde, t).sample(64, torch.Generator().manual_seed(1))
        scale, std = sde.marginal(torch.full((64,), t))
        truth = mix.diffuse(sde, t)
        torch.testing.assert_close(base.log_prob(x, scale, std), truth.log_prob(x), rtol=1e-10, atol=1e-10)
        want = posterior_mean(x, truth.score(x), scale[0], std[0])
        torch.testing.assert_close(base.denoise(x, scale, std), want, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("t", [1e-3, 0.3, 1.0])
def test_parzen_base_is_the_diffused_kde(t):
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(2)
        rows, sde = torch.randn(50, 2, generator=g), sf.VPSDE()
        base, kde = MixtureBase(Parzen(rows, 0.3).as_mixture()).mixture, Parzen(rows, 0.3).diffuse(sde, t)
        x = torch.randn(40, 2, generator=g)
        scale, std = sde.marginal(torch.full((40,), t))
        torch.testing.assert_close(base.log_prob(x, scale, std), kde.log_prob(x), rtol=1e-10, atol=1e-10)
        want = posterior_mean(x, kde.score(x), scale[0], std[0])
        torch.testing.assert_close(base.denoise(x, scale, std), want, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


def test_per_example_times_differ():
    """Each row is diffused to its own time: the batch equals row-by-row evaluation."""
    mix, sde = _mixture(d=2, k=3), sf.VESDE(sigma_min=0.01, sigma_max=10.0)
    base = MixtureBase(mix).float()
    x, t = torch.randn(5, 2), torch.tensor([0.01, 0.2, 0.4, 0.7, 1.0])
    scale, std = sde.marginal(t)
    whole = base.denoise(x, scale, std)
    rows = torch.cat([base.denoise(x[i : i + 1], scale[i : i + 1], std[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(whole, rows, rtol=1e-5, atol=1e-5)


def test_a_zero_network_on_a_base_gives_the_mixtures_exact_score():
    mix, sde = _mixture(d=2, k=3), sf.VPSDE()
    base = MixtureBase(mix).float()
    net = MLP(2, hidden=16, depth=1)
    torch.nn.init.zeros_(net.output.weight)
    torch.nn.init.zeros_(net.output.bias)
    model = ScoreModel(net, sde, param="denoiser", base=base)
    x = torch.randn(32, 2)
    for t in (0.05, 0.5):
        truth = GaussianMixture(mix.means.float(), mix.covs.float(), mix.weights.float()).diffuse(sde, t)
        torch.testing.assert_close(model(x, t), truth.score(x), rtol=1e-4, atol=1e-4)


def test_state_round_trip_and_bad_inputs():
    mix = _mixture(d=2, k=2)
    kde = MixtureBase(Parzen(torch.randn(10, 2), 0.5).as_mixture())
    diagonal = GaussianMixture.diagonal(mix.means, torch.tensor([[0.5, 2.0], [1.0, 0.3]]), mix.weights)
    x, one = torch.randn(8, 2), torch.ones(8)
    for base in (MixtureBase(mix).float(), kde, MixtureBase(diagonal).float()):
        copy = MixtureBase.empty_like(base.state_dict())
        copy.load_state_dict(base.state_dict())
        assert torch.equal(copy.mixture.log_prob(x, one, 0.5 * one), base.mixture.log_prob(x, one, 0.5 * one))
        assert copy.mixture.isotropic == (base is kde)
    with pytest.raises(ValueError, match="variances must be positive"):
        GaussianMixture.spherical(torch.randn(10, 2), torch.zeros(10), torch.ones(10))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture.spherical(torch.zeros(2, 2), torch.ones(2), -torch.ones(2))
    with pytest.raises(ValueError, match="param='denoiser'"):
        ScoreModel(MLP(2, hidden=8, depth=1), sf.VPSDE(), param="eps", base=kde)


@pytest.mark.parametrize("tail", [0.01, 0.3])
def test_the_tail_is_the_mixture_beside_a_whitened_gaussian(tail):
    """``with_tail(p, a) = (1 - a) p + a N(0, I)`` for every kind of mixture."""
    g = torch.Generator().manual_seed(3)
    full = _mixture(d=2, k=3)
    diagonal = GaussianMixture.diagonal(full.means, full.covs.diagonal(0, 1, 2), full.weights)
    kde = Parzen(torch.randn(6, 2, generator=g, dtype=torch.float64), 0.4).as_mixture()
    x = 3 * torch.randn(20, 2, generator=g, dtype=torch.float64)
    standard = -0.5 * x.square().sum(1) - math.log(2 * math.pi)  # log N(x; 0, I) in two dimensions
    for mix in (full, diagonal, kde):
        want = torch.logaddexp(math.log1p(-tail) + mix.log_prob(x), math.log(tail) + standard)
        torch.testing.assert_close(with_tail(mix, tail).log_prob(x), want, rtol=1e-10, atol=1e-10)
