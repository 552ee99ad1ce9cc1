"""Conditional sampling by replacement and resampling, driven by exact diffused-mixture scores: the
samples given one coordinate are compared with the closed-form conditional mixture."""

import math

import numpy as np
import pytest
import torch
from _exact import exact_score

from scorefield.conditional import inpaint_settings, sample_conditional
from scorefield.distributions import GaussianMixture
from scorefield.keyed import KeyedNoise
from scorefield.metrics import energy_distance, mode_weights
from scorefield.sde import VESDE, VPSDE

N = 4000  # weights near 0.7/0.3 are known to +-0.0072 (1 sd)
# two correlated components, weights 0.4/0.6; given x1 = C the weights turn to 0.715/0.285
MIX = GaussianMixture(
    torch.tensor([[-1.0, -1.5], [1.5, 1.5]], dtype=torch.float64),
    torch.tensor([[[4.0, 0.6], [0.6, 0.25]], [[3.0, -0.6], [-0.6, 0.3]]], dtype=torch.float64),
    torch.tensor([0.4, 0.6], dtype=torch.float64),
)
C = -1.5


def gen(seed):
    return torch.Generator().manual_seed(seed)


def conditional_mixture(mix: GaussianMixture, c: float) -> GaussianMixture:
    """``p(x2 | x1 = c)``: each component's conditional Gaussian, weights ``∝ w_k N(c; μ_k1, Σ_k11)``."""
    mu, cov = mix.means, mix.covs
    s11, s21, s22 = cov[:, 0, 0], cov[:, 1, 0], cov[:, 1, 1]
    log_w = mix.weights.log() - 0.5 * (torch.log(2 * math.pi * s11) + (c - mu[:, 0]) ** 2 / s11)
    means = mu[:, 1] + s21 / s11 * (c - mu[:, 0])
    return GaussianMixture(means[:, None], (s22 - s21**2 / s11)[:, None, None], torch.softmax(log_w, 0))


COND = conditional_mixture(MIX, C)


@pytest.fixture(scope="module")
def noise_band():
    """Energy distance between independent exact conditional sample sets of size N: mean + 4 sd over 6 pairs."""
    values = [energy_distance(COND.sample(N, gen(100 + i)), COND.sample(N, gen(200 + i))) for i in range(6)]
    return float(np.mean(values) + 4 * np.std(values))


def observed_first_coordinate(n: int) -> torch.Tensor:
    x_obs = torch.full((n, 2), float("nan"), dtype=torch.float64)
    x_obs[:, 0] = C
    return x_obs


def given_first_coordinate(law: GaussianMixture, sde, generator) -> tuple[torch.Tensor, dict]:
    """``sample_conditional`` with its defaults and the exact score of ``law``: N rows given x1 = C."""
    mask = torch.tensor([True, False])
    return sample_conditional(
        exact_score(law, sde), sde, observed_first_coordinate(N), mask, generator=generator
    )


def test_the_closed_form_conditional_has_two_unequal_modes_unlike_the_joint():
    w = COND.weights
    assert COND.n_components == 2 and abs(w[0] - w[1]) > 0.3 and w[0] > 0.7  # joint weights: 0.4/0.6
    # held apart, so that counting samples by component measures the weights
    assert (COND.means[1] - COND.means[0]).abs() > 8 * COND.covs.sqrt().max()


def test_resampled_replacement_matches_the_closed_form_conditional(noise_band):
    sde = VPSDE()
    x, info = sample_conditional(
        exact_score(MIX, sde), sde, observed_first_coordinate(N), torch.tensor([True, False]),
        3001, resample=60, generator=gen(1),
    )  # fmt: skip
    assert info["nfe"] == 3001 and info["n_steps"] == 50
    assert (x[:, 0] == C).all() and torch.isfinite(x).all()
    weights = mode_weights(x[:, 1:], COND)
    assert (weights - COND.weights).abs().max() < 0.02, weights
    ed = energy_distance(x[:, 1:], COND.sample(N, gen(7)))
    assert ed < noise_band, (ed, noise_band)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
