"""The data's Gaussian and the exact probability-flow map it gives (``sample_fast``'s Gaussian start)."""

import pytest
import torch
from _exact import exact_score, held_apart_mixture

from scorefield.distributions import Gaussian, GaussianMixture
from scorefield.gaussian import component_moments, data_moments, gaussian_flow, gaussian_start
from scorefield.multistep import fast_grid, optimize_grid, sample_fast, sample_multistep
from scorefield.samplers import sample_ode, tweedie
from scorefield.sde import VESDE, VPSDE, SubVPSDE

SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=20.0), "vp": VPSDE(), "subvp": SubVPSDE()}
MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
COV = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(SDES))
def test_the_flow_is_the_probability_flow_ode_of_gaussian_data(name):
    """dopri5 on the exact score of the diffused Gaussian, from 1 to 0.3, lands where the closed form
    puts each draw (to the solver's tolerance), for VE, VP and sub-VP."""
    sde = SDES[name]
    score = exact_score(Gaussian(MEAN, COV), sde)
    x_T = sde.prior_std * torch.randn(200, 3, generator=gen(0), dtype=torch.float64)
    solved, _ = sample_ode(score, sde, x_T, torch.tensor([1.0, 0.3]), rtol=1e-8, atol=1e-8)
    moved = gaussian_flow(sde, x_T, 1.0, 0.3, Gaussian(MEAN, COV))
    torch.testing.assert_close(moved, solved, atol=1e-5, rtol=0)
    # and back again: the map is invertible, the flow from 0.3 to 1 undoes it
    torch.testing.assert_close(gaussian_flow(sde, moved, 0.3, 1.0, Gaussian(MEAN, COV)), x_T)


def test_moments_of_data_and_the_diagonal_form_above_the_size_limit():
    mix = held_apart_mixture()  # the closed-form covariance of a mixture against that of its draws
    torch.testing.assert_close(
        data_moments(mix.sample(200_000, gen(9))).cov, mix.covariance(), atol=0.05, rtol=0
    )
    x = Gaussian(MEAN, COV).sample(200_000, gen(1))
    moments = data_moments(x)
    torch.testing.assert_close(moments.mean(), MEAN, atol=0.02, rtol=0)
    torch.testing.assert_close(moments.cov, COV, atol=0.03, rtol=0)
    diagonal = data_moments(x, full_max_dim=2)
    assert (
        isinstance(diagonal, Gaussian) and diagonal.rotations is None and diagonal.variances.shape == (1, 3)
    )
    torch.testing.assert_close(diagonal.cov, torch.diag(moments.cov.diagonal()))
    # a diagonal covariance flows as the full matrix with the same diagonal
    sde, x_T = VPSDE(), torch.randn(50, 3, generator=gen(2), dtype=torch.float64)
    full = Gaussian(diagonal.mean(), diagonal.cov)
    torch.testing.assert_close(
        gaussian_flow(sde, x_T, 1.0, 0.4, diagonal), gaussian_flow(sde, x_T, 1.0, 0.4, full)
    )
    # images: the moments are of the flattened pixels, and the flow keeps the shape
    images = torch.randn(10, 1, 2, 2, generator=gen(3))
    moments = data_moments(images)
    assert moments.mean().shape == (4,) and moments.cov.shape == (4, 4)
    assert gaussian_flow(sde, images, 1.0, 0.5, moments).shape == images.shape
    with pytest.raises(ValueError, match="at least 2 examples"):
        data_moments(images[:1])
    with pytest.raises(ValueError, match="moments are of 4 coordinates, the data have 3"):
        gaussian_flow(sde, x_T, 1.0, 0.5, moments)


@pytest.mark.parametrize("name", list(SDES))
def test_the_start_is_where_the_largest_variance_reaches_the_ratio(name):
    sde, moments = SDES[name], Gaussian(MEAN, COV)
    top = float(torch.linalg.eigvalsh(COV).max())
    for snr in (0.01, 0.1, 0.5):
        t = gaussian_start(sde, moments, snr)
        scale, std = sde.marginal(torch.tensor(t, dtype=torch.float64))
        assert 0 < t < 1 and float(scale**2 * top / std**2) == pytest.approx(snr, rel=1e-6)
    # data as wide as the prior: the ratio is reached at t = 1 already
    assert gaussian_start(SDES["ve"], Gaussian(MEAN, 1e4 * COV), 0.1) == 1.0
    with pytest.raises(ValueError, match="snr must be > 0"):
        gaussian_start(sde, moments, 0.0)


def mixture_moments(mix) -> Gaussian:
    mix = mix.to(torch.float64)
    return Gaussian(mix.mean(), mix.covariance())


def test_sample_fast_starts_from_the_gaussian_and_spends_the_whole_budget_after_it():
    """With the moments, sample_fast carries x_T to the first grid time in closed form and is then the
    multistep solver from there; at 5 evaluations on the held-apart mixture that start takes the RMS
    distance to the converged ODE solution below 0.95x the start at t = 1 (measured: 0.89x)."""
    sde, mix = VPSDE(), held_apart_mixture(torch.float32)
    score, moments = exact_score(mix, sde), mixture_moments(mix)
    x_T = sde.prior_sample((1000, 2), generator=gen(4))
    x, info = sample_fast(score, sde, x_T, 5, moments=moments)
    grid = fast_grid(5, sde, moments=moments)
    assert info["nfe"] == 5 and info["start"] == pytest.approx(float(grid[0])) and info["start"] < 1
    expected, _ = sample_multistep(
        score, sde, gaussian_flow(sde, x_T, 1.0, info["start"], moments), grid, order=info["order"]
    )
    torch.testing.assert_close(x, expected)
    reference, ode = sample_ode(score, sde, x_T, rtol=1e-6, atol=1e-6)
    reference = tweedie(score, sde, reference, ode["times"][-1].expand(x_T.shape[0]))

    def rms(y):
        return float((y - reference).square().sum(1).mean().sqrt())

    assert rms(x) < 0.95 * rms(sample_fast(score, sde, x_T, 5)[0]), (
        rms(x),
        rms(sample_fast(score, sde, x_T, 5)[0]),
    )
    with pytest.raises(ValueError, match="starts at t = 0.5 < 1: pass the data's moments"):
        sample_fast(score, sde, x_T, torch.tensor([0.5, 0.3, 0.1]))


