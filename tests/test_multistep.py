"""Multistep log-SNR solvers (DPM-Solver++ 1-3, UniPC with UniC) driven by exact diffused-mixture scores."""

import math

import pytest
import torch
from _exact import exact_score, held_apart_mixture
from test_fast_samplers import observed_order

from scorefield import noise
from scorefield.distributions import GaussianMixture
from scorefield.gaussian import gaussian_flow, gaussian_start
from scorefield.metrics import mode_weights
from scorefield.multistep import (
    FAST_GRIDS,
    FAST_SOLVERS,
    GAUSSIAN_GRIDS,
    GAUSSIAN_START_MAX_NFE,
    fast_grid,
    optimize_grid,
    sample_fast,
    sample_multistep,
    sde_family,
)
from scorefield.samplers import sample_ode, tweedie
from scorefield.score import posterior_mean
from scorefield.sde import VESDE, VPSDE, SubVPSDE

SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=30.0), "vp": VPSDE(), "subvp": SubVPSDE()}
CONFIGS = [
    ("dpm++", 1, False),
    ("dpm++", 2, False),
    ("dpm++", 3, False),
    ("unipc", 1, True),
    ("unipc", 2, True),
    ("unipc", 3, True),
]


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("solver, order, corrector", CONFIGS)
def test_exact_when_the_denoiser_is_constant(name, solver, order, corrector):
    """Data at one point mu: D = mu at every t, every solver's extrapolation is exact, and the answer is mu."""
    sde = SDES[name]
    mu = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    point = GaussianMixture(mu, 1e-12 * torch.eye(2, dtype=torch.float64)[None], [1.0])
    x_T = sde.prior_sample((16, 2), generator=gen(0), dtype=torch.float64)
    grid = noise.time_grid(4, t_end=0.05, dtype=torch.float64)
    seen = []
    x, info = sample_multistep(
        exact_score(point, sde), sde, x_T, grid, solver=solver, order=order, corrector=corrector,
        callback=lambda state: seen.append((state["t"], state["x"])),
    )  # fmt: skip
    torch.testing.assert_close(x, mu.expand(16, 2), rtol=0, atol=1e-8)
    assert info["nfe"] == 5 and [t for t, _ in seen] == pytest.approx(grid.tolist())
    (m, std), (m1, std1) = sde.marginal(grid[-1]), sde.marginal(grid[0])
    torch.testing.assert_close(seen[-1][1], m * mu + (std / std1) * (x_T - m1 * mu), rtol=1e-9, atol=1e-9)


def test_second_order_forms_agree():
    """UniP-2 with B(h) = e^h - 1 is DPM-Solver++(2M): two forms of the same update."""
    sde, mix = VPSDE(), held_apart_mixture()
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((64, 2), generator=gen(1), dtype=torch.float64)
    grid = noise.time_grid(9, t_end=0.1, dtype=torch.float64)
    options = {"order": 2, "corrector": False, "lower_order_final": False}
    reference, _ = sample_multistep(score, sde, x_T, grid, solver="dpm++", **options)
    x, info = sample_multistep(score, sde, x_T, grid, solver="unipc", **options)
    torch.testing.assert_close(x, reference, rtol=1e-12, atol=1e-12)
    assert info["nfe"] == 10


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_orders_of_convergence_on_a_log_snr_grid(name):
    """Median error of D at eps against dopri5 at 1e-10: DPM-Solver++ 1 and 2 converge at their order, UniC
    raises UniP-1 and UniP-2 by one (Zhao et al. 2023, Thm 3.3); order 3 is held to 2 by its
    lower-order first steps but is the most accurate of each family."""
    sde, mix, eps = SDES[name], held_apart_mixture(), 1e-3
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((24, 2), generator=gen(1), dtype=torch.float64)
    ref_x, _ = sample_ode(score, sde, x_T, rtol=1e-10, atol=1e-10, t_end=eps)
    m, std = sde.marginal(eps)
    reference = posterior_mean(ref_x, score(ref_x, torch.full((24,), eps, dtype=torch.float64)), m, std)
    steps = (80, 160, 320)
    errors = {}
    for solver, order, corrector in CONFIGS:
        errors[solver, order] = [
            float((sample_multistep(score, sde, x_T, noise.time_grid(n, sde, kind="log_snr", t_end=eps, dtype=torch.float64), solver=solver, order=order, corrector=corrector)[0] - reference).norm(dim=1).median())
            for n in steps
        ]  # fmt: skip
    expected = {("dpm++", 1): 1, ("dpm++", 2): 2, ("unipc", 1): 2, ("unipc", 2): 3}
    for key, order in expected.items():
        assert abs(observed_order(errors[key], steps) - order) < 0.3, (key, errors[key])
    assert observed_order(errors["dpm++", 3], steps) > 1.7
    assert errors["dpm++", 3][-1] < errors["dpm++", 2][-1] and errors["unipc", 3][-1] < errors["unipc", 2][-1]


