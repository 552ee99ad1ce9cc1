"""Score parameterisations against closed forms: energies, noise-conditional scaling, SDE score models."""

import math

import pytest
import torch
from torch import nn

from scorefield.distributions import Gaussian, GaussianMixture
from scorefield.score import EnergyScore, NoiseConditionalScore, ScoreModel
from scorefield.sde import VESDE, VPSDE, SubVPSDE
from scorefield.utils import append_dims

DT = torch.float64
SDES = [VESDE(sigma_min=0.01, sigma_max=50.0), VPSDE(), SubVPSDE()]
PARAMS = ["eps", "score", "denoiser"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _random_spd(d, generator):
    a = torch.randn(d, d, generator=generator, dtype=DT)
    return a @ a.T + 0.5 * torch.eye(d, dtype=DT)


class QuadraticEnergy(nn.Module):
    """``E(x) = ½ (x - μ)ᵀ P (x - μ)``: the energy of ``N(μ, P^{-1})``."""

    def __init__(self, mean, precision):
        super().__init__()
        self.mean = nn.Parameter(mean.clone())
        self.precision = precision

    def forward(self, x):
        r = x - self.mean
        return 0.5 * ((r @ self.precision) * r).sum(-1)


def _quadratic(d=3, seed=0):
    g = _gen(seed)
    mean = torch.randn(d, generator=g, dtype=DT)
    precision = _random_spd(d, g)
    x = 2 * torch.randn(16, d, generator=g, dtype=DT)
    return EnergyScore(QuadraticEnergy(mean, precision)), Gaussian(mean, torch.linalg.inv(precision)), x


def test_energy_score_is_minus_grad_energy_of_gaussian():
    model, gaussian, x = _quadratic()
    s = model.score(x)
    torch.testing.assert_close(s, gaussian.score(x))
    torch.testing.assert_close(model(x), s)
    # -E is log p up to log Z = ½ log det(2π Σ)
    log_z = 0.5 * torch.logdet(2 * math.pi * gaussian.cov)
    torch.testing.assert_close(model.log_prob_unnormalized(x) - log_z, gaussian.log_prob(x))


def test_energy_score_keeps_graph_for_training():
    model, _, x = _quadratic()
    s = model.score(x)
    assert s.requires_grad
    # s = -P (x - μ): d(Σ_batch Σ_i s_i)/dμ = B · Σ_i P_i
    (grad_mean,) = torch.autograd.grad(s.sum(), model.energy_net.mean)
    torch.testing.assert_close(grad_mean, x.shape[0] * model.energy_net.precision.sum(0))
    # differentiable in x as well: ∇_x s = -P (used by implicit and sliced score matching)
    x_leaf = x.clone().requires_grad_(True)
    s = model.score(x_leaf)
    for i in range(x.shape[1]):
        (row,) = torch.autograd.grad(s[:, i].sum(), x_leaf, retain_graph=True)
        torch.testing.assert_close(row, -model.energy_net.precision[i].expand_as(x))


def test_energy_score_under_no_grad_for_sampling():
    model, gaussian, x = _quadratic()
    with torch.no_grad():
        s = model.score(x)
    assert not s.requires_grad and not x.requires_grad
    torch.testing.assert_close(s, gaussian.score(x))


def test_energy_net_must_return_one_value_per_example():
    model = EnergyScore(nn.Identity())
    with pytest.raises(ValueError, match="one value per example"):
        model.score(torch.randn(4, 3))


class SmoothedGaussianOracle(nn.Module):
    """``F(x, log σ) = σ ∇log p_σ(x)`` for ``p = N(μ, s0² I)``, i.e. the NCSN network at its optimum."""

    def __init__(self, mean, s0):
        super().__init__()
        self.mean, self.s0 = mean, s0

    def forward(self, x, log_sigma):
        sigma = append_dims(log_sigma.exp(), x.ndim)
        return -sigma * (x - self.mean) / (self.s0**2 + sigma**2)


def test_noise_conditional_score_divides_by_sigma():
    mean, s0 = torch.tensor([1.0, -2.0], dtype=DT), 0.7
    model = NoiseConditionalScore(SmoothedGaussianOracle(mean, s0))
    x = torch.randn(6, 2, generator=_gen(), dtype=DT)
    sigmas = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 50.0], dtype=DT)
    expected = -(x - mean) / append_dims(s0**2 + sigmas**2, 2)
    torch.testing.assert_close(model(x, sigmas), expected)
    # a number serves every example: the exact score of p.smooth(0.3)
    p = Gaussian(mean, s0**2 * torch.eye(2, dtype=DT))
    torch.testing.assert_close(model(x, 0.3), p.smooth(0.3).score(x))


