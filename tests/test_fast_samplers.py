"""DPM-Solver++(2M) (``sample_dpm``) driven by exact diffused-mixture scores: exactness for a constant
denoiser, convergence order against dopri5, mode weights at 20 score evaluations, shapes, NFE counts."""

import math

import pytest
import torch
from _exact import exact_score, held_apart_mixture

from scorefield import likelihood
from scorefield.distributions import GaussianMixture
from scorefield.metrics import mode_weights
from scorefield.samplers import counted, sample_dpm, sample_ode
from scorefield.sde import VESDE, VPSDE, SubVPSDE

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=30.0)}


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("order", [1, 2])
def test_exact_when_the_denoiser_is_constant(name, order):
    """Data at one point mu: D = mu at every t, the exponential integrator's only approximation is exact,
    and the flow is x_t = m_t mu + (std_t / std_1)(x_1 - m_1 mu) in any number of steps."""
    sde = SDES[name]
    mu = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    point = GaussianMixture(mu, 1e-12 * torch.eye(2, dtype=torch.float64)[None], [1.0])
    x_T = sde.prior_sample((64, 2), generator=gen(0), dtype=torch.float64)
    x, info = sample_dpm(exact_score(point, sde), sde, x_T, 3, order=order, denoise=False)
    times = info["times"].double()
    (m_1, m_eps), (std_1, std_eps) = sde.marginal(times[[0, -1]])
    expected = m_eps * mu + (std_eps / std_1) * (x_T - m_1 * mu)
    torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-6)


def observed_order(errors, steps):
    """Least-squares slope of -log(error) against log(steps)."""
    logs = torch.tensor([math.log(n) for n in steps], dtype=torch.float64)
    errs = torch.tensor(errors, dtype=torch.float64).log()
    logs_c = logs - logs.mean()
    return float(-(logs_c * (errs - errs.mean())).sum() / logs_c.square().sum())


@pytest.mark.parametrize("grid", ["uniform", "log_snr"])
@pytest.mark.parametrize("name", list(SDES))
def test_converges_to_the_dopri5_solution_with_its_order(name, grid):
    sde = SDES[name]
    mix = held_apart_mixture()
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((24, 2), generator=gen(1), dtype=torch.float64)
    reference, _ = sample_ode(score, sde, x_T, rtol=1e-9, atol=1e-9)
    steps = (80, 160, 320)
    for order in (1, 2) if grid == "uniform" else (2,):
        errors = []
        for n in steps:
            x, _ = sample_dpm(score, sde, x_T, n, order=order, grid=grid, denoise=False)
            errors.append(float((x - reference).norm(dim=1).median()))
        assert errors[-1] < 0.02, errors
        assert abs(observed_order(errors, steps) - order) < 0.25, (order, errors)


@pytest.mark.parametrize("name", list(SDES))
def test_mode_weights_at_20_score_evaluations(name):
    """4000 samples: the weights 0.6/0.3/0.1 are known to +-0.0077 (1 sd), so 0.03 is about 4 sd."""
    sde = SDES[name]
    mix = held_apart_mixture(torch.float32)
    x_T = sde.prior_sample((4000, 2), generator=gen(2))
    x, info = sample_dpm(exact_score(mix, sde), sde, x_T, 19)
    assert info["nfe"] == 20
    assert torch.isfinite(x).all()
    assert (mode_weights(x, mix) - mix.weights.double()).abs().max() < 0.03


def test_images_and_vectors_follow_the_same_path():
    """[B, C, H, W] input gives the [B, d] result reshaped, on a 4-D mixture with an exact score."""
    sde = VPSDE()
    means = torch.tensor([[2.0, 0.0, -1.0, 1.0], [-2.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    mix = GaussianMixture(means, 0.3 * torch.eye(4, dtype=torch.float64).expand(2, 4, 4), [0.7, 0.3])
    flat_score = exact_score(mix, sde)

    def image_score(x, t):
        assert x.shape[1:] == (1, 2, 2)
        return flat_score(x.flatten(1), t).reshape(x.shape)

    x_T = sde.prior_sample((50, 4), generator=gen(3), dtype=torch.float64)
    flat, _ = sample_dpm(flat_score, sde, x_T, 10)
    image, _ = sample_dpm(image_score, sde, x_T.reshape(50, 1, 2, 2), 10)
    assert image.shape == (50, 1, 2, 2)
    torch.testing.assert_close(image.flatten(1), flat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("denoise", [True, False])
def test_counts_score_evaluations_exactly_and_visits_the_grid(denoise):
    sde = VPSDE()
    mix = held_apart_mixture()
    seen = []

    def score(x, t):
        seen.append(float(t[0]))
        return exact_score(mix, sde)(x, t)

    wrapped, calls = counted(score)
    x_T = sde.prior_sample((8, 2), generator=gen(4), dtype=torch.float64)
    x, info = sample_dpm(wrapped, sde, x_T, 7, denoise=denoise)
    assert info["nfe"] == calls[0] == 7 + denoise
    times = info["times"].tolist()
    # with denoising the 7 steps and the step to std = 0 make one uniform grid from 1 to 0
    assert times == pytest.approx(
        [1 - i / 8 for i in range(8)] if denoise else torch.linspace(1, 1e-3, 8).tolist()
    )
    assert seen == pytest.approx(times[:-1] + times[-1:] * denoise)
    grid = torch.tensor([1.0, 0.5, 0.1, 0.01, 0.001], dtype=torch.float64)
    _, info = sample_dpm(score, sde, x_T, None, time_grid=grid, denoise=False)
    assert info["nfe"] == 4


def test_rejects_unknown_order():
    with pytest.raises(ValueError, match="order"):
        sample_dpm(lambda x, t: x, VPSDE(), torch.zeros(2, 2), 5, order=3)


@pytest.mark.parametrize("rows", [1, 50, 10**6])
@pytest.mark.parametrize("shape", [(40, 7), (30, 2, 3, 3)])
def test_exact_divergence_in_chunks_is_the_jacobian_trace(shape, rows, monkeypatch):
    """The exact divergence's chunked backward passes (one basis vector, a partial last chunk, all at
    once) give the trace of the Jacobian that torch.func computes, for vectors and images."""
    monkeypatch.setattr(likelihood, "EXACT_ROWS", rows)
    g = gen(5)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    d = x[0].numel()
    weight = torch.randn(d, d, generator=g, dtype=torch.float64)

    def fn(y, t):
        return torch.tanh(y.flatten(1) @ weight).reshape(y.shape) * (1 + t.reshape(-1, *[1] * (y.ndim - 1)))

    t = torch.full((shape[0],), 0.3, dtype=torch.float64)
    jacobian = torch.func.vmap(torch.func.jacrev(lambda yi, ti: fn(yi[None], ti[None])[0].flatten()))(x, t)
    trace = jacobian.reshape(shape[0], d, d).diagonal(dim1=1, dim2=2).sum(-1)
    torch.testing.assert_close(likelihood.divergence(fn, x, t), trace, rtol=1e-12, atol=1e-12)