@pytest.mark.parametrize("name", list(SDES))
def test_mode_weights_at_10_score_evaluations(name):
    """4000 samples: the weights 0.6/0.3/0.1 are known to +-0.0077 (1 sd), so 0.03 is about 4 sd."""
    sde, mix = SDES[name], held_apart_mixture(torch.float32)
    x_T = sde.prior_sample((4000, 2), generator=gen(2))
    grid = noise.time_grid(9, sde, kind="log_snr", t_end=0.02)
    x, info = sample_multistep(exact_score(mix, sde), sde, x_T, grid)
    assert info["nfe"] == 10 and torch.isfinite(x).all()
    assert (mode_weights(x, mix) - mix.weights.double()).abs().max() < 0.03


def test_bad_arguments_are_refused():
    sde = VPSDE()
    x_T = torch.zeros(2, 2)
    grid = noise.time_grid(3)
    with pytest.raises(ValueError, match="unknown solver 'heun'"):
        sample_multistep(lambda x, t: -x, sde, x_T, grid, solver="heun")
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        sample_multistep(lambda x, t: -x, sde, x_T, grid, order=4)
    with pytest.raises(ValueError, match="unknown variant"):
        sample_multistep(lambda x, t: -x, sde, x_T, grid, variant="bh3")
    with pytest.raises(ValueError, match="decrease strictly"):
        sample_multistep(lambda x, t: -x, sde, x_T, grid.flip(0))


@pytest.mark.parametrize("solver", [None, *FAST_SOLVERS])
def test_sample_fast_spends_its_budget_and_never_leaves_the_data_range(solver):
    """Every solver at every budget from 2 to 20 (and 50): exactly nfe evaluations, samples inside the
    data's range (the mixture's modes lie within 3.5 of the origin, with standard deviation 0.5)."""
    sde, mix = VPSDE(), held_apart_mixture(torch.float32)
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((500, 2), generator=gen(4))
    for nfe in [*range(2, 21), 50]:
        x, info = sample_fast(score, sde, x_T, nfe, solver=solver)
        assert info["nfe"] == nfe and info["solver"] == (solver or "unipc")
        row = max([b for b in FAST_GRIDS["VP"] if b <= nfe], default=min(FAST_GRIDS["VP"]))
        assert solver is not None or info["order"] == FAST_GRIDS["VP"][row][0]  # the budget below's
        assert torch.isfinite(x).all() and x.abs().max() < 6.5, (nfe, x.abs().max())


def test_sample_fast_default_recovers_the_mode_weights_at_10_evaluations():
    sde, mix = VPSDE(), held_apart_mixture(torch.float32)
    x_T = sde.prior_sample((4000, 2), generator=gen(5))
    x, info = sample_fast(exact_score(mix, sde), sde, x_T, 10)
    assert info["nfe"] == 10 and info["solver"] == "unipc"
    assert (mode_weights(x, mix) - mix.weights.double()).abs().max() < 0.03