def test_the_defaults_match_the_closed_form_conditional(sde, noise_band):
    """Sequential Monte Carlo by default: 16 particles on one forward path of x1 and 51 evaluations do
    what replacement needed 3,001 for. The defaults' bias is +0.015 (VP) and +0.013 (VE) on 20,000 rows
    (conditional.py); the tolerance is 0.02."""
    x, info = given_first_coordinate(MIX, sde, gen(1))
    assert info["nfe"] == 51 and info["particles"] == 16 and info["resample"] == 1
    assert (x[:, 0] == C).all() and torch.isfinite(x).all()
    weights = mode_weights(x[:, 1:], COND)
    assert (weights - COND.weights).abs().max() < 0.02, weights
    ed = energy_distance(x[:, 1:], COND.sample(N, gen(7)))
    assert ed < noise_band, (ed, noise_band)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_the_defaults_draw_a_gaussian_conditional_with_its_mean_and_variance(sde, rho):
    """Unit-variance Gaussian data with correlation rho: given x1 = C, x2 is N(rho C, 1 - rho^2). The
    SMC moves by the reverse transition's variance (docs/math.md#conditional-sampling-by-sequential-monte-carlo);
    with the point mass's narrower one the draws' variance was 0.84 (VP) and 0.90 (VE) of the truth for
    rho = 0, 0.76 for rho = 0.8, whose mean was also 0.16 off (0.27 sd). On 20,000 rows the defaults give
    variance ratios 1.00 and 0.96-0.97 and mean errors within 0.015; the tolerances add 3.5 standard errors of
    N = 4000 draws (0.022 on a variance ratio, 0.016 sd on a mean)."""
    cov = torch.tensor([[[1.0, rho], [rho, 1.0]]], dtype=torch.float64)
    law = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), cov, torch.ones(1, dtype=torch.float64))
    x, _ = given_first_coordinate(law, sde, gen(2))
    sd = math.sqrt(1 - rho**2)
    assert abs(float(x[:, 1].mean()) - rho * C) < 0.08 * sd
    assert abs(float(x[:, 1].var()) / sd**2 - 1) < 0.04 + 3.5 * math.sqrt(2 / N)


def test_plain_replacement_leans_towards_the_joint_weights():
    """Without resampling the missing coordinate is conditioned on noisy copies of x1: the weights come
    out far from the conditional's (docs/math.md#conditional-sampling); resampling is what fixes them."""
    sde = VPSDE()
    x, info = sample_conditional(
        exact_score(MIX, sde), sde, observed_first_coordinate(N), torch.tensor([True, False]),
        301, resample=1, generator=gen(2),
    )  # fmt: skip
    assert info["nfe"] == 301 and info["n_steps"] == 300
    assert (mode_weights(x[:, 1:], COND) - COND.weights).abs().max() > 0.08


def test_observed_entries_come_back_exactly_and_missing_values_do_not_leak():
    sde = VPSDE()
    x_obs = MIX.sample(50, gen(3)).to(torch.float32) * 1.37  # values no arithmetic would give back
    mask = torch.rand(50, 2, generator=gen(4)) < 0.5
    mask[:, 0] |= ~mask.any(1)  # every row observes something
    x_obs[~mask] = float("nan")
    x, _ = sample_conditional(exact_score(MIX, sde), sde, x_obs, mask, 41, resample=4, generator=gen(5))
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x[mask], x_obs[mask])
    # what the missing entries hold is never read: a different filling gives the same samples
    x_other, _ = sample_conditional(
        exact_score(MIX, sde), sde, torch.where(mask, x_obs, 1e6), mask, 41, resample=4, generator=gen(5)
    )
    assert torch.equal(x, x_other)


def test_image_shaped_inputs_with_a_broadcast_mask_sample_the_missing_pixels():
    """Pixels i.i.d. N(mu, s^2), so a missing pixel's conditional law is N(mu, s^2) whatever is observed."""
    mu, s = 0.5, 0.3
    sde = VESDE(sigma_min=0.01, sigma_max=5.0)

    def score(x, t):
        scale, std = sde.marginal(t[:1])
        return -(x - scale * mu) / (scale**2 * s**2 + std**2)

    x_obs = torch.full((256, 3, 4, 4), 9.0, dtype=torch.float64)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True  # the top half of every channel of every image is observed
    x, info = sample_conditional(score, sde, x_obs, mask, 201, resample=2, generator=gen(6))
    assert x.shape == x_obs.shape and info["nfe"] == 201
    assert (x[..., :2, :] == 9.0).all()
    missing = x[..., 2:, :]
    se = s / math.sqrt(missing.numel())
    assert abs(float(missing.mean()) - mu) < 5 * se
    assert abs(float(missing.std()) / s - 1) < 5 / math.sqrt(2 * missing.numel()) + 0.02  # + Tweedie's shrink


