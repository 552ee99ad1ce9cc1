"""Ground truth checked against scipy, autograd, finite differences and Monte-Carlo convolution."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from scorefield.distributions import Gaussian, GaussianMixture, Parzen, two_gaussians


def random_spd(d, generator, dtype=torch.float64):
    a = torch.randn(d, d, generator=generator, dtype=dtype)
    return a @ a.T + 0.5 * torch.eye(d, dtype=dtype)


def random_mixture(k=3, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(k, d, generator=g, dtype=dtype)
    covs = torch.stack([random_spd(d, g, dtype) for _ in range(k)])
    weights = torch.rand(k, generator=g, dtype=dtype) + 0.1
    return GaussianMixture(means, covs, weights)


def scipy_mixture_logpdf(p, x):
    comps = [
        np.log(w) + stats.multivariate_normal(m.numpy(), c.numpy()).logpdf(x.numpy())
        for w, m, c in zip(p.weights.numpy(), p.means, p.covs, strict=True)
    ]
    return logsumexp(np.stack(comps, axis=1), axis=1)


def test_log_prob_matches_scipy():
    p = random_mixture()
    x = p.sample(200, torch.Generator().manual_seed(1)) + torch.randn(200, 3, dtype=torch.float64)
    np.testing.assert_allclose(p.log_prob(x).numpy(), scipy_mixture_logpdf(p, x), rtol=0, atol=1e-6)


def test_gaussian_log_prob_and_score_closed_form():
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(4, generator=g, dtype=torch.float64)
    cov = random_spd(4, g)
    p = Gaussian(mean, cov)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    ref = stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(p.log_prob(x).numpy(), ref, atol=1e-6)
    expected_score = -torch.linalg.solve(cov, (x - mean).T).T
    torch.testing.assert_close(p.score(x), expected_score, rtol=1e-10, atol=1e-10)
    assert isinstance(p.smooth(0.5), Gaussian)
    torch.testing.assert_close(p.smooth(0.5).cov, cov + 0.25 * torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["mixture", "parzen"])
def test_score_is_gradient_of_log_prob(kind):
    if kind == "mixture":
        p = random_mixture(seed=3)
    else:
        data = torch.randn(40, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        p = Parzen(data, 0.7)
    x = p.sample(64, torch.Generator().manual_seed(4)).requires_grad_(True)
    (autograd,) = torch.autograd.grad(p.log_prob(x).sum(), x)
    torch.testing.assert_close(p.score(x.detach()), autograd, rtol=1e-9, atol=1e-9)
    # central finite differences
    h = 1e-5
    x0 = x.detach()
    fd = torch.stack(
        [
            (p.log_prob(x0 + h * e) - p.log_prob(x0 - h * e)) / (2 * h)
            for e in torch.eye(3, dtype=torch.float64)
        ],
        dim=1,
    )
    torch.testing.assert_close(p.score(x0), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_and_correct_fifty_standard_deviations_away(dtype):
    p = two_gaussians(dtype=dtype)  # std 1, modes at -/+(5, 5)
    far = torch.tensor([[55.0, 55.0], [-55.0, -55.0], [5.0, -45.0], [-300.0, 250.0]], dtype=dtype)
    logp, s = p.log_prob(far), p.score(far)
    assert torch.isfinite(logp).all() and torch.isfinite(s).all()
    # Far from both modes, the nearest (by Mahalanobis distance) component dominates: score ~ -(x - mu_k)
    p64 = two_gaussians(dtype=torch.float64)
    ref_s = p64.score(far.double())
    torch.testing.assert_close(s.double(), ref_s, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ref_s[0], -(far[0].double() - torch.tensor([5.0, 5.0], dtype=torch.float64)))
    # log density against a direct float64 evaluation of the dominant component
    ref = torch.tensor(scipy_mixture_logpdf(p64, far.double()))
    torch.testing.assert_close(logp.double(), ref, rtol=1e-6, atol=1e-3 if dtype == torch.float32 else 1e-9)


def test_smooth_matches_monte_carlo_convolution():
    # p_sigma(x) = E_{y~p}[N(x; y, sigma^2 I)], estimated with 200k draws of y
    p = random_mixture(k=2, d=2, seed=5)
    sigma = 0.8
    g = torch.Generator().manual_seed(6)
    y = p.sample(200_000, g)
    x = p.sample(20, g)
    kern = torch.exp(
        -0.5 * torch.cdist(x, y).square() / sigma**2 - math.log(2 * math.pi * sigma**2)
    )  # d = 2: normaliser (2 pi sigma^2)^{-1}
    mc, se = kern.mean(1), kern.std(1) / math.sqrt(y.shape[0])
    exact = p.smooth(sigma).log_prob(x).exp()
    assert ((mc - exact).abs() < 4 * se + 1e-12).all()


def test_parzen_score_equals_mixture_formula():
    g = torch.Generator().manual_seed(7)
    data = torch.randn(30, 2, generator=g, dtype=torch.float64)
    q = Parzen(data, 0.4)
    m = q.as_mixture()
    x = 2 * torch.randn(100, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(q.score(x), m.score(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(q.log_prob(x), m.log_prob(x), rtol=1e-10, atol=1e-10)
    # chunking does not change the answer
    small = Parzen(data, 0.4, chunk_size=7)
    torch.testing.assert_close(small.score(x), q.score(x))
    # smoothing adds variances
    assert q.smooth(0.3).sigma == pytest.approx(0.5)


def test_sampling_reproduces_moments_and_weights():
    p = two_gaussians(weights=(0.7, 0.3), dtype=torch.float64)
    x = p.sample(100_000, torch.Generator().manual_seed(8))
    frac = (p.component_of(x) == 0).double().mean().item()
    assert abs(frac - 0.7) < 4 * math.sqrt(0.7 * 0.3 / 100_000)
    torch.testing.assert_close(x.mean(0), p.mean(), atol=0.05, rtol=0)
    # generator makes it reproducible
    a = p.sample(10, torch.Generator().manual_seed(9))
    b = p.sample(10, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_a_mixture_conditioned_on_one_coordinate_is_bayes_on_a_grid():
    """In 2-D, p(x_2 | x_1 = c) is p(c, x_2) normalised over x_2: the closed form's density, mean,
    variance and evidence ``p(c)`` against the joint evaluated on a fine grid (trapezoidal sums of
    smooth, well-resolved integrands: errors far below the 1e-6 asked)."""
    p = random_mixture(k=3, d=2, seed=12)
    grid = torch.linspace(-40, 40, 40_001, dtype=torch.float64)
    for c in (-3.0, 0.5, 4.0):
        joint = p.log_prob(torch.stack([torch.full_like(grid, c), grid], 1)).exp()
        evidence = torch.trapezoid(joint, grid)
        density = joint / evidence
        mean = torch.trapezoid(grid * density, grid)
        var = torch.trapezoid((grid - mean) ** 2 * density, grid)
        given = p.condition(
            torch.tensor([[c, float("nan")]], dtype=torch.float64), torch.tensor([[False, True]])
        )
        assert given.log_evidence.exp().item() == pytest.approx(evidence.item(), rel=1e-6)
        assert given.mean()[0, 0].item() == c  # the observed cell exactly
        assert given.mean()[0, 1].item() == pytest.approx(mean.item(), rel=1e-6, abs=1e-9)
        r, m, v = given.log_weights[0].exp(), given.means[0, :, 1], given.covs[0, given.group, 1, 1]
        assert (r * (v + m**2)).sum().item() - mean.item() ** 2 == pytest.approx(var.item(), rel=1e-6)
        closed = (r * torch.exp(-0.5 * (grid[:, None] - m) ** 2 / v) / torch.sqrt(2 * math.pi * v)).sum(1)
        assert (closed - density).abs().max().item() < 1e-8 * density.max().item()


def test_a_gaussian_conditions_by_the_schur_complement_whatever_the_pattern():
    g = torch.Generator().manual_seed(13)
    d = 5
    mean, cov = torch.randn(d, generator=g, dtype=torch.float64), random_spd(d, g)
    x = torch.randn(40, d, generator=g, dtype=torch.float64)
    missing = torch.rand(40, d, generator=g) < 0.5
    missing[0], missing[1] = False, torch.tensor([True, True, True, True, False])  # none; all but one
    given = Gaussian(mean, cov).condition(torch.where(missing, torch.nan, x), missing)
    assert torch.equal(given.log_weights, torch.zeros(40, 1)) and given.covs.shape == (40, 1, d, d)
    s = cov.numpy()
    for i in range(40):
        m, o = missing[i].numpy(), ~missing[i].numpy()
        gain = s[np.ix_(m, o)] @ np.linalg.inv(s[np.ix_(o, o)])
        expected = x[i].numpy().copy()
        expected[m] = mean.numpy()[m] + gain @ (x[i].numpy()[o] - mean.numpy()[o])
        np.testing.assert_allclose(given.mean()[i].numpy(), expected, rtol=1e-10, atol=1e-10)
        assert np.array_equal(given.mean()[i].numpy()[o], x[i].numpy()[o])
        schur = np.zeros((d, d))
        schur[np.ix_(m, m)] = s[np.ix_(m, m)] - gain @ s[np.ix_(o, m)]
        np.testing.assert_allclose(given.covs[i, 0].numpy(), schur, rtol=1e-10, atol=1e-10)
        delta, s_oo = x[i].numpy()[o] - mean.numpy()[o], s[np.ix_(o, o)]
        marginal = -0.5 * (delta @ np.linalg.solve(s_oo, delta) + np.linalg.slogdet(2 * np.pi * s_oo)[1])
        assert given.log_evidence[i].item() == pytest.approx(marginal, rel=1e-10)


def test_exact_conditional_draws_fall_in_each_mode_with_its_closed_form_weight():
    """Two modes 12 apart along x_2 plus a broad component: the share of draws with x_2 > 0 is the closed
    form's, ``sum_k r_k P_k(x_2 > 0)`` (4 binomial se), the draws' mean its mean (4 se), and the observed
    cells come back exactly. The two modes share one covariance, so one factorisation (``group``)."""
    cov = torch.tensor([[1.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    p = GaussianMixture(
        torch.tensor([[-1.0, -6.0], [1.0, 6.0], [0.0, 0.0]], dtype=torch.float64),
        torch.stack([cov, cov, 4 * torch.eye(2, dtype=torch.float64)]),
        torch.tensor([0.5, 0.3, 0.2]),
    )
    x = torch.tensor([[0.3, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    missing = torch.tensor([[False, True], [False, True]])
    given = p.condition(x, missing)
    assert given.group[0] == given.group[1] != given.group[2] and given.covs.shape[1] == 2
    n = 200_000
    draws = given.sample(n, torch.Generator().manual_seed(14))  # [n, 2, 2]
    assert draws.shape == (n, 2, 2) and torch.equal(draws[..., 0], x[:, 0].expand(n, 2))
    weights = given.log_weights.exp()
    for row in range(2):
        sd = given.covs[row, given.group, 1, 1].sqrt()
        upper = sum(
            weights[row, k].item() * stats.norm.sf(0, given.means[row, k, 1], sd[k]) for k in range(3)
        )
        assert 0.05 < upper < 0.95  # the observation decides neither mode outright
        share = (draws[:, row, 1] > 0).double().mean().item()
        assert abs(share - upper) < 4 * math.sqrt(upper * (1 - upper) / n), (row, share, upper)
        variance = (weights[row] * (sd**2 + given.means[row, :, 1] ** 2)).sum() - given.mean()[row, 1] ** 2
        assert abs(draws[:, row, 1].mean() - given.mean()[row, 1]) < 4 * (variance / n).sqrt()


class _ConstantMarginal:
    """An SDE stand-in with a fixed marginal: x_t = 0.6 x_0 + 0.5 z."""

    def marginal(self, t):
        return torch.tensor(0.6), torch.tensor(0.5)


def test_diffuse_is_the_exact_marginal():
    p = random_mixture(k=2, d=2, seed=10)
    pt = p.diffuse(_ConstantMarginal(), 0.3)
    torch.testing.assert_close(pt.means, 0.6 * p.means)
    torch.testing.assert_close(pt.covs, 0.36 * p.covs + 0.25 * torch.eye(2, dtype=torch.float64))
    g = torch.Generator().manual_seed(11)
    xt = 0.6 * p.sample(200_000, g) + 0.5 * torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(xt.mean(0), pt.mean(), atol=0.02, rtol=0)
    q = Parzen(torch.randn(5, 2, dtype=torch.float64), 0.3).diffuse(_ConstantMarginal(), 0.3)
    assert q.sigma == pytest.approx(math.sqrt(0.36 * 0.09 + 0.25))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.zeros(1, 2), -torch.eye(2)[None], torch.ones(1))
    with pytest.raises(ValueError, match="covs must be"):
        GaussianMixture(torch.zeros(2, 2), torch.eye(2)[None], torch.ones(2))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Parzen(torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        two_gaussians().log_prob(torch.zeros(3, 5))


# -- every kind of covariance, diffused to a different time on each row ------------------------------
def mixture_of_kind(kind: str, k: int = 3, d: int = 3, seed: int = 12) -> GaussianMixture:
    full = random_mixture(k, d, seed)
    if kind == "full":
        return full
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "diagonal":
        variances = torch.rand(k, d, generator=g, dtype=torch.float64) + 0.2
        return GaussianMixture.diagonal(full.means, variances, full.weights)
    return GaussianMixture.spherical(
        full.means, torch.rand(k, generator=g, dtype=torch.float64) + 0.2, full.weights
    )


def brute_force_log_prob(p: GaussianMixture, x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor):
    """Row by row: scipy's log-density of ``sum_k w_k N(m mu_k, m^2 Sigma_k + std^2 I)`` from ``covs``."""
    eye = torch.eye(p.dim, dtype=torch.float64)
    out = []
    for xi, m, s in zip(x, scale.tolist(), std.tolist(), strict=True):
        comps = [
            math.log(w)
            + stats.multivariate_normal((m * mu).numpy(), (m**2 * c + s**2 * eye).numpy()).logpdf(xi.numpy())
            for w, mu, c in zip(p.weights.tolist(), p.means, p.covs, strict=True)
        ]
        out.append(logsumexp(comps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["full", "diagonal", "spherical"])
@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_diffused_log_prob_score_and_denoiser_match_their_closed_forms(kind, sde_name):
    """At a different time on each row: ``log_prob`` is scipy's density of the noised mixture, ``score``
    the autograd gradient of ``log_prob``, ``denoise`` Tweedie's ``(x + std^2 score) / m``, and each row
    equals the mixture ``diffuse``d to that row's time alone."""
    from scorefield.sde import VESDE, VPSDE

    sde = VESDE(sigma_min=0.01, sigma_max=5.0) if sde_name == "ve" else VPSDE()
    p, g = mixture_of_kind(kind), torch.Generator().manual_seed(13)
    t = torch.rand(40, generator=g, dtype=torch.float64) * 0.98 + 0.02
    scale, std = sde.marginal(t)
    x = p.sample(40, g, scale, std).requires_grad_(True)
    log_p = p.log_prob(x, scale, std)
    torch.testing.assert_close(
        log_p.detach(), brute_force_log_prob(p, x.detach(), scale, std), rtol=1e-9, atol=1e-9
    )
    (autograd,) = torch.autograd.grad(log_p.sum(), x)
    x = x.detach()
    score = p.score(x, scale, std)
    torch.testing.assert_close(score, autograd, rtol=1e-9, atol=1e-9)
    tweedie = (x + std[:, None] ** 2 * score) / scale[:, None]
    torch.testing.assert_close(p.denoise(x, scale, std), tweedie, rtol=1e-8, atol=1e-8)
    for i in (0, 17, 39):
        alone = p.diffuse(sde, float(t[i]))
        torch.testing.assert_close(
            alone.log_prob(x[i : i + 1]), log_p[i : i + 1].detach(), rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(alone.score(x[i : i + 1]), score[i : i + 1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["full", "diagonal", "spherical"])
def test_noised_draws_have_the_noised_moments(kind):
    """``sample(n, scale=m, std=s)`` draws ``m x_0 + s z``: mean ``m mu`` and covariance ``m^2 C + s^2 I``."""
    p, g = mixture_of_kind(kind, d=2), torch.Generator().manual_seed(14)
    x = p.sample(400_000, g, 0.6, 0.5)
    torch.testing.assert_close(x.mean(0), 0.6 * p.mean(), atol=0.03, rtol=0)
    want = 0.36 * p.covariance() + 0.25 * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(torch.cov(x.T), want, atol=0.05 * float(want.diagonal().max()), rtol=0)


@pytest.mark.parametrize("kind", ["diagonal", "spherical"])
def test_an_axis_aligned_mixture_conditions_by_the_schur_complement(kind):
    """``condition`` of a diagonal or spherical mixture: each component's conditional mean and covariance
    are the Schur complement's, and its weight is ``w_k N(x_O; mu_O, S_OO)`` normalised (scipy)."""
    p, g = mixture_of_kind(kind, d=4), torch.Generator().manual_seed(15)
    x = p.sample(6, g)
    missing = torch.rand(6, 4, generator=g) < 0.5
    missing[0], missing[1] = True, False  # nothing observed; nothing missing
    given = p.condition(x, missing)
    for i, row in enumerate(missing):
        m, o = row.nonzero().flatten(), (~row).nonzero().flatten()
        log_joint = []
        for k, (mean, cov) in enumerate(zip(p.means, p.covs, strict=True)):
            gain = cov[m][:, o] @ torch.linalg.inv(cov[o][:, o])
            torch.testing.assert_close(given.means[i, k, m], mean[m] + gain @ (x[i, o] - mean[o]))
            schur = given.covs[i, given.group[k]]
            torch.testing.assert_close(schur[m][:, m], cov[m][:, m] - gain @ cov[o][:, m])
            log_w = math.log(p.weights[k])
            if len(o):
                log_w += stats.multivariate_normal(mean[o].numpy(), cov[o][:, o].numpy()).logpdf(
                    x[i, o].numpy()
                )
            log_joint.append(log_w)
        want = torch.tensor(log_joint, dtype=torch.float64)
        torch.testing.assert_close(given.log_weights[i], want - torch.logsumexp(want, 0))


@pytest.mark.parametrize("kind", ["full", "diagonal", "spherical"])
def test_component_entropies_are_scipys(kind):
    p = mixture_of_kind(kind)
    want = [
        stats.multivariate_normal(mu.numpy(), c.numpy()).entropy()
        for mu, c in zip(p.means, p.covs, strict=True)
    ]
    torch.testing.assert_close(p.component_entropies(), torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["full", "diagonal", "spherical"])
def test_observed_log_probs_are_each_rows_marginal(kind):
    """Rows of different patterns at once: ``log w_k`` plus scipy's log-density of the row's observed
    entries under component ``k``'s mean and covariance restricted to them; nothing observed: ``log w_k``."""
    p, g = mixture_of_kind(kind, d=4), torch.Generator().manual_seed(16)
    x = p.sample(5, g)
    observed = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 0, 0]]).bool()
    got = p.observed_log_probs(x, observed)
    for i, row in enumerate(observed):
        o = row.nonzero().flatten().numpy()
        for k in range(p.n_components):
            want = math.log(p.weights[k])
            if len(o):
                mean, cov = p.means[k].numpy()[o], p.covs[k].numpy()[np.ix_(o, o)]
                want += stats.multivariate_normal(mean, cov).logpdf(x[i].numpy()[o])
            assert float(got[i, k]) == pytest.approx(want, abs=1e-9)
    assert p.marginal(torch.tensor([2, 0])).dim == 2


