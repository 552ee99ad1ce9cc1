"""Score-matching objectives against closed forms, and each one trains a network to the true score."""

import math

import pytest
import torch
from torch import nn

from scorefield.distributions import two_gaussians
from scorefield.losses import dsm, esm, ism, ncsn, sde_dsm, ssm
from scorefield.metrics import fisher_divergence
from scorefield.nets import MLP
from scorefield.score import EnergyScore, NoiseConditionalScore, ScoreModel
from scorefield.sde import VESDE, VPSDE, SubVPSDE
from scorefield.utils import append_dims

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _net(d=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    return MLP(d, hidden=16, depth=2, cond=False, **kwargs).to(DT)


def _points(n=5, d=3, seed=1):
    return torch.randn(n, d, generator=_gen(seed), dtype=DT)


def _loop_ism(score_fn, x):
    """½||s||² + tr ∇_x s with the trace from one autograd call per dimension (the slow reference)."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    rows = [torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1])]
    return 0.5 * (s**2).sum(1) + torch.stack(rows, 1).sum(1)


def _assert_within_3_se(samples, expected, dim=0):
    """The Monte Carlo mean of ``samples`` along ``dim`` lies within 3 standard errors of ``expected``."""
    mean = samples.mean(dim)
    se = samples.std(dim) / math.sqrt(samples.shape[dim])
    assert (se > 0).all(), "the estimator shows no randomness"
    assert ((mean - expected).abs() < 3 * se).all(), f"mean {mean}, expected {expected}, se {se}"


# ---------------------------------------------------------------- implicit and sliced score matching


@pytest.mark.parametrize("kind", ["mlp", "energy"])
def test_exact_trace_matches_autograd_loop(kind):
    score_fn = _net() if kind == "mlp" else EnergyScore(_net(out_dim=1))
    x = _points()
    loss = ism(score_fn, x, trace="exact")
    reference = _loop_ism(score_fn, x)
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-5)
    # the same gradient reaches the parameters through torch.func as through the loop
    params = list(score_fn.parameters())
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)  # an energy's offset has none
    grads_ref = torch.autograd.grad(reference.sum(), params, allow_unused=True)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert (g is None) == (g_ref is None)
        if g is not None:
            torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_trace_is_unbiased(probe):
    net, x, n_probes = _net(), _points(n=4), 4000
    exact = ism(net, x, trace="exact").detach()
    per_probe = ism(net, x.repeat(n_probes, 1), trace="hutchinson", probe=probe, generator=_gen(2))
    _assert_within_3_se(per_probe.detach().reshape(n_probes, 4), exact)
    # n_probes averages exactly those draws
    averaged = ism(net, x, trace="hutchinson", n_probes=n_probes, probe=probe, generator=_gen(2))
    torch.testing.assert_close(averaged, per_probe.reshape(n_probes, 4).mean(0))


class LinearScore(nn.Module):
    """``s_θ(x) = A x + b``; ``θ = (A, b)``."""

    def __init__(self, d, generator):
        super().__init__()
        self.A = nn.Parameter(torch.randn(d, d, generator=generator, dtype=DT))
        self.b = nn.Parameter(torch.randn(d, generator=generator, dtype=DT))

    def forward(self, x):
        return x @ self.A.T + self.b


def _gaussian_sigma_points(mean, cov):
    """``μ ± sqrt(d) L e_i``: 2d points whose mean and covariance are exactly ``μ`` and ``Σ``.

    ESM and ISM of a linear score are quadratic in x, so their expectations under N(μ, Σ) are the
    plain averages over these points.
    """
    d = mean.numel()
    offsets = math.sqrt(d) * torch.linalg.cholesky(cov).T  # rows: sqrt(d) L e_i
    return torch.cat([mean + offsets, mean - offsets])


def test_ism_equals_esm_up_to_a_constant_in_theta():
    # for p = N(μ, Σ) and s = A x + b: ESM - ISM = ½ E||Σ^{-1}(x - μ)||² = ½ tr Σ^{-1}, whatever θ
    g = _gen(3)
    d = 3
    mean = torch.randn(d, generator=g, dtype=DT)
    a = torch.randn(d, d, generator=g, dtype=DT)
    cov = a @ a.T + 0.3 * torch.eye(d, dtype=DT)
    precision = torch.linalg.inv(cov)
    x = _gaussian_sigma_points(mean, cov)
    true_score = -(x - mean) @ precision
    constant = 0.5 * torch.trace(precision)
    for _ in range(3):
        score_fn = LinearScore(d, g)
        esm_value = esm(score_fn, x, true_score).mean()
        ism_value = ism(score_fn, x, trace="exact").mean()
        torch.testing.assert_close(esm_value - ism_value, constant)
        grads_esm = torch.autograd.grad(esm_value, list(score_fn.parameters()))
        grads_ism = torch.autograd.grad(ism_value, list(score_fn.parameters()))
        for g_esm, g_ism in zip(grads_esm, grads_ism, strict=True):
            torch.testing.assert_close(g_esm, g_ism)
    assert not torch.allclose(grads_esm[0], torch.zeros_like(grads_esm[0]))


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_sliced_score_matching_expectation_is_ism(variance_reduction):
    # E_v[vᵀ (∇s) v + ½ (vᵀ s)²] = tr ∇s + ½ ||s||² for Gaussian v
    net, x, n = _net(), _points(n=4), 4000
    exact = ism(net, x, trace="exact").detach()
    per_projection = ssm(net, x.repeat(n, 1), variance_reduction=variance_reduction, generator=_gen(4))
    _assert_within_3_se(per_projection.detach().reshape(n, 4), exact)
    averaged = ssm(net, x, n_projections=n, variance_reduction=variance_reduction, generator=_gen(4))
    torch.testing.assert_close(averaged, per_projection.reshape(n, 4).mean(0))


def test_sliced_score_matching_projection_term_for_a_constant_score():
    # s = c: plain SSM is ½ (vᵀc)² = ½||c||² χ²_1 (mean ½||c||², variance ½||c||⁴); SSM-VR is exactly ½||c||²
    c = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    x = _points(n=20000)
    constant = lambda y: c + 0 * y  # noqa: E731
    plain = ssm(constant, x, variance_reduction=False, generator=_gen(5)).detach()
    half_c2 = 0.5 * (c**2).sum()
    _assert_within_3_se(plain, half_c2)
    assert abs(plain.var() / (0.5 * (c**2).sum() ** 2) - 1) < 0.1
    reduced = ssm(constant, x, variance_reduction=True, generator=_gen(5))
    torch.testing.assert_close(reduced, half_c2.expand(20000))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_ism_on_image_shapes_for_isotropic_gaussian(trace):
    # s = -x/s0²: ISM = ½||x||²/s0⁴ - d/s0² (Rademacher probes make Hutchinson exact here)
    s0 = 0.5
    x = torch.randn(6, 1, 2, 2, generator=_gen(5), dtype=DT)
    loss = ism(lambda y: -y / s0**2, x, trace=trace, generator=_gen(6))
    torch.testing.assert_close(loss, 0.5 * (x**2).sum((1, 2, 3)) / s0**4 - 4 / s0**2)


# ---------------------------------------------------------------- denoising objectives, closed forms
# For x ~ N(0, s0² I) in d dimensions, x_t = m x + std z has the exact score -x_t / (m² s0² + std²),
# and the denoising loss of that exact score is ½ d m² s0² / (std² (m² s0² + std²)) · λ.


def _exact_gaussian_dsm(d, s0, scale, std):
    return 0.5 * d * scale**2 * s0**2 / (std**2 * (scale**2 * s0**2 + std**2))


def _isotropic_score(s0):
    def score(x, sigma):
        return -x / append_dims(s0**2 + sigma**2, x.ndim)

    return score


def test_dsm_of_the_exact_score_matches_closed_form():
    s0, n = 0.8, 20000
    x = s0 * torch.randn(n, 1, 2, 2, generator=_gen(7), dtype=DT)  # image-shaped, d = 4
    for sigma in (0.5, torch.tensor([0.2, 1.0, 3.0], dtype=DT).repeat(n // 3 + 1)[:n]):
        loss = dsm(_isotropic_score(s0), x, sigma, generator=_gen(8))
        expected = _exact_gaussian_dsm(4, s0, 1.0, torch.as_tensor(sigma, dtype=DT))
        _assert_within_3_se(loss - expected, torch.tensor(0.0, dtype=DT))


def test_ncsn_draws_levels_uniformly_with_sigma2_weight():
    s0, n = 1.0, 20000
    sigmas = torch.tensor([5.0, 1.0, 0.2], dtype=DT)  # largest first
    x = s0 * torch.randn(n, 2, generator=_gen(9), dtype=DT)
    loss = ncsn(_isotropic_score(s0), x, sigmas, generator=_gen(10))
    expected = (sigmas**2 * _exact_gaussian_dsm(2, s0, 1.0, sigmas)).mean()  # ½ d mean s0²/(s0²+σ²)
    _assert_within_3_se(loss, expected)


def _uniform_time_average(f, t_min, n=200_001):
    t = torch.logspace(math.log10(t_min), 0.0, n, dtype=DT)
    values = f(t)
    return float(torch.trapezoid(values, t)) / (1 - t_min)


SDES = [VESDE(sigma_min=0.01, sigma_max=50.0), VPSDE(), SubVPSDE()]
CASES = [("std2", False), ("likelihood", False), ("likelihood", True)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("weighting, importance_sampling", CASES)
@pytest.mark.parametrize("t_min", [1e-5, 0.1])
def test_sde_dsm_of_the_exact_score_matches_closed_form(sde, weighting, importance_sampling, t_min):
    s0, d, n = 0.7, 2, 20000

    def exact_score(x, t):
        scale, std = sde.marginal(t)
        return -x / append_dims(scale**2 * s0**2 + std**2, x.ndim)

    def expected_at(t):
        scale, std = sde.marginal(t)
        lam = std**2 if weighting == "std2" else sde.diffusion(t) ** 2
        return lam * _exact_gaussian_dsm(d, s0, scale, std)

    x = s0 * torch.randn(n, d, generator=_gen(11), dtype=DT)
    loss = sde_dsm(
        exact_score,
        sde,
        x,
        weighting=weighting,
        t_min=t_min,
        importance_sampling=importance_sampling,
        generator=_gen(12),
    )
    _assert_within_3_se(loss, torch.tensor(_uniform_time_average(expected_at, t_min), dtype=DT))


def test_importance_sampling_reduces_variance_of_likelihood_weighting():
    sde, s0, n = VPSDE(), 0.7, 20000
    x = s0 * torch.randn(n, 2, generator=_gen(13), dtype=DT)

    def exact_score(xt, t):
        scale, std = sde.marginal(t)
        return -xt / append_dims(scale**2 * s0**2 + std**2, xt.ndim)

    plain = sde_dsm(exact_score, sde, x, weighting="likelihood", generator=_gen(14))
    weighted = sde_dsm(
        exact_score, sde, x, weighting="likelihood", importance_sampling=True, generator=_gen(14)
    )
    assert weighted.std() < plain.std() / 3


# ---------------------------------------------------------------- each objective trains a network

P = two_gaussians()
SIGMA = 0.5


@pytest.fixture
def one_thread():
    """Tiny networks train fastest on one thread; more contend for a small shared machine's cores."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def _train(score_fn, loss_fn, steps=300, batch_size=256, lr=3e-3):
    g = _gen(20)
    opt = torch.optim.Adam(score_fn.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = loss_fn(score_fn, P.sample(batch_size, generator=g), g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return score_fn


def _unconditional():
    torch.manual_seed(0)
    return MLP(2, hidden=64, depth=2, cond=False)


OBJECTIVES = {
    "esm": lambda net, x, g: esm(net, x, P.score(x)),
    "ism_exact": lambda net, x, g: ism(net, x, trace="exact"),
    "ism_hutchinson": lambda net, x, g: ism(net, x, trace="hutchinson", generator=g),
    "ssm": lambda net, x, g: ssm(net, x, generator=g),
}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_score_matching_learns_the_true_score(name, one_thread):
    net = _train(_unconditional(), OBJECTIVES[name])
    x = P.sample(4000, generator=_gen(21))
    assert fisher_divergence(net, P.score, x) < 0.05


def test_dsm_learns_the_smoothed_score(one_thread):
    torch.manual_seed(0)
    model = NoiseConditionalScore(MLP(2, hidden=64, depth=2))
    model = _train(model, lambda m, x, g: dsm(m, x, SIGMA, generator=g))
    p_sigma = P.smooth(SIGMA)
    x = p_sigma.sample(4000, generator=_gen(22))
    assert fisher_divergence(lambda y: model(y, SIGMA), p_sigma.score, x) < 0.05


@pytest.mark.parametrize(
    "param",
    ["eps", pytest.param("score", marks=pytest.mark.slow), pytest.param("denoiser", marks=pytest.mark.slow)],
)
def test_sde_dsm_trains_a_score_model_to_the_diffused_score(param, one_thread):
    p, sde = two_gaussians(center=1.0, std=0.3), VPSDE()
    torch.manual_seed(0)
    model = ScoreModel(MLP(2, hidden=64, depth=2), sde, param=param)
    g = _gen(23)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 500)
    for _ in range(500):
        loss = sde_dsm(model, sde, p.sample(256, generator=g), generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    for t in (0.2, 0.5):
        p_t = p.diffuse(sde, t)
        x = p_t.sample(4000, generator=_gen(24))
        assert fisher_divergence(lambda y, t=t: model(y, t), p_t.score, x) < 0.1


# ---------------------------------------------------------------- argument errors


def test_bad_arguments_raise_clear_errors():
    net, x = _net(), _points()
    score = _isotropic_score(1.0)
    with pytest.raises(ValueError, match="unknown trace kind 'diag'"):
        ism(net, x, trace="diag")
    with pytest.raises(ValueError, match="unknown probe"):
        ism(net, x, trace="hutchinson", probe="uniform")
    with pytest.raises(ValueError, match="n_probes must be >= 1"):
        ism(net, x, trace="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="n_projections must be >= 1"):
        ssm(net, x, n_projections=0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        dsm(score, x, 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        dsm(score, x, torch.tensor([1.0, 0.5, -0.1, 1.0, 1.0], dtype=DT))
    with pytest.raises(ValueError, match="every sigma must be > 0"):
        ncsn(score, x, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="1-D ladder"):
        ncsn(score, x, torch.tensor(1.0))
    with pytest.raises(ValueError, match="unknown weighting"):
        sde_dsm(score, VPSDE(), x, weighting="snr")
    with pytest.raises(ValueError, match="t_min must lie in"):
        sde_dsm(score, VPSDE(), x, t_min=0.0)
    with pytest.raises(ValueError, match="importance_sampling"):
        sde_dsm(score, VPSDE(), x, weighting="std2", importance_sampling=True)