def test_nfe_is_counted_and_the_budget_is_respected():
    sde = VPSDE()
    calls = []
    score = exact_score(MIX, sde)

    def counting(x, t):
        calls.append(1)
        return score(x, t)

    x_obs, mask = observed_first_coordinate(8), torch.tensor([True, False])
    for nfe, resample, steps in [(2, 1, 1), (100, 7, 14), (106, 7, 15), (50, 1, 49)]:
        calls.clear()
        _, info = sample_conditional(counting, sde, x_obs, mask, nfe, resample=resample, generator=gen(7))
        assert info["nfe"] == len(calls) == steps * resample + 1 <= nfe
        assert info["n_steps"] == steps and len(info["times"]) == steps + 1
    calls.clear()
    x, info = sample_conditional(counting, sde, observed_first_coordinate(3).nan_to_num(0.25), True)
    assert info["nfe"] == 0 and not calls and (x == torch.tensor([C, 0.25], dtype=torch.float64)).all()


def test_samples_do_not_depend_on_the_batch_with_keyed_noise():
    sde = VPSDE()
    x_obs = MIX.sample(12, gen(8))
    mask = torch.rand(12, 2, generator=gen(9)) < 0.5
    mask[:, 1] |= ~mask.any(1)
    mask[0] = torch.tensor([True, False])
    mask[1] = torch.tensor([False, True])
    score = exact_score(MIX, sde)
    whole, _ = sample_conditional(
        score, sde, x_obs, mask, 61, resample=3, generator=KeyedNoise(4, torch.arange(12))
    )
    part, _ = sample_conditional(
        score, sde, x_obs[5:9], mask[5:9], 61, resample=3, generator=KeyedNoise(4, torch.arange(5, 9))
    )
    torch.testing.assert_close(part, whole[5:9], rtol=1e-9, atol=1e-9)
    other, _ = sample_conditional(
        score, sde, x_obs, mask, 61, resample=3, generator=KeyedNoise(5, torch.arange(12))
    )
    assert not torch.allclose(other[~mask], whole[~mask])


def test_particles_do_not_depend_on_the_batch_with_keyed_noise():
    sde = VPSDE()
    x_obs = MIX.sample(10, gen(18))
    mask = torch.tensor([True, False]).expand(10, 2)
    score = exact_score(MIX, sde)
    whole, _ = sample_conditional(
        score, sde, x_obs, mask, 21, resample=1, particles=8, generator=KeyedNoise(4, torch.arange(10))
    )
    part, _ = sample_conditional(
        score, sde, x_obs[3:7], mask[3:7], 21, resample=1, particles=8,
        generator=KeyedNoise(4, torch.arange(3, 7)),
    )  # fmt: skip
    torch.testing.assert_close(part, whole[3:7], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="particles must be an integer >= 1"):
        sample_conditional(score, sde, x_obs, mask, 21, resample=1, particles=0)
    with pytest.raises(ValueError, match="pass resample=1"):
        sample_conditional(score, sde, x_obs, mask, 21, resample=4, particles=8)


def test_bad_inputs_are_refused_with_a_clear_error():
    sde = VPSDE()
    score = exact_score(MIX, sde)
    x_obs = observed_first_coordinate(4)
    mask = torch.tensor([True, False])
    with pytest.raises(ValueError, match="does not broadcast"):
        sample_conditional(score, sde, x_obs, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="0 and 1"):
        sample_conditional(score, sde, x_obs, torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        sample_conditional(score, sde, x_obs, torch.tensor([True, True]))
    with pytest.raises(ValueError, match="no observed entry"):
        sample_conditional(score, sde, x_obs, torch.tensor([False, False]))
    with pytest.raises(ValueError, match="nfe >= 11"):
        sample_conditional(score, sde, x_obs, mask, 10, resample=10)
    with pytest.raises(ValueError, match="resample must be"):
        sample_conditional(score, sde, x_obs, mask, 10, resample=0)
    with pytest.raises(ValueError, match=r"\[B, \.\.\.\]"):
        sample_conditional(score, sde, torch.zeros(2), mask)
    with pytest.raises(ValueError, match="floating-point"):
        sample_conditional(score, sde, torch.zeros(2, 2, dtype=torch.int64), mask)
    x, info = sample_conditional(score, sde, x_obs, torch.tensor([1, 0]), 3, resample=2)  # 0/1 integers
    assert info["nfe"] == 3 and (x[:, 0] == C).all()


def test_inpaint_settings_fill_in_a_budget_of_about_800_network_evaluations():
    assert inpaint_settings(None, None, None) == (51, 1, 16)  # the default: sequential Monte Carlo
    assert inpaint_settings(None, 4, None) == (800, 4, 1)  # resample given: RePaint, one particle
    assert inpaint_settings(None, None, 1) == (800, 4, 1)
    assert inpaint_settings(None, None, 32) == (26, 1, 32)
    assert inpaint_settings(51, None, None) == (51, 1, 16)
    assert inpaint_settings(41, 4, 4) == (41, 4, 4)  # what is given is kept; sample_conditional refuses it