def test_an_optimized_grid_with_moments_places_the_hand_over_too():
    sde, mix = VPSDE(), held_apart_mixture(torch.float32)
    score, moments = exact_score(mix, sde), mixture_moments(mix)
    x_T = sde.prior_sample((300, 2), generator=gen(6))
    grid, info = optimize_grid(score, sde, x_T, 5, max_iter=40, n_starts=1, moments=moments)
    assert grid.shape == (5,) and 0 < float(grid[0]) < 1 and bool((grid.diff() < 0).all())
    assert info["rms"] <= info["rms_default"]
    x, run = sample_fast(score, sde, x_T, grid.float(), moments=moments)
    assert run["nfe"] == 5 and run["start"] == pytest.approx(float(grid[0]), rel=1e-6)


def test_one_gaussian_per_class_shrinks_toward_the_pooled_covariance():
    """Each class's covariance is (S_k + D W) / (n_k + D): its scatter S_k plus D pseudo-examples of the
    pooled within-class covariance W; diagonal above the size limit; a class without rows gets W and
    weight 0, the others their shares of the rows."""
    labels = torch.tensor([0] * 12 + [1] * 18)
    x = torch.randn(30, 3, generator=gen(10), dtype=torch.float64) + 5.0 * labels[:, None]
    stack = component_moments(x, labels, 3)
    assert stack.means.shape == (3, 3) and stack.covs.shape == (3, 3, 3)
    torch.testing.assert_close(stack.weights, torch.tensor([0.4, 0.6, 0.0], dtype=torch.float64))
    centred = [x[labels == k] - x[labels == k].mean(0) for k in (0, 1)]
    scatter = [c.T @ c for c in centred]
    pooled = (scatter[0] + scatter[1]) / (30 - 3)
    for k, n in ((0, 12), (1, 18)):
        torch.testing.assert_close(stack.means[k], x[labels == k].mean(0))
        torch.testing.assert_close(stack.covs[k], (scatter[k] + 3 * pooled) / (n + 3))
    torch.testing.assert_close(stack.covs[2], pooled)  # no rows: the pooled covariance, the mean of all
    torch.testing.assert_close(stack.means[2], x.mean(0))
    diagonal = component_moments(x, labels, 3, full_max_dim=2)
    assert diagonal.rotations is None
    torch.testing.assert_close(diagonal.variances, torch.diagonal(stack.covs, dim1=1, dim2=2))
    with pytest.raises(ValueError, match="3 classes need more than 3 examples"):
        component_moments(x[:3], labels[:3], 3)


def test_a_stack_of_gaussians_moves_each_row_by_its_own():
    sde = VPSDE()
    x = torch.randn(40, 3, generator=gen(11), dtype=torch.float64)
    labels = torch.arange(40) % 2
    stack = component_moments(x * (1 + labels[:, None]), labels, 2)
    x_T = torch.randn(40, 3, generator=gen(12), dtype=torch.float64)
    moved = gaussian_flow(sde, x_T, 1.0, 0.4, stack, labels)
    for k in (0, 1):
        rows = labels == k
        torch.testing.assert_close(moved[rows], gaussian_flow(sde, x_T[rows], 1.0, 0.4, stack.component(k)))
    torch.testing.assert_close(
        gaussian_flow(sde, x_T, 1.0, 0.4, stack, 1), gaussian_flow(sde, x_T, 1.0, 0.4, stack.component(1))
    )
    # the hand-over is set by the widest Gaussian of the stack
    widest = max(range(2), key=lambda k: float(torch.linalg.eigvalsh(stack.covs[k]).max()))
    assert gaussian_start(sde, stack, 0.3) == gaussian_start(sde, stack.component(widest), 0.3)
    x, info = sample_fast(lambda z, t: -z, sde, x_T.float(), 5, moments=stack, components=labels)
    assert info["start"] < 1 and info["nfe"] == 5
    with pytest.raises(ValueError, match="needs components"):
        gaussian_flow(sde, x_T, 1.0, 0.4, stack)


def test_a_coordinate_constant_in_the_data_still_has_a_density():
    """An image's always-blank corner has no variance: the ridge keeps every Gaussian's density finite,
    and a diagonal stack scores observed entries as the full stack of the same diagonals does."""
    labels = torch.arange(60) % 3
    x = torch.randn(60, 3, generator=gen(13), dtype=torch.float64) @ COV + 2.0 * labels[:, None]
    x[:, 1] = 0.5
    z = torch.randn(5, 3, generator=gen(14), dtype=torch.float64)
    z[:, 1] = 0.5
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    for moments in (data_moments(x), component_moments(x, labels, 3)):
        assert bool(torch.isfinite(moments.observed_log_probs(z, mask)).all())
    diagonal = component_moments(x, labels, 3, full_max_dim=1)
    full = GaussianMixture(diagonal.means, diagonal.covs, diagonal.weights)
    torch.testing.assert_close(diagonal.observed_log_probs(z, mask), full.observed_log_probs(z, mask))