def test_state_dict_round_trip_keeps_the_kind_and_the_class():
    for p in (mixture_of_kind("full"), mixture_of_kind("diagonal"), mixture_of_kind("spherical")):
        copy = GaussianMixture.from_state_dict(p.state_dict())
        x = p.sample(7, torch.Generator().manual_seed(17))
        assert torch.equal(copy.log_prob(x), p.log_prob(x)) and copy.isotropic == p.isotropic
    gaussian = Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    assert isinstance(Gaussian.from_state_dict(gaussian.state_dict()), Gaussian)
    with pytest.raises(ValueError, match="needs log_weights"):
        GaussianMixture.from_state_dict({**gaussian.state_dict(), "variances": torch.ones(3)})


@pytest.mark.parametrize("kind", ["full", "diagonal", "spherical"])
def test_an_affine_image_changes_variables_and_projects_to_the_marginal(kind):
    """``affine(A, b)`` is the law of ``A x + b``: for an invertible ``A`` its log-density at ``A x + b``
    is the mixture's at ``x`` minus ``log |det A|``; rows of the identity give ``marginal``."""
    p, g = mixture_of_kind(kind, d=3), torch.Generator().manual_seed(17)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = p.sample(64, g)
    image = p.affine(a, b)
    want = p.log_prob(x) - torch.linalg.slogdet(a).logabsdet
    torch.testing.assert_close(image.log_prob(x @ a.T + b), want, rtol=1e-10, atol=1e-10)
    rows = torch.eye(3, dtype=torch.float64)[[2, 0]]
    torch.testing.assert_close(
        p.affine(rows).log_prob(x[:, [2, 0]]), p.marginal(torch.tensor([2, 0])).log_prob(x[:, [2, 0]])
    )
    with pytest.raises(ValueError, match=r"matrix must be \[m, 3\]"):
        p.affine(torch.eye(2, dtype=torch.float64))
