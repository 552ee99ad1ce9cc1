"""Forward SDEs: marginals against simulation, schedules against their defining identities."""

import math

import pytest
import torch

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
