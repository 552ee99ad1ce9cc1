"""Samplers driven by exact diffused-mixture scores: only the sampler's own error is measured."""

import math

import numpy as np
import pytest
import torch
from _exact import exact_score, held_apart_mixture

from scorefield.keyed import KeyedNoise
from scorefield.metrics import energy_distance, mode_weights
from scorefield.samplers import CORRECTORS, PREDICTORS, sample_ode, sample_pc
from scorefield.sde import VESDE, VPSDE, SubVPSDE

MIX = held_apart_mixture(torch.float32)
N = 4000  # the weights 0.6/0.3/0.1 are then known to +-0.0072 (1 sd): 0.03 is 4 sd


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def noise_band():
    """Energy distance between independent true sample sets of size N: mean + 4 sd over 6 pairs."""
    values = [energy_distance(MIX.sample(N, gen(100 + i)), MIX.sample(N, gen(200 + i))) for i in range(6)]
    return float(np.mean(values) + 4 * np.std(values))


def check_matches_data(x, band):
    assert torch.isfinite(x).all()
    weights = mode_weights(x, MIX)
    assert (weights - MIX.weights.double()).abs().max() < 0.03, weights
    ed = energy_distance(x, MIX.sample(N, gen(7)))
    assert ed < band, (ed, band)


@pytest.mark.parametrize("corrector", [None, "langevin", "langevin_batch"])
@pytest.mark.parametrize("predictor", list(PREDICTORS))
def test_every_predictor_with_and_without_corrector_reproduces_the_data(predictor, corrector, noise_band):
    sde = VPSDE()
    x_T = sde.prior_sample((N, 2), generator=gen(1))
    x, info = sample_pc(
        exact_score(MIX, sde), sde, x_T, 300, predictor=predictor, corrector=corrector, generator=gen(2)
    )
    check_matches_data(x, noise_band)
    assert info["nfe"] == 300 * (1 + (corrector is not None)) + 1  # + Tweedie's denoising


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
def test_predictor_corrector_under_ve_and_subvp(predictor, noise_band):
    for sde in (VESDE(sigma_min=0.01, sigma_max=30.0), SubVPSDE()):
        x_T = sde.prior_sample((N, 2), generator=gen(3))
        x, _ = sample_pc(exact_score(MIX, sde), sde, x_T, 300, predictor=predictor, generator=gen(4))
        check_matches_data(x, noise_band)


@pytest.mark.parametrize("method,n_steps", [("dopri5", None), ("rk4", 30), ("heun", 60), ("euler", 300)])
def test_every_ode_method_reproduces_the_data(method, n_steps, noise_band):
    sde = VPSDE()
    x_T = sde.prior_sample((N, 2), generator=gen(5))
    x, info = sample_ode(exact_score(MIX, sde), sde, x_T, n_steps, method=method)
    check_matches_data(x, noise_band)
    expected_nfe = {"rk4": 4 * 30, "heun": 2 * 60, "euler": 300}
    if method in expected_nfe:
        assert info["nfe"] == expected_nfe[method]
    else:
        assert 0 < info["nfe"] < 1000


def test_fixed_step_ode_methods_converge_at_their_order():
    mix = held_apart_mixture(torch.float64)
    sde = VPSDE()
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((64, 2), generator=gen(6), dtype=torch.float64)
    eps = 0.05  # away from t = 0, where the exact field turns stiff and asymptotics start late
    ref, _ = sample_ode(score, sde, x_T, method="dopri5", rtol=1e-11, atol=1e-11, t_end=eps)
    for method, order, steps in [
        ("euler", 1, (40, 80, 160)),
        ("heun", 2, (20, 40, 80)),
        ("rk4", 4, (20, 40, 80)),
    ]:
        errors = [
            (sample_ode(score, sde, x_T, n, method=method, t_end=eps)[0] - ref).abs().max().item()
            for n in steps
        ]
        slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
        assert abs(slope - order) < 0.3, (method, errors, slope)


