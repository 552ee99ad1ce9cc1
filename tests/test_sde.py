"""Forward SDEs: marginals against simulation, schedules against their defining identities."""

import math

import pytest
import torch

from scorefield.distributions import GaussianMixture
from scorefield.sde import VESDE, VPSDE, SubVPSDE

SDES = {
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=10.0),
    "vp": lambda: VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": lambda: SubVPSDE(beta_min=0.1, beta_max=20.0),
}


@pytest.mark.parametrize("name", SDES)
def test_marginal_matches_a_fine_euler_maruyama_simulation(name):
    sde = SDES[name]()
    g = torch.Generator().manual_seed(0)
    n, steps, t_end = 20_000, 1000, 0.6
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64).expand(n, 2).clone()
    x, dt = x0.clone(), t_end / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=torch.float64)
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t)[:, None] * math.sqrt(dt) * z
    m0, s0 = sde.marginal(0.0)
    m, s = sde.marginal(t_end)
    a = m / m0  # the state at t=0 is x0 itself, so x_t = a x0 + noise of variance s^2 - a^2 s0^2
    std = torch.sqrt(s**2 - a**2 * s0**2)
    se_mean = std / math.sqrt(n)
    assert ((x.mean(0) - a * x0[0]).abs() < 4 * se_mean + 2e-3).all()  # + Euler-Maruyama's O(dt) bias
    assert ((x.std(0) / std - 1).abs() < 4 / math.sqrt(2 * n) + 3e-3).all()


