"""DPM-Solver++(2M) (``sample_multistep(solver="dpm++", order=2)``) driven by exact diffused-mixture scores:
convergence order against dopri5 on every SDE and grid, mode weights at 20 score evaluations, shapes, NFE
counts; and the exact divergence's chunks."""

import math

import pytest
import torch
from _exact import exact_score, held_apart_mixture

from scorefield import likelihood, noise
from scorefield.distributions import GaussianMixture
from scorefield.metrics import mode_weights
from scorefield.multistep import sample_multistep
from scorefield.samplers import counted, sample_ode, tweedie
from scorefield.sde import VESDE, VPSDE, SubVPSDE

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=30.0)}
DPM2 = {"solver": "dpm++", "order": 2, "corrector": False}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def observed_order(errors, steps):
    """Least-squares slope of -log(error) against log(steps)."""
    logs = torch.tensor([math.log(n) for n in steps], dtype=torch.float64)
    errs = torch.tensor(errors, dtype=torch.float64).log()
    logs_c = logs - logs.mean()
    return float(-(logs_c * (errs - errs.mean())).sum() / logs_c.square().sum())


@pytest.mark.parametrize("kind", ["uniform", "log_snr"])
@pytest.mark.parametrize("name", list(SDES))
def test_converges_to_the_dopri5_solution_with_its_order(name, kind):
    """The denoised state at t_end = 0.05 against dopri5's (then Tweedie's) at 1e-9: DDIM (order 1) and
    DPM-Solver++(2M) converge at their orders on a uniform and a log-SNR grid."""
    sde, t_end = SDES[name], 0.05
    mix = held_apart_mixture()
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((24, 2), generator=gen(1), dtype=torch.float64)
    ref_x, _ = sample_ode(score, sde, x_T, rtol=1e-9, atol=1e-9, t_end=t_end)
    reference = tweedie(score, sde, ref_x, torch.full((24,), t_end, dtype=torch.float64))
    steps = (80, 160, 320)
    for order in (1, 2) if kind == "uniform" else (2,):
        errors = []
        for n in steps:
            grid = noise.time_grid(n, sde, kind=kind, t_end=t_end, dtype=torch.float64)
            x, _ = sample_multistep(
                score, sde, x_T, grid, **{**DPM2, "order": order}, lower_order_final=False
            )
            errors.append(float((x - reference).norm(dim=1).median()))
        assert errors[-1] < 0.02, errors
        assert abs(observed_order(errors, steps) - order) < 0.25, (order, errors)


@pytest.mark.parametrize("name", list(SDES))
def test_mode_weights_at_20_score_evaluations(name):
    """4000 samples: the weights 0.6/0.3/0.1 are known to +-0.0077 (1 sd), so 0.03 is about 4 sd."""
    sde = SDES[name]
    mix = held_apart_mixture(torch.float32)
    x_T = sde.prior_sample((4000, 2), generator=gen(2))
    x, info = sample_multistep(exact_score(mix, sde), sde, x_T, 20, **DPM2)
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
    flat, _ = sample_multistep(flat_score, sde, x_T, 11, **DPM2)
    image, _ = sample_multistep(image_score, sde, x_T.reshape(50, 1, 2, 2), 11, **DPM2)
    assert image.shape == (50, 1, 2, 2)
    torch.testing.assert_close(image.flatten(1), flat, rtol=1e-12, atol=1e-12)


def test_counts_score_evaluations_exactly_and_visits_the_grid():
    sde = VPSDE()
    mix = held_apart_mixture()
    seen = []

    def score(x, t):
        seen.append(float(t[0]))
        return exact_score(mix, sde)(x, t)

    wrapped, calls = counted(score)
    x_T = sde.prior_sample((8, 2), generator=gen(4), dtype=torch.float64)
    grid = torch.tensor([1.0, 0.5, 0.1, 0.01, 0.001], dtype=torch.float64)
    _, info = sample_multistep(wrapped, sde, x_T, grid, **DPM2)
    assert info["nfe"] == calls[0] == 5 and seen == pytest.approx(grid.tolist())


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


def test_the_run_dpm_sampler_is_lu_et_al_time_uniform_dpm_solver_2m():
    """``steps`` steps on the uniform grid from 1 to 1 / (steps + 1), each with D extrapolated as
    (1 + 1/(2r)) D_i - D_{i-1} / (2r) (Lu et al. 2022b, Alg. 2), then the denoised state: written out here."""
    from scorefield.run.sampling import SAMPLERS, Scores
    from scorefield.score import posterior_mean

    sde, mix = VPSDE(), held_apart_mixture()
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((50, 2), generator=gen(6), dtype=torch.float64)
    x = SAMPLERS["dpm"](sde, None, 7, x_T, Scores(score, None), None)
    grid = noise.time_grid(7, t_end=1 / 8, dtype=torch.float64)
    scale, std = sde.marginal(grid)
    h = (scale.log() - std.log()).diff()
    y, previous = x_T, None
    for i in range(7):
        d = posterior_mean(y, score(y, grid[i].expand(50)), float(scale[i]), float(std[i]))
        d_hat = d if previous is None else d + (d - previous) * float(h[i] / (2 * h[i - 1]))
        y = float(std[i + 1] / std[i]) * y - float(scale[i + 1]) * math.expm1(-float(h[i])) * d_hat
        previous = d
    y = posterior_mean(y, score(y, grid[-1].expand(50)), float(scale[-1]), float(std[-1]))
    torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