class InverseParamOracle(nn.Module):
    """The network output that makes ``ScoreModel(·, sde, param)`` return the exact score of ``p_t``.

    It undoes the input scaling, asks ``p.diffuse(sde, t)`` for the true score and inverts the
    parameterisation: eps ``F = -std s``; score ``F = std s``; denoiser
    ``F = (E[x0|xt] - m x/(m²+std²)) · sqrt(m²+std²)/std`` with Tweedie's ``E[x0|xt] = (x + std² s)/m``.
    """

    def __init__(self, p, sde, t, param):
        super().__init__()
        self.p_t, self.sde, self.t, self.param = p.diffuse(sde, t), sde, t, param

    def forward(self, x_in, c_noise):
        scale, std = (float(v) for v in self.sde.marginal(self.t))
        torch.testing.assert_close(c_noise, torch.full_like(c_noise, math.log(std)))
        norm = math.sqrt(scale**2 + std**2)
        x = x_in * norm
        score = self.p_t.score(x.flatten(1)).reshape(x.shape)
        if self.param == "eps":
            return -std * score
        if self.param == "score":
            return std * score
        posterior_mean = (x + std**2 * score) / scale
        return (posterior_mean - scale * x / norm**2) * norm / std


def _mixture():
    g = _gen(1)
    means = 1.5 * torch.randn(3, 2, generator=g, dtype=DT)
    covs = torch.stack([0.3 * _random_spd(2, g) for _ in range(3)])
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=DT))


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("t", [0.02, 0.5, 1.0])
def test_score_model_returns_exact_score_for_oracle_net(param, sde, t):
    p = _mixture()
    model = ScoreModel(InverseParamOracle(p, sde, t, param), sde, param=param)
    x = p.diffuse(sde, t).sample(64, generator=_gen(2))
    truth = p.diffuse(sde, t).score(x)
    torch.testing.assert_close(model.score(x, t), truth)
    torch.testing.assert_close(model(x, torch.full((64,), t, dtype=DT)), truth)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_tweedie_denoise_is_gaussian_posterior_mean(param, sde):
    # x0 ~ N(mu, S), xt = m x0 + std z: E[x0 | xt] = mu + S m (m² S + std² I)^{-1} (xt - m mu)
    g = _gen(3)
    mu, cov = torch.randn(3, generator=g, dtype=DT), _random_spd(3, g)
    p = Gaussian(mu, cov)
    for t in (0.05, 0.4, 0.9):
        model = ScoreModel(InverseParamOracle(p, sde, t, param), sde, param=param)
        scale, std = (float(v) for v in sde.marginal(t))
        xt = p.diffuse(sde, t).sample(32, generator=g)
        gain = scale * cov @ torch.linalg.inv(scale**2 * cov + std**2 * torch.eye(3, dtype=DT))
        posterior_mean = mu + (xt - scale * mu) @ gain.T
        torch.testing.assert_close(model.denoise(xt, t), posterior_mean)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_affine_form_gives_the_score(param, sde):
    # s = offset + gain F(inputs, c_noise) for whatever F the network computes
    model = ScoreModel(InverseParamOracle(_mixture(), sde, 0.3, param), sde, param=param)
    x = torch.randn(16, 2, generator=_gen(6), dtype=DT)
    scale, std = (torch.full((16,), float(v), dtype=DT) for v in sde.marginal(0.3))
    inputs, c_noise, offset, gain = model.affine(x, scale, std)
    score = gain * model.net(inputs, c_noise) + (0 if offset is None else offset)
    torch.testing.assert_close(score, model.score(x, 0.3))
    assert (offset is None) == (param != "denoiser")


class Zero(nn.Module):
    def forward(self, x, c):
        return torch.zeros_like(x)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("shape", [(8, 3), (8, 1, 2, 2)])
def test_denoiser_preconditioning_is_exact_for_standard_normal_data(sde, shape):
    # with c_skip = m²/(m²+std²) the zero network is the optimal denoiser of N(0, I) data
    model = ScoreModel(Zero(), sde, param="denoiser")
    d = math.prod(shape[1:])
    p = Gaussian(torch.zeros(d, dtype=DT), torch.eye(d, dtype=DT))
    for t in (0.1, 0.7):
        x = torch.randn(shape, generator=_gen(4), dtype=DT)
        expected = p.diffuse(sde, t).score(x.flatten(1)).reshape(shape)
        torch.testing.assert_close(model.score(x, t), expected)


@pytest.mark.parametrize("param", PARAMS)
def test_score_model_image_shapes(param):
    sde = VPSDE()
    d, s0 = 4, 0.8
    p = Gaussian(torch.zeros(d, dtype=DT), s0**2 * torch.eye(d, dtype=DT))
    model = ScoreModel(InverseParamOracle(p, sde, 0.3, param), sde, param=param)
    x = torch.randn(5, 1, 2, 2, generator=_gen(5), dtype=DT)
    scale, std = (float(v) for v in sde.marginal(0.3))
    torch.testing.assert_close(model.score(x, 0.3), -x / (scale**2 * s0**2 + std**2))
    assert model.denoise(x, 0.3).shape == x.shape


def test_score_model_rejects_unknown_param():
    with pytest.raises(ValueError, match="unknown param 'x0'"):
        ScoreModel(Zero(), VPSDE(), param="x0")
