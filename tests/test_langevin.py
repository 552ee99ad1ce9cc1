import math

import pytest
import torch

from scorefield.distributions import Gaussian, two_gaussians
from scorefield.langevin import annealed_langevin, langevin, mala
from scorefield.losses import ncsn
from scorefield.metrics import mmd, mode_weights
from scorefield.nets.mlp import MLP
from scorefield.noise import geometric_sigmas
from scorefield.score import NoiseConditionalScore
from scorefield.utils import make_generator

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[2.0, 1.2], [1.2, 1.0]], dtype=torch.float64)  # eigenvalues 2.8 and 0.2
N_CHAINS = 20000


def _assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, n_se: float = 5.0) -> None:
    """Sample mean and covariance of independent rows within ``n_se`` Monte-Carlo standard errors."""
    n = x.shape[0]
    var = torch.diagonal(cov)
    mean_se = (var / n).sqrt()
    cov_se = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()  # Var of a Gaussian sample covariance
    assert ((x.mean(0) - mean).abs() < n_se * mean_se).all(), (x.mean(0), mean)
    assert ((torch.cov(x.T) - cov).abs() < n_se * cov_se).all(), (torch.cov(x.T), cov)


def _start(n: int = N_CHAINS) -> torch.Tensor:
    return torch.randn(n, 2, generator=make_generator(0), dtype=torch.float64)


def test_langevin_reaches_the_gaussian_up_to_its_known_step_bias():
    # Unadjusted Langevin on N(mu, S) is a linear recursion whose stationary law is exactly
    # N(mu, S (I - eps S^-1 / 2)^-1): the mean is unbiased, the covariance carries an O(eps) bias.
    # At eps = 0.2 that bias doubles the variance along the thin axis (S eigenvalue 0.2), far beyond
    # the Monte-Carlo error, so the test checks the bias formula itself; 400 steps relax the slow
    # axis (rate eps / 2.8 per step) by a factor e^-28.
    p, eps = Gaussian(MEAN, COV), 0.2
    x = langevin(p.score, _start(), 400, step_size=eps, generator=make_generator(1))[0]
    eye = torch.eye(2, dtype=torch.float64)
    biased = COV @ torch.linalg.inv(eye - eps / 2 * torch.linalg.inv(COV))
    _assert_moments(x, MEAN, biased)
    thin_axis = torch.linalg.eigh(COV).eigenvectors[:, 0]
    assert (x @ thin_axis).var().item() > 1.8 * 0.2


def test_mala_is_exact_where_langevin_is_biased():
    # Same target and step (eps = 0.2, where unadjusted Langevin doubles the thin axis's variance):
    # the Metropolis correction removes the bias, so MALA's moments are S's within MC error.
    p = Gaussian(MEAN, COV)
    x, info = mala(p.log_prob, _start(), 500, step_size=0.2, generator=make_generator(1))
    _assert_moments(x, MEAN, COV)
    assert 0.5 < info["acceptance_rate"] < 0.95 and info["nfe"] == 501


def test_mala_acceptance_falls_with_step_size():
    p = Gaussian(MEAN, COV)
    x_init = p.sample(1000, generator=make_generator(2))
    rates = [
        mala(p.log_prob, x_init, 30, step_size=eps, generator=make_generator(3))[1]["acceptance_rate"]
        for eps in (0.01, 0.1, 0.4, 1.5)
    ]
    assert all(0 < r < 1 for r in rates)
    assert rates == sorted(rates, reverse=True) and rates[0] > 0.98 and rates[-1] < 0.1, rates