def karras_levels(top: float, end: float, rho: float, n: int) -> torch.Tensor:
    """Karras et al.'s ladder of ``n`` noise levels from ``top`` to ``end`` (eq. 5; geometric for rho = inf)."""
    frac = torch.linspace(0, 1, n, dtype=torch.float64)
    if math.isinf(rho):
        return torch.exp(math.log(top) + frac * (math.log(end) - math.log(top)))
    return (top ** (1 / rho) + frac * (end ** (1 / rho) - top ** (1 / rho))) ** rho


def test_fast_grid_is_the_tabulated_noise_ladder_and_interpolates_between_budgets():
    """A VE SDE whose sigma_max is below the cap gets the whole ladder from sigma_max; the VP SDE (152 at
    t = 1) spends its first evaluation there and the rest on the ladder from the cap."""
    ve, vp = VESDE(sigma_min=0.01, sigma_max=10.0), VPSDE()
    assert sde_family(ve) == "VE" and sde_family(vp) == sde_family(SubVPSDE()) == "VP"
    _, _, cap, end, rho = FAST_GRIDS["VE"][10]
    levels = noise.noise_level(ve, fast_grid(10, ve, dtype=torch.float64))
    torch.testing.assert_close(levels, karras_levels(10.0, end, rho, 10), rtol=1e-9, atol=0)
    _, _, cap, end, rho = FAST_GRIDS["VP"][15]
    grid = fast_grid(15, vp, dtype=torch.float64)
    assert float(grid[0]) == 1.0
    torch.testing.assert_close(
        noise.noise_level(vp, grid[1:]), karras_levels(cap, end, rho, 14), rtol=1e-9, atol=0
    )
    for sde, family in ((ve, "VE"), (vp, "VP")):
        table = FAST_GRIDS[family]

        def level(nfe, sde=sde):
            return float(noise.noise_level(sde, fast_grid(nfe, sde, dtype=torch.float64)[-1]))

        assert table[15][3] < level(12) < table[10][3]
        assert level(2) == pytest.approx(table[5][3], rel=1e-9)
        floor = float(noise.noise_level(sde, torch.tensor(noise.T_END, dtype=torch.float64)))
        assert level(400) == pytest.approx(max(table[50][3], floor), rel=1e-9)  # held at t >= T_END


@pytest.mark.parametrize("name", list(SDES))
def test_with_moments_the_grid_is_the_gaussian_table_ladder_from_the_hand_over(name):
    """Up to GAUSSIAN_START_MAX_NFE evaluations the grid starts at the hand-over for GAUSSIAN_GRIDS' snr,
    whose level is sqrt(largest variance / snr), and its levels are the Karras ladder from there to that
    table's sigma_end; between tabulated budgets its last level lies between theirs; above the limit
    the moments change nothing."""
    sde = SDES[name]
    cov = torch.diag(torch.tensor([0.5, 0.1], dtype=torch.float64))
    moments = GaussianMixture(
        torch.zeros(1, 2, dtype=torch.float64), cov[None], torch.ones(1, dtype=torch.float64)
    )
    table = GAUSSIAN_GRIDS[sde_family(sde)]
    for nfe in (5, 8):
        snr, end, rho = table[nfe]
        grid = fast_grid(nfe, sde, moments=moments, dtype=torch.float64)
        assert float(grid[0]) == pytest.approx(gaussian_start(sde, moments, snr), rel=1e-12)
        levels = noise.noise_level(sde, grid)
        assert float(levels[0]) == pytest.approx(math.sqrt(0.5 / snr), rel=1e-6)
        torch.testing.assert_close(levels, karras_levels(float(levels[0]), end, rho, nfe), rtol=1e-6, atol=0)
    last = float(noise.noise_level(sde, fast_grid(6, sde, moments=moments, dtype=torch.float64)[-1]))
    assert min(table[5][1], table[8][1]) * (1 - 1e-9) <= last <= max(table[5][1], table[8][1]) * (1 + 1e-9)
    nfe = GAUSSIAN_START_MAX_NFE + 2
    torch.testing.assert_close(fast_grid(nfe, sde, moments=moments), fast_grid(nfe, sde))