@pytest.mark.parametrize("name", SDES)
def test_diffusion_satisfies_the_variance_identity(name):
    # g^2 = d std^2/dt - 2 f(t) std^2 with f(t) = d log m / dt, checked by central differences
    sde = SDES[name]()
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    (m_p, s_p), (m_m, s_m) = sde.marginal(t + h), sde.marginal(t - h)
    _, s = sde.marginal(t)
    dvar = (s_p**2 - s_m**2) / (2 * h)
    f = (torch.log(m_p) - torch.log(m_m)) / (2 * h)
    torch.testing.assert_close(sde.diffusion(t) ** 2, dvar - 2 * f * s**2, rtol=1e-6, atol=1e-8)
    # the drift is f(t) x
    x = torch.randn(19, 3, dtype=torch.float64)
    torch.testing.assert_close(sde.drift(x, t), f[:, None] * x, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", SDES)
def test_marginal_at_one_is_close_to_the_prior_and_std_inverts(name):
    sde = SDES[name]()
    m, s = sde.marginal(1.0)
    assert float(m) < 0.01 or name == "ve"
    assert float(s) == pytest.approx(sde.prior_std, rel=1e-3)
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_std(sde.marginal(t)[1]), t, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", SDES)
def test_shapes_from_points_to_images(name):
    sde = SDES[name]()
    x = torch.randn(4, 3, 8, 8)
    t = torch.rand(4)
    assert sde.drift(x, t).shape == x.shape
    assert sde.reverse_drift(x, t, torch.zeros_like(x)).shape == x.shape
    z = sde.prior_sample((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert z.shape == x.shape and sde.prior_logp(z).shape == (4,)
    # prior_logp is the exact Gaussian log-density
    flat = sde.prior_logp(z[:, :1, :1, :1])
    var = sde.prior_std**2
    torch.testing.assert_close(flat, -0.5 * math.log(2 * math.pi * var) - 0.5 * z[:, 0, 0, 0] ** 2 / var)


def test_invalid_parameters_raise():
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=5.0, beta_max=1.0)


def test_schedules_match_their_closed_forms():
    """docs/math.md's formulas written out independently, including the time-0 marginals."""
    t = torch.tensor([0.0, 0.25, 0.7, 1.0], dtype=torch.float64)
    ve = VESDE(sigma_min=0.02, sigma_max=30.0)
    scale, std = ve.marginal(t)
    torch.testing.assert_close(scale, torch.ones_like(t))
    torch.testing.assert_close(std, 0.02 * (30.0 / 0.02) ** t)  # std(0) = sigma_min: see VESDE
    torch.testing.assert_close(ve.diffusion(t), std * math.sqrt(2 * math.log(30.0 / 0.02)))
    b = 0.1 * t + 0.5 * t**2 * (20.0 - 0.1)  # ∫_0^t β
    scale, std = VPSDE().marginal(t)
    torch.testing.assert_close(scale, torch.exp(-0.5 * b))
    torch.testing.assert_close(std, torch.sqrt(1 - torch.exp(-b)))
    torch.testing.assert_close(VPSDE().diffusion(t), torch.sqrt(0.1 + t * 19.9))
    scale, std = SubVPSDE().marginal(t)
    torch.testing.assert_close(scale, torch.exp(-0.5 * b))
    torch.testing.assert_close(std, 1 - torch.exp(-b))
    torch.testing.assert_close(
        SubVPSDE().diffusion(t), torch.sqrt((0.1 + t * 19.9) * (1 - torch.exp(-2 * b)))
    )


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_marginal_at_one_has_small_kl_to_the_prior(sde):
    # KL(p_1 || prior) per dimension for data N(1, 1) under the default parameters:
    # p_1 = N(m, m² + std²) against the prior N(0, prior_std²)
    scale, std = sde.marginal(1.0)
    var, prior_var = scale**2 + std**2, sde.prior_std**2
    kl = 0.5 * (var / prior_var + scale**2 / prior_var - 1 - torch.log(var / prior_var))
    assert kl < 1e-3


@pytest.mark.parametrize("name", SDES)
def test_time_types_and_small_times(name):
    sde = SDES[name]()
    scale, std = sde.marginal(0.3)  # a python number gives 0-d float64 tensors
    assert scale.ndim == 0 and std.dtype == torch.float64
    scale32, std32 = sde.marginal(torch.full((5,), 0.3))  # a [B] tensor keeps its dtype
    assert scale32.shape == (5,) and std32.dtype == torch.float32
    torch.testing.assert_close(std32, std.float().expand(5))
    t = torch.tensor([1e-5, 1e-4, 1e-3], dtype=torch.float64)  # likelihoods start at t = 1e-5
    torch.testing.assert_close(sde.t_from_std(sde.marginal(t)[1]), t, rtol=1e-8, atol=0)
    assert sde.t_from_std(float(std)).ndim == 0


@pytest.mark.parametrize("name", SDES)
def test_reverse_drift_is_f_minus_g2_score_for_points_and_images(name):
    sde = SDES[name]()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    score = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    f = sde.drift(x, t)
    g2 = sde.diffusion(t)[:, None, None, None] ** 2
    torch.testing.assert_close(sde.reverse_drift(x, t, score), f - g2 * score)
    torch.testing.assert_close(sde.reverse_drift(x, t, score, probability_flow=True), f - 0.5 * g2 * score)
    flat = sde.reverse_drift(x.flatten(1), t, score.flatten(1))
    torch.testing.assert_close(sde.reverse_drift(x, t, score).flatten(1), flat)
    # a python-number time broadcasts over the batch
    torch.testing.assert_close(sde.reverse_drift(x, 0.4, score)[1], sde.reverse_drift(x, t, score)[1])


@pytest.mark.parametrize("name", SDES)
def test_diffused_mixture_scores_are_gradients_of_its_log_prob(name):
    sde = SDES[name]()
    g = torch.Generator().manual_seed(4)
    means = torch.tensor([[-3.0, -3.0], [3.0, 3.0], [3.0, -3.0]], dtype=torch.float64)
    covs = torch.stack(
        [0.5 * torch.eye(2), torch.tensor([[1.0, 0.3], [0.3, 0.6]]), 0.8 * torch.eye(2)]
    ).double()
    mixture = GaussianMixture(means, covs, torch.tensor([0.6, 0.3, 0.1]))
    for t in (1e-3, 0.3, 1.0):
        p_t = mixture.diffuse(sde, t)
        scale, std = sde.marginal(t)
        x = scale * mixture.sample(200, generator=g) + std * torch.randn(
            200, 2, generator=g, dtype=torch.float64
        )
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(p_t.log_prob(x).sum(), x)
        torch.testing.assert_close(p_t.score(x.detach()), grad, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(
            p_t.covs[1], scale**2 * covs[1] + std**2 * torch.eye(2, dtype=torch.float64)
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda: VESDE(sigma_min=0.0, sigma_max=1.0),
        lambda: VESDE(sigma_min=-1.0, sigma_max=1.0),
        lambda: VESDE(sigma_min=0.01, sigma_max=math.inf),
        lambda: VPSDE(beta_min=1.0, beta_max=1.0),
        lambda: SubVPSDE(beta_min=-0.1, beta_max=20.0),
        lambda: SubVPSDE(beta_min=0.1, beta_max=math.nan),
    ],
)
def test_more_invalid_parameters_raise(make):
    with pytest.raises(ValueError):
        make()
