import math

import pytest
import torch
from scipy.stats import norm

from scorefield.noise import (
    as_grid,
    geometric_sigmas,
    level_overlap,
    level_ratio,
    max_pairwise_distance,
    noise_level,
    num_levels,
    resolve_sigma_max,
    time_at_noise_level,
    time_grid,
)
from scorefield.utils import make_generator


def test_geometric_sigmas_constant_ratio_exact_endpoints():
    sigmas = geometric_sigmas(50.0, 0.01, 12, dtype=torch.float64)
    assert sigmas.shape == (12,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == 50.0 and sigmas[-1].item() == 0.01
    ratios = sigmas[:-1] / sigmas[1:]
    expected = (50.0 / 0.01) ** (1 / 11)
    torch.testing.assert_close(ratios, torch.full_like(ratios, expected), rtol=1e-12, atol=0)
    assert geometric_sigmas(50.0, 0.01, 12).dtype == torch.float32


@pytest.mark.parametrize(
    ("args", "match"),
    [((1.0, 0.0, 10), "sigma_min"), ((0.1, 1.0, 10), "larger than sigma_min"), ((1.0, 0.1, 1), "n must")],
)
def test_geometric_sigmas_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        geometric_sigmas(*args)


def test_max_pairwise_distance_matches_brute_force():
    g = make_generator(0)
    data = torch.randn(300, 2, 3, generator=g)  # [N, ...]: flattened to 6-D
    flat = data.flatten(1).double()
    brute = (flat[:, None, :] - flat[None, :, :]).norm(dim=-1).max().item()  # every pair, no cdist
    assert max_pairwise_distance(data, chunk_size=64) == pytest.approx(brute, rel=1e-12)
    assert resolve_sigma_max("auto", data) == pytest.approx(brute, rel=1e-12)
    assert resolve_sigma_max(7.5, data) == 7.5


def test_max_pairwise_distance_subsample_is_reproducible_lower_bound():
    data = torch.randn(5000, 3, generator=make_generator(1))
    full = max_pairwise_distance(data, max_points=5000)
    a = max_pairwise_distance(data, max_points=500, generator=make_generator(2))
    b = max_pairwise_distance(data, max_points=500, generator=make_generator(2))
    assert a == b and 0.7 * full < a <= full
    with pytest.raises(ValueError, match="auto"):
        resolve_sigma_max("max", data)
    with pytest.raises(ValueError, match="needs the training data"):
        resolve_sigma_max("auto")


def test_resolve_sigma_max_margin_applies_to_auto_only():
    data = torch.randn(200, 3, generator=make_generator(3))
    distance = max_pairwise_distance(data)
    assert resolve_sigma_max("auto", data, factor=1.5, pad=1.0) == pytest.approx(
        1.5 * distance + 1.0, rel=1e-15
    )
    assert resolve_sigma_max(7.5, data, factor=1.5, pad=1.0) == 7.5  # a number is taken as it is
    for factor, pad in [(0.5, 0.0), (1.0, -1.0), (float("nan"), 0.0), (1.0, float("inf"))]:
        with pytest.raises(ValueError, match="factor >= 1 and pad >= 0"):
            resolve_sigma_max("auto", data, factor=factor, pad=pad)


@pytest.mark.parametrize("dim", [5, 10, 100, 3072])
def test_level_ratio_solves_technique_two(dim):
    gamma = level_ratio(dim)
    a = math.sqrt(2 * dim) * (gamma - 1)
    assert norm.cdf(a + 3 * gamma) - norm.cdf(a - 3 * gamma) == pytest.approx(0.5, abs=1e-10)
    assert gamma > 1


def test_level_ratio_means_half_the_samples_land_in_the_next_shell():
    # What technique 2 means: a sample of N(0, sigma_i^2 I) has its norm in the 3-std shell of
    # sigma_{i-1} = gamma sigma_i, [gamma (sqrt(d) - 3/sqrt 2), gamma (sqrt(d) + 3/sqrt 2)] sigma_i,
    # with probability 1/2 (the rule's normal approximation of the chi law is good at d = 200).
    dim, gamma = 200, level_ratio(200)
    r = torch.randn(20000, dim, generator=make_generator(3), dtype=torch.float64).norm(dim=1)
    half_width = 3 / math.sqrt(2)
    inside = (r > gamma * (math.sqrt(dim) - half_width)) & (r < gamma * (math.sqrt(dim) + half_width))
    assert inside.double().mean().item() == pytest.approx(0.5, abs=0.03)


def test_num_levels_is_the_fewest_levels_that_overlap_enough():
    sigma_max, sigma_min = 50.0, 0.01
    counts = [num_levels(d, sigma_max, sigma_min, min_levels=2) for d in (10, 100, 1000, 3072)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    for dim, n in zip((10, 100, 1000, 3072), counts, strict=True):
        ratio_n = (sigma_max / sigma_min) ** (1 / (n - 1))
        ratio_fewer = (sigma_max / sigma_min) ** (1 / (n - 2))
        assert level_overlap(ratio_n, dim) >= 0.5 > level_overlap(ratio_fewer, dim)
    # the CIFAR-10 setting of Song & Ermon 2020 (d = 3072, sigma 50 -> 0.01) asks for hundreds of levels
    assert 200 < counts[-1] < 400


def test_num_levels_low_dimension_uses_the_floor():
    # in d <= 4 every ratio keeps the shells overlapping: no constraint, the floor decides
    assert math.isinf(level_ratio(2))
    assert level_overlap(1e3, 2) > 0.99
    assert num_levels(2, 20.0, 0.05) == 10
    assert num_levels(2, 20.0, 0.05, min_levels=25) == 25


def test_time_grid_uniform():
    t = time_grid(10, t_end=1e-3, t_start=1.0, dtype=torch.float64)
    assert t.shape == (11,) and t[0].item() == 1.0 and t[-1].item() == 1e-3
    torch.testing.assert_close(t.diff(), torch.full((10,), -(1 - 1e-3) / 10, dtype=torch.float64))
    for kwargs, match in [
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": 5, "t_end": 2.0}, "t_end"),
        ({"n_steps": 5, "kind": "cosine"}, "kind"),
        ({"n_steps": 5, "kind": "edm"}, "sde"),
    ]:
        with pytest.raises(ValueError, match=match):
            time_grid(**kwargs)


def _sdes():
    from scorefield.sde import VESDE, VPSDE, SubVPSDE

    return [VESDE(sigma_min=0.01, sigma_max=50.0), VPSDE(), SubVPSDE()]


@pytest.mark.parametrize("sde", _sdes(), ids=["ve", "vp", "subvp"])
def test_time_grid_log_snr_and_edm_follow_their_noise_spacing(sde):
    eps, n, rho = 1e-3, 16, 7.0
    for kind in ("log_snr", "edm"):
        t = time_grid(n, sde, kind=kind, t_end=eps, rho=rho, dtype=torch.float64)
        assert t.shape == (n + 1,) and t[0].item() == 1.0 and t[-1].item() == eps
        assert (t.diff() < 0).all()
        scale, std = sde.marginal(t)
        noise = std / scale  # sigma(t), increasing in t; equally spaced in each kind's coordinate
        coord = noise.log() if kind == "log_snr" else noise ** (1 / rho)
        steps = coord.diff()
        torch.testing.assert_close(steps, steps.mean().expand(n), rtol=1e-7, atol=1e-9)
    # the two grids differ: EDM crowds its steps at low noise, log-SNR spaces them evenly
    t_edm = time_grid(n, sde, kind="edm", t_end=eps, dtype=torch.float64)
    t_snr = time_grid(n, sde, kind="log_snr", t_end=eps, dtype=torch.float64)
    assert (t_edm[1:-1] > t_snr[1:-1]).all() or (t_edm[1:-1] < t_snr[1:-1]).all()


def test_time_grid_edm_matches_the_sde_inverse_for_ve():
    # under VE the scale is 1, so sigma(t) = std(t) and sde.t_from_std inverts it in closed form
    sde = _sdes()[0]
    t = time_grid(10, sde, kind="edm", t_end=1e-5, dtype=torch.float64)
    s_max, s_min = sde.marginal(1.0)[1].item(), sde.marginal(1e-5)[1].item()
    i = torch.arange(11, dtype=torch.float64) / 10
    sigma = (s_max ** (1 / 7) + i * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7  # Karras et al. 2022, eq. 5
    torch.testing.assert_close(t, sde.t_from_std(sigma), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sde", _sdes(), ids=["ve", "vp", "subvp"])
def test_noise_level_and_its_inverse_agree(sde):
    t = torch.tensor([1e-3, 0.1, 0.5, 0.9], dtype=torch.float64)
    sigma = noise_level(sde, t)
    scale, std = sde.marginal(t)
    torch.testing.assert_close(sigma, std / scale)
    torch.testing.assert_close(time_at_noise_level(sde, sigma), t, rtol=1e-9, atol=1e-12)


def test_as_grid_builds_a_number_of_steps_and_checks_a_given_grid():
    x = torch.zeros(3, 2, dtype=torch.float64)
    torch.testing.assert_close(as_grid(4, x, t_end=0.2), time_grid(4, t_end=0.2, dtype=torch.float64))
    given = torch.tensor([1.0, 0.5, 0.1])
    assert as_grid(given, x).dtype == torch.float64 and as_grid(given, x).tolist() == given.double().tolist()
    for bad in (torch.tensor([0.1, 0.5]), torch.tensor([1.5, 0.5]), torch.tensor([1.0]), torch.ones(2, 2)):
        with pytest.raises(ValueError, match="time grid"):
            as_grid(bad, x)