def test_sample_fast_refuses_what_it_cannot_honour():
    sde, x_T = VPSDE(), torch.zeros(3, 2)
    with pytest.raises(ValueError, match="nfe must be an integer >= 2"):
        sample_fast(lambda x, t: -x, sde, x_T, 1)
    with pytest.raises(ValueError, match="unknown solver 'rk45'"):
        sample_fast(lambda x, t: -x, sde, x_T, 5, solver="rk45")
    with pytest.raises(ValueError, match="decrease strictly"):
        sample_fast(lambda x, t: -x, sde, x_T, torch.tensor([1.0, 0.1, 0.5]))


def test_an_optimized_grid_beats_the_default_on_its_model_and_keeps_the_budget():
    """Within its trust region the fit gains a few percent at 6 evaluations (measured: 0.94x the default's
    RMS on its draws, 0.95x on 300 fresh ones), and keeps the budget."""
    sde, mix = VPSDE(), held_apart_mixture(torch.float32)
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((300, 2), generator=gen(6))
    grid, info = optimize_grid(score, sde, x_T, 6, max_iter=60)
    assert grid.shape == (6,) and float(grid[0]) == 1.0 and bool((grid.diff() < 0).all())
    assert info["rms"] < 0.97 * info["rms_default"], info
    assert not info["kept_default"] and info["rms_held_out"] < info["rms_held_out_default"], info
    x, run = sample_fast(score, sde, x_T, grid.float())
    assert run["nfe"] == 6
    # it carries to draws it never saw: RMS to the converged ODE solution on 300 others
    x_new = sde.prior_sample((300, 2), generator=gen(16))
    reference, ode = sample_ode(score, sde, x_new, rtol=1e-5, atol=1e-5)
    reference = tweedie(score, sde, reference, ode["times"][-1].expand(300))

    def rms(time_grid):
        return float((sample_fast(score, sde, x_new, time_grid)[0] - reference).square().sum(1).mean().sqrt())

    default = fast_grid(6, sde)
    assert rms(grid.float()) < 0.97 * rms(default), (rms(grid.float()), rms(default))
    with pytest.raises(ValueError, match="n_starts must be a positive integer"):
        optimize_grid(score, sde, x_T, 6, n_starts=0)
    with pytest.raises(ValueError, match="held_out must lie in"):
        optimize_grid(score, sde, x_T, 6, held_out=1.0)


def test_an_optimized_grid_that_loses_on_the_held_out_draws_is_not_returned():
    """Fitted to 20 draws (5 held out) the search overfits; whenever the held-out draws prefer the default
    grid, the default comes back, so the answer never loses to it there."""
    sde, mix = VPSDE(), held_apart_mixture(torch.float32)
    score = exact_score(mix, sde)
    for seed in range(3):
        x_T = sde.prior_sample((20, 2), generator=gen(30 + seed))
        grid, info = optimize_grid(score, sde, x_T, 5, max_iter=30, n_starts=1, held_out=0.25)
        if info["kept_default"]:
            torch.testing.assert_close(grid, fast_grid(5, sde, dtype=torch.float64))
        else:
            assert info["rms_held_out"] < info["rms_held_out_default"]