def test_annealing_recovers_mode_weights_that_plain_langevin_misses():
    # The tutorials' central claim. Modes at -(5,5) (weight 0.8) and +(5,5) (weight 0.2), chains started
    # uniformly on [-8, 8]^2. Plain Langevin with the exact score only rolls each chain into the
    # basin it starts in (about half the box each); annealed Langevin on the exact smoothed scores
    # mixes at large sigma, where the modes overlap, and keeps the 0.8 / 0.2 split as they separate.
    mixture, n = two_gaussians(), 5000
    x_init = (torch.rand(n, 2, generator=make_generator(4)) * 2 - 1) * 8
    naive = mode_weights(
        langevin(mixture.score, x_init, 500, step_size=0.1, generator=make_generator(5))[0], mixture
    )

    def smoothed_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return mixture.smooth(float(sigma[0])).score(x)

    sigmas = geometric_sigmas(20.0, 0.1, 20)
    x = annealed_langevin(
        smoothed_score, x_init, sigmas, n_steps_each=100, step_size=1e-3, generator=make_generator(5)
    )[0]
    annealed = mode_weights(x, mixture)
    assert abs(annealed[0].item() - 0.8) < 0.03, annealed  # MC standard error 0.006
    assert abs(naive[0].item() - 0.8) > 0.1, naive
    # the final denoised samples sit on the modes with the right spread
    assert x[mixture.component_of(x) == 0].std(0).sub(1).abs().max() < 0.1


def _noise_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -x / (1 + sigma[:, None] ** 2)  # N(0, I) smoothed by sigma


def test_same_generator_seed_gives_bitwise_same_samples():
    p, x_init = Gaussian(MEAN, COV), _start(64)
    sigmas = geometric_sigmas(5.0, 0.1, 4, dtype=torch.float64)
    runs = {
        "langevin": lambda g: langevin(p.score, x_init, 20, step_size=0.05, generator=g)[0],
        "mala": lambda g: mala(p.log_prob, x_init, 20, step_size=0.3, generator=g)[0],
        "annealed": lambda g: annealed_langevin(
            _noise_score, x_init, sigmas, n_steps_each=5, step_size=0.01, generator=g
        )[0],
    }
    for name, run in runs.items():
        a, b, c = run(make_generator(7)), run(make_generator(7)), run(make_generator(8))
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name


def test_callbacks_see_every_update():
    x_init = _start(8)
    seen = []
    out, info = langevin(
        lambda x: -x, x_init, 7, step_size=0.1, callback=lambda c: seen.append((c["i"], c["x"]))
    )
    assert info == {"nfe": 7}
    assert [k for k, _ in seen] == list(range(7)) and seen[-1][1] is out

    seen.clear()
    sigmas = geometric_sigmas(5.0, 0.1, 3, dtype=torch.float64)
    out, info = annealed_langevin(
        _noise_score,
        x_init,
        sigmas,
        n_steps_each=4,
        step_size=0.01,
        callback=lambda c: seen.append((c["i"], c["x"])),
    )
    assert info == {"nfe": 4 * len(sigmas) + 1}
    assert [k for k, _ in seen] == list(range(13)) and seen[-1][1] is out  # 3 levels x 4 + denoise

    seen.clear()
    out, _ = mala(
        lambda x: -0.5 * x.square().sum(1), x_init, 5, step_size=0.1, callback=lambda c: seen.append(c["i"])
    )
    assert seen == list(range(5))


def test_annealed_step_sizes_and_final_denoising_follow_algorithm_one():
    # With a zero score each update is x + sqrt(2 alpha_i) z, so the total variance added is
    # sum_i T * 2 alpha_i with alpha_i = step_size * sigma_i^2 / sigma_L^2. The denoising step adds
    # sigma_L^2 s(x, sigma_L): with s = -x / (1 + sigma^2) it shrinks x by 1 - sigma_L^2 / (1 + sigma_L^2).
    sigmas = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    x_init = torch.zeros(40000, 1, dtype=torch.float64)
    x = annealed_langevin(
        lambda x, s: torch.zeros_like(x),
        x_init,
        sigmas,
        n_steps_each=3,
        step_size=0.01,
        generator=make_generator(9),
    )[0]
    expected = 3 * 2 * 0.01 * (16 + 4 + 1)  # (sigma_i / sigma_L)^2 = 16, 4, 1
    assert x.var().item() == pytest.approx(expected, rel=5 * math.sqrt(2 / 40000))

    x1 = torch.ones(3, 2, dtype=torch.float64)
    shrunk = annealed_langevin(
        _noise_score, x1, sigmas, n_steps_each=1, step_size=1e-16, generator=make_generator(9)
    )[0]
    torch.testing.assert_close(shrunk, x1 * (1 - 0.25 / 1.25), atol=1e-5, rtol=0)
    raw = annealed_langevin(
        _noise_score, x1, sigmas, n_steps_each=1, step_size=1e-16, denoise=False, generator=make_generator(9)
    )[0]
    torch.testing.assert_close(raw, x1, atol=1e-5, rtol=0)


