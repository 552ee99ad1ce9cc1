"""Exact log-likelihood through the probability-flow ODE against closed forms."""

import math

import pytest
import torch
from _exact import exact_score

from scorefield.distributions import GaussianMixture
from scorefield.likelihood import bits_per_dim, dequantize, divergence, log_det_scaling, log_likelihood
from scorefield.sde import VESDE, VPSDE, SubVPSDE

# The prior only approximates p_1 (docs/math.md#the-priors-approximation-error). Averaged over the data
# the error is second order (about d Var^2 / (4 sigma_max^4) under VE), but point by point it is first order: about |mu| |z| / sigma_max
# under VE and m(1) |mu| |z| under VP. A compact mixture (|mu| <= 1.6) with sigma_max = 5000
# (|mu|/sigma_max ~ 3e-4) and beta_max = 40 (m(1) = e^-10 ~ 5e-5) puts that floor well below the
# 1e-3 tolerance; the defaults (sigma_max = 300, beta_max = 20) leave ~3e-3 per point.
MIX = GaussianMixture(
    torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=torch.float64),
    torch.stack(
        [0.3 * torch.eye(2, dtype=torch.float64), torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)]
    ),
    torch.tensor([0.7, 0.3], dtype=torch.float64),
)
SDES = {
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=5000.0),
    "vp": lambda: VPSDE(beta_max=40.0),
    "subvp": lambda: SubVPSDE(beta_max=40.0),
}


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", SDES)
def test_exact_score_gives_the_closed_form_log_density(name):
    sde = SDES[name]()
    x = MIX.sample(64, gen(0))
    t_eval = 1e-5
    logp, info = log_likelihood(exact_score(MIX, sde), sde, x, rtol=1e-7, atol=1e-7, t_eval=t_eval)
    # the ODE starts at t = t_eval: its density is p_{t_eval}, the mixture diffused to t_eval (under VE this is
    # the data smoothed by sigma_min, see VESDE); under VP/sub-VP it is p_0 to ~1e-9
    truth = MIX.diffuse(sde, t_eval).log_prob(x)
    assert (logp - truth).abs().mean() < 1e-3
    if name != "ve":
        assert (logp - MIX.log_prob(x)).abs().mean() < 1e-3
    assert info["nfe"] > 0 and torch.isfinite(logp).all()


def test_hutchinson_agrees_within_three_standard_errors():
    sde = VPSDE()
    x = MIX.sample(32, gen(1))
    exact, _ = log_likelihood(exact_score(MIX, sde), sde, x, rtol=1e-6, atol=1e-6)
    est, info = log_likelihood(
        exact_score(MIX, sde),
        sde,
        x,
        divergence="hutchinson",
        n_probes=16,
        rtol=1e-6,
        atol=1e-6,
        generator=gen(2),
    )
    z = (est - exact) / info["stderr"]
    assert (info["stderr"] > 0).all()
    assert (z.abs() < 3).float().mean() > 0.95  # ~99.7% expected within 3 standard errors
    assert z.abs().max() < 4.5


def test_exact_divergence_equals_a_per_dimension_loop():
    torch.manual_seed(0)
    w = torch.randn(5, 5, dtype=torch.float64)

    def field(x, t):
        return torch.tanh(x @ w) * t[:, None]

    x = torch.randn(7, 5, dtype=torch.float64)
    t = torch.rand(7, dtype=torch.float64)
    loop = torch.zeros(7, dtype=torch.float64)
    for i in range(5):
        xi = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(field(xi, t)[:, i].sum(), xi)
        loop += grad[:, i]
    torch.testing.assert_close(divergence(field, x, t), loop)
    probes = torch.randint(0, 2, (20000, 7, 5), generator=gen(3)).double() * 2 - 1
    torch.testing.assert_close(divergence(field, x, t, "hutchinson", probes=probes), loop, atol=0.05, rtol=0)


def test_bits_per_dim_hand_computed():
    # 8-bit data scaled to [0, 1) by k/256: bins of width 1/256. A density of 1 on the unit cube
    # (logp = 0) gives P(bin) = 256^-d, i.e. exactly 8 bits per dimension.
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(bits_per_dim(torch.zeros(3), x, bin_width=1 / 256), torch.full((3,), 8.0))
    # the same in pixel units: log p_pixels = log p_unit + log_det_scaling(256, x) = -d log 256
    logp_pixels = torch.zeros(3) + log_det_scaling(256.0, x)
    torch.testing.assert_close(bits_per_dim(logp_pixels, x, bin_width=1.0), torch.full((3,), 8.0))
    # a hand case: d = 2, logp = -1 nat, bin width 0.5: -( -1 + 2 ln 0.5 ) / (2 ln 2) = (1 + 2 ln 2)/(2 ln 2)
    got = bits_per_dim(torch.tensor([-1.0]), torch.zeros(1, 2), bin_width=0.5)
    assert got.item() == pytest.approx((1 + 2 * math.log(2)) / (2 * math.log(2)))


def test_dequantized_bits_per_dim_is_the_code_length_of_the_bins():
    k = torch.randint(0, 17, (4000, 1), generator=gen(4)).double()
    u = dequantize(k, gen(5)) - k
    assert torch.equal(dequantize(k, gen(5)) - k, u) and (u >= 0).all() and (u < 1).all()
    assert u.mean().item() == pytest.approx(1 / 2, abs=5 * math.sqrt(1 / 12 / 4000))
    # the sample variance of U[0, 1) has variance Var((U - 1/2)^2) / n = (1/180) / n
    assert u.var().item() == pytest.approx(1 / 12, abs=5 * math.sqrt(1 / 180 / 4000))
    # p = N(8, 3^2) on the pixel axis puts mass P(k) on [k, k+1): a code for k costs -log2 P(k) bits.
    # Dequantized bits/dim, averaged over u, exceed it by the Jensen gap log E_u p - E_u log p, which
    # is ~ slope^2 Var(u) / 2 = ((k + 1/2 - 8) / 9)^2 / 24 nats: at most 0.037 nats here.
    normal = torch.distributions.Normal(torch.tensor(8.0, dtype=torch.float64), 3.0)
    levels = torch.arange(17, dtype=torch.float64)[:, None]
    code_length = -(normal.cdf(levels + 1) - normal.cdf(levels)).log2().squeeze(1)
    x = levels.repeat(2000, 1)  # (17 * 2000, 1)
    bits = bits_per_dim(normal.log_prob(dequantize(x, gen(6))).squeeze(1), x, bin_width=1.0).view(2000, 17)
    gap_bits = ((levels.squeeze(1) + 0.5 - 8) / 9) ** 2 / 24 / math.log(2)
    stderr = bits.std(0) / math.sqrt(2000)
    assert ((bits.mean(0) - code_length - gap_bits).abs() < 4 * stderr + 2e-3).all()


def test_bad_arguments_are_refused():
    sde = VPSDE()
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown divergence"):
        log_likelihood(exact_score(MIX, sde), sde, x, divergence="nope")
    with pytest.raises(ValueError, match="t_eval"):
        log_likelihood(exact_score(MIX, sde), sde, x, t_eval=0.0)