def test_fast_grid_is_placed_by_noise_level_on_every_sde():
    """VP and sub-VP reach the same levels (both 152 at t = 1) at other times; a VE SDE whose range ends
    below the grid's last level is refused with the reason."""
    vp, subvp = VPSDE(), SubVPSDE()
    for nfe in (5, 10, 20):
        vp_grid, subvp_grid = (
            fast_grid(nfe, vp, dtype=torch.float64),
            fast_grid(nfe, subvp, dtype=torch.float64),
        )
        torch.testing.assert_close(  # sigma(1): 152.164, 152.167
            noise.noise_level(subvp, subvp_grid), noise.noise_level(vp, vp_grid), rtol=1e-4, atol=0
        )
        assert bool((subvp_grid[1:] != vp_grid[1:]).all())
    with pytest.raises(ValueError, match="raise sigma_max"):
        fast_grid(10, VESDE(sigma_min=0.01, sigma_max=0.1))


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("given", [False, True], ids=["no moments", "moments"])
def test_the_default_on_gaussian_data_errs_by_the_closed_form_shrinkage(name, given):
    """For Gaussian data the probability-flow ODE is solved in closed form (gaussian_flow), and so is
    the error the default grid accepts by stopping at sigma_end: Tweedie's D there against D at t = 1e-3
    on the same exact path. The grid ends where the solver's own error is below that shrinkage: on 8-D
    data with scales 0.1 to 2 it is 0.03-0.82x of it over VE, VP, sub-VP and 5-20 evaluations (4000
    draws, float64, deterministic), and the total falls to 0.06 at 20 evaluations (measured 0.014-0.046).
    Given the data's moments the start up to 8 evaluations is exact here, and the lower last levels of
    GAUSSIAN_GRIDS leave less shrinkage than the grids from t = 1 at the same budgets."""
    sde, d = SDES[name], 8
    g = gen(40)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.logspace(-2, math.log10(4.0), d, dtype=torch.float64)) @ q.T
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    mix = GaussianMixture(mean[None], cov[None], torch.ones(1, dtype=torch.float64))

    def exact_denoised(t: float) -> torch.Tensor:
        x = gaussian_flow(sde, x_T, 1.0, t, mix)
        m, s = (float(v) for v in sde.marginal(torch.tensor(t, dtype=torch.float64)))
        covariance = m**2 * cov + s**2 * torch.eye(d, dtype=torch.float64)
        return posterior_mean(x, -torch.linalg.solve(covariance, (x - m * mean).T).T, m, s)

    def rms(a, b):
        return float((a - b).square().sum(1).mean().sqrt())

    x_T = sde.prior_sample((4000, d), generator=gen(41), dtype=torch.float64)
    reference, totals = exact_denoised(noise.T_END), []
    for nfe in (5, 8, 10, 15, 20):
        x, info = sample_fast(exact_score(mix, sde), sde, x_T, nfe, moments=mix if given else None)
        stopped = exact_denoised(float(info["times"][-1]))
        assert rms(x, stopped) < rms(stopped, reference), nfe
        totals.append(rms(x, reference))
        if given and nfe <= GAUSSIAN_START_MAX_NFE:
            assert totals[-1] < rms(sample_fast(exact_score(mix, sde), sde, x_T, nfe)[0], reference), nfe
    # each grid family's total falls with the budget (with moments the start changes after 8 evaluations)
    families = [totals[:2], totals[2:]] if given else [totals[1:]]
    assert totals[-1] < 0.06 and all(a > b for f in families for a, b in zip(f, f[1:], strict=False)), totals


@pytest.mark.parametrize("name", list(SDES))
def test_fast_grid_starts_at_one_exactly_without_moments(name):
    for nfe in (2, 5, 7, 12, 20, 35):
        grid = fast_grid(nfe, SDES[name])
        assert float(grid[0]) == 1.0 and len(grid) == nfe and bool((grid.diff() < 0).all())


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_the_default_is_unipc_of_the_tables_order_and_variant(name):
    sde, mix = SDES[name], held_apart_mixture()
    score = exact_score(mix, sde)
    x_T = sde.prior_sample((64, 2), generator=gen(9), dtype=torch.float64)
    for nfe in (5, 20):
        order, variant, *_ = FAST_GRIDS[sde_family(sde)][nfe]
        x, info = sample_fast(score, sde, x_T, nfe)
        assert (info["order"], info["variant"]) == (order, variant)
        expected, _ = sample_multistep(
            score, sde, x_T, fast_grid(nfe, sde, dtype=torch.float64), order=order, variant=variant
        )
        torch.testing.assert_close(x, expected)