def test_batch_corrector_step_size_follows_the_batch_averaged_snr_rule():
    # for a standard normal p_t under VE, z and s have the same average norm, so eps = 2 r^2
    sde = VESDE(sigma_min=0.01, sigma_max=1.0)
    x = torch.randn(4000, 2, generator=gen(8), dtype=torch.float64)
    t = torch.ones(4000, dtype=torch.float64)

    def score(x, t):
        return -x  # exact score of N(0, I)

    g1, g2 = gen(9), gen(9)
    new, mean = CORRECTORS["langevin_batch"](score, sde, x, t, t, g1, snr=0.1)
    z = torch.randn(x.shape, generator=g2, dtype=x.dtype)
    step = 2 * (0.1 * z.norm(dim=1).mean() / x.norm(dim=1).mean()) ** 2
    torch.testing.assert_close(mean, x + step * score(x, t))
    torch.testing.assert_close(new, mean + torch.sqrt(2 * step) * z)


def test_corrector_step_is_the_snr_rule_at_the_typical_score_and_per_sample():
    """eps = 2 alpha (r std(t))^2: for p_t = N(0, std^2 I) (VE started from a point) it is Song et al.'s
    rule with E||z||^2 / E||s||^2 = std^2; it differs per time, never per batch."""
    sde = VPSDE()
    t, t_next = torch.full((6,), 0.5, dtype=torch.float64), torch.full((6,), 0.48, dtype=torch.float64)
    x = torch.randn(6, 3, generator=gen(10), dtype=torch.float64)
    (m, std), (m_next, _) = sde.marginal(t[:1]), sde.marginal(t_next[:1])
    step = 2 * (m / m_next) ** 2 * (0.2 * std) ** 2

    def score(x, t):
        return -x / std**2

    new, mean = CORRECTORS["langevin"](score, sde, x, t, t_next, gen(11), snr=0.2)
    z = torch.randn(x.shape, generator=gen(11), dtype=x.dtype)
    torch.testing.assert_close(mean, x + step * score(x, t))
    torch.testing.assert_close(new, mean + torch.sqrt(2 * step) * z)
    # with noise keyed by sample, a sub-batch gets exactly the rows it would get in the whole batch
    keyed = KeyedNoise(3, torch.arange(6))
    whole, _ = CORRECTORS["langevin"](score, sde, x, t, t_next, keyed, snr=0.2)
    keyed = KeyedNoise(3, torch.arange(2, 4))
    part, _ = CORRECTORS["langevin"](score, sde, x[2:4], t[:2], t_next[:2], keyed, snr=0.2)
    torch.testing.assert_close(part, whole[2:4], rtol=1e-12, atol=1e-12)


def test_samplers_are_reproducible_and_build_no_graph():
    sde = VPSDE()
    x_T = sde.prior_sample((100, 2), generator=gen(10))
    score = exact_score(MIX, sde)
    a, _ = sample_pc(score, sde, x_T, 20, generator=gen(11))
    b, _ = sample_pc(score, sde, x_T, 20, generator=gen(11))
    assert torch.equal(a, b) and not a.requires_grad
    seen = []
    sample_pc(score, sde, x_T, 20, generator=gen(11), callback=lambda info: seen.append(sorted(info)))
    assert seen == [["i", "t", "x", "x_mean"]] * 20
    times = []
    x, info = sample_ode(
        score,
        sde,
        x_T,
        5,
        method="rk4",
        return_trajectory=True,
        callback=lambda info: times.append(info["t"]),
    )
    assert info["trajectory"].shape == (6, 100, 2) and torch.equal(info["trajectory"][-1], x)
    assert times == info["times"][1:].tolist()


def test_bad_arguments_are_refused():
    sde = VPSDE()
    x_T = torch.zeros(3, 2)
    score = exact_score(MIX, sde)
    with pytest.raises(ValueError, match="unknown predictor"):
        sample_pc(score, sde, x_T, 3, predictor="nope")
    with pytest.raises(ValueError, match="unknown ODE method"):
        sample_ode(score, sde, x_T, method="nope")
    with pytest.raises(ValueError, match="needs a number of steps"):
        sample_ode(score, sde, x_T, method="rk4")
    with pytest.raises(ValueError, match="decrease"):
        sample_pc(score, sde, x_T, torch.tensor([0.1, 0.5]))
    assert math.isfinite(float(sample_pc(score, sde, x_T, 2)[0].sum()))
