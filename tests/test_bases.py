"""MixtureBase: the diffused mixture's log-density and posterior mean against the closed forms of
``distributions`` (GaussianMixture.diffuse, Parzen.diffuse and Tweedie's formula)."""

import pytest
import torch

import scorefield as sf
from scorefield.distributions import GaussianMixture, Parzen
from scorefield.estimators.bases import MixtureBase
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
        base = MixtureBase.from_mixture(mix.means, mix.covs, mix.weights)
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
        base, kde = MixtureBase.parzen(rows, 0.3), Parzen(rows, 0.3).diffuse(sde, t)
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
    base = MixtureBase.from_mixture(mix.means, mix.covs, mix.weights).float()
    x, t = torch.randn(5, 2), torch.tensor([0.01, 0.2, 0.4, 0.7, 1.0])
    scale, std = sde.marginal(t)
    whole = base.denoise(x, scale, std)
    rows = torch.cat([base.denoise(x[i : i + 1], scale[i : i + 1], std[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(whole, rows, rtol=1e-5, atol=1e-5)


def test_a_zero_network_on_a_base_gives_the_mixtures_exact_score():
    mix, sde = _mixture(d=2, k=3), sf.VPSDE()
    base = MixtureBase.from_mixture(mix.means, mix.covs, mix.weights).float()
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
    base = MixtureBase.from_mixture(mix.means, mix.covs, mix.weights).float()
    copy = MixtureBase.empty_like(base.state_dict())
    copy.load_state_dict(base.state_dict())
    x, one = torch.randn(8, 2), torch.ones(8)
    assert torch.equal(copy.log_prob(x, one, 0.5 * one), base.log_prob(x, one, 0.5 * one))
    kde = MixtureBase.parzen(torch.randn(10, 2), 0.5)
    assert MixtureBase.empty_like(kde.state_dict()).isotropic
    with pytest.raises(ValueError, match="bandwidth"):
        MixtureBase.parzen(torch.randn(10, 2), 0.0)
    with pytest.raises(ValueError, match="weights"):
        MixtureBase(torch.zeros(2, 2), -torch.ones(2), torch.ones(2, 1))
    with pytest.raises(ValueError, match="param='denoiser'"):
        ScoreModel(MLP(2, hidden=8, depth=1), sf.VPSDE(), param="eps", base=kde)