def test_samplers_run_under_no_grad_with_autograd_scores_and_keep_no_graph():
    # an energy-based score takes a gradient inside; the samplers must not keep its graph
    weight = torch.tensor(1.5, requires_grad=True)

    def energy_score(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            energy = 0.5 * weight * x.square().sum(1)
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        return -grad  # carries a graph back to `weight`

    with torch.no_grad():
        x = langevin(energy_score, _start(16), 5, step_size=0.1)[0]
    assert not x.requires_grad and x.grad_fn is None
    x, _ = mala(lambda x: -0.5 * weight * x.square().sum(1), _start(16), 5, step_size=0.1)
    assert not x.requires_grad and x.grad_fn is None
    x = annealed_langevin(
        lambda x, s: energy_score(x), _start(16), [2.0, 1.0], n_steps_each=3, step_size=0.1
    )[0]
    assert not x.requires_grad and x.grad_fn is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: langevin(lambda y: -y, x, 10, step_size=0.0)[0], "step_size"),
        (lambda x: langevin(lambda y: -y, x, 0, step_size=0.1)[0], "n_steps"),
        (lambda x: langevin(lambda y: -y, x[0], 5, step_size=0.1)[0], "x_init"),
        (lambda x: mala(lambda y: -y.sum(1), x, 10, step_size=-1.0), "step_size"),
        (
            lambda x: annealed_langevin(_noise_score, x, [1.0, 2.0], n_steps_each=5, step_size=0.1)[0],
            "decreasing",
        ),
        (
            lambda x: annealed_langevin(_noise_score, x, [2.0, 0.0], n_steps_each=5, step_size=0.1)[0],
            "positive",
        ),
        (
            lambda x: annealed_langevin(_noise_score, x, [2.0, 1.0], n_steps_each=5, step_size=float("nan"))[
                0
            ],
            "step_size",
        ),
        (
            lambda x: annealed_langevin(_noise_score, x, [2.0, 1.0], n_steps_each=2.5, step_size=0.1)[0],
            "n_steps_each",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(_start(4))


def test_trained_ncsn_with_annealed_langevin_recovers_two_gaussians():
    # End to end: fit s(x, sigma) with the NCSN loss on samples of the two-mode mixture, then sample
    # with annealed Langevin from the uniform box that defeats plain Langevin above.
    mixture, g = two_gaussians(), make_generator(0)
    data = mixture.sample(10000, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the network's initial weights and Fourier frequencies
        model = NoiseConditionalScore(MLP(2, hidden=64, depth=3))
    sigmas = geometric_sigmas(20.0, 0.1, 10)
    steps = 1500
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        batch = data[torch.randint(0, data.shape[0], (256,), generator=g)]
        loss = ncsn(model, batch, sigmas, generator=g).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

    n = 2000
    x_init = (torch.rand(n, 2, generator=g) * 2 - 1) * 8
    x = annealed_langevin(
        model, x_init, sigmas, n_steps_each=50, step_size=2e-3, generator=make_generator(1)
    )[0]
    assert abs(mode_weights(x, mixture)[0].item() - 0.8) < 0.05
    # The MMD bound is what the weight tolerance already allows: the samples must be closer to the
    # truth than exact samples of the same mixture with its weights moved by that 0.05 (0.75 / 0.25).
    # Null level for reference: two independent true sets give MMD^2 ~ 0 with standard error ~0.002.
    truth = mixture.sample(n, generator=make_generator(2))
    shifted = two_gaussians(weights=(0.75, 0.25)).sample(n, generator=make_generator(3))
    assert mmd(x, truth) < mmd(shifted, truth)
