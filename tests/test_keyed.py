"""Noise keyed by sample: the hash is SplitMix64 bit for bit, the draws are standard normal / uniform /
Rademacher by the usual tests, and a sample's noise does not depend on the batch it is drawn in."""

from __future__ import annotations

import math

import pytest
import torch
from _exact import exact_score, held_apart_mixture
from scipy import stats

from scorefield.keyed import KeyedNoise, mix64
from scorefield.langevin import annealed_langevin, mala
from scorefield.likelihood import _draw_probes
from scorefield.samplers import sample_pc
from scorefield.sde import VPSDE

M64 = 2**64 - 1


def splitmix64_finaliser(z: int) -> int:
    """The reference in Python integers (Steele et al. 2014; Vigna's splitmix64.c)."""
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def test_the_hash_is_splitmix64_on_this_machine():
    # int64 tensor products must wrap modulo 2^64 and shifts be made logical: checked on edge patterns
    values = [0, 1, -1, 2**63 - 1, -(2**63), 0x9E3779B97F4A7C15 - 2**64, 123456789, -987654321987]
    values += [
        int(v) for v in torch.randint(-(2**63), 2**63 - 1, (200,), generator=torch.Generator().manual_seed(0))
    ]
    got = mix64(torch.tensor(values, dtype=torch.int64)).tolist()
    assert [g & M64 for g in got] == [splitmix64_finaliser(v) for v in values]


def test_a_samples_noise_does_not_depend_on_its_batch():
    whole = KeyedNoise(5, torch.arange(40))
    part = KeyedNoise(5, torch.arange(17, 29))
    for _ in range(3):  # successive draws stay aligned
        assert torch.equal(whole.rademacher((40, 3, 2))[17:29], part.rademacher((12, 3, 2)))
        # float64 Box-Muller rounds alike elementwise up to the last bit of a vectorised vs scalar log
        torch.testing.assert_close(whole.randn((40, 5))[17:29], part.randn((12, 5)), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(whole.rand((40,))[17:29], part.rand((12,)), rtol=1e-6, atol=1e-7)
    assert not torch.equal(
        KeyedNoise(6, torch.arange(40)).randn((40, 5)), KeyedNoise(5, torch.arange(40)).randn((40, 5))
    )


def test_normal_draws_are_standard_normal_and_independent():
    n = 100_000
    noise = KeyedNoise(1, torch.arange(n))
    z = noise.randn((n, 3), dtype=torch.float64)
    z_next = noise.randn((n, 3), dtype=torch.float64)
    se = 1 / math.sqrt(n)
    assert z.mean().abs() < 5 * se and (z.var() - 1).abs() < 5 * math.sqrt(2) * se
    assert stats.kstest(z[:, 0].numpy(), "norm").pvalue > 1e-4
    assert stats.kstest(z[:, 2].numpy(), "norm").pvalue > 1e-4  # the odd element, cosine half of a pair
    corr = torch.corrcoef(torch.cat([z, z_next], dim=1).T) - torch.eye(6, dtype=torch.float64)
    assert corr.abs().max() < 5 * se  # across elements, and between successive draws


def test_uniform_and_rademacher_draws():
    n = 100_000
    noise = KeyedNoise(2, torch.arange(n))
    u = noise.rand((n,), dtype=torch.float64)
    assert u.min() >= 0 and u.max() < 1 and stats.kstest(u.numpy(), "uniform").pvalue > 1e-4
    signs = noise.rademacher((n, 2))
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and signs.mean().abs() < 5 / math.sqrt(2 * n)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="holds 4 samples"):
        KeyedNoise(0, torch.arange(4)).randn((5, 2))
    with pytest.raises(ValueError, match="1-D integer tensor"):
        KeyedNoise(0, torch.zeros(3))


def _in_batches(fn, n: int, sizes: list[int]) -> torch.Tensor:
    out, start = [], 0
    for size in sizes:
        out.append(fn(KeyedNoise(9, torch.arange(start, start + size))))
        start += size
    assert start == n
    return torch.cat(out)


@pytest.mark.parametrize("predictor", ["euler_maruyama", "reverse_diffusion", "ancestral"])
def test_predictor_corrector_samples_do_not_depend_on_the_batch(predictor):
    mix, sde = held_apart_mixture(torch.float64), VPSDE()
    score = exact_score(mix, sde)

    def run(noise: KeyedNoise) -> torch.Tensor:
        x_T = sde.prior_sample((noise.index.numel(), 2), generator=noise, dtype=torch.float64)
        return sample_pc(score, sde, x_T, 30, predictor=predictor, generator=noise)[0]

    whole = _in_batches(run, 30, [30])
    torch.testing.assert_close(_in_batches(run, 30, [7, 7, 7, 9]), whole, rtol=1e-9, atol=1e-9)


def test_langevin_mala_and_hutchinson_probes_do_not_depend_on_the_batch():
    mix = held_apart_mixture(torch.float64)
    sigmas = torch.tensor([3.0, 1.0, 0.3], dtype=torch.float64)

    def ald(noise: KeyedNoise) -> torch.Tensor:
        x0 = 3 * noise.randn((noise.index.numel(), 2), torch.float64)
        return annealed_langevin(
            lambda x, s: mix.smooth(float(s[0])).score(x),
            x0,
            sigmas,
            n_steps_each=5,
            step_size=0.05,
            generator=noise,
        )[0]

    torch.testing.assert_close(
        _in_batches(ald, 20, [3, 17]), _in_batches(ald, 20, [20]), rtol=1e-9, atol=1e-9
    )

    def metropolis(noise: KeyedNoise) -> torch.Tensor:
        x0 = noise.randn((noise.index.numel(), 2), torch.float64)
        return mala(mix.log_prob, x0, 10, step_size=0.1, generator=noise)[0]

    torch.testing.assert_close(_in_batches(metropolis, 20, [11, 9]), _in_batches(metropolis, 20, [20]))

    # Hutchinson's probes: [P, B, ...], each example's own whatever its batch
    x = torch.zeros(12, 3)
    whole = _draw_probes(x, 4, KeyedNoise(1, torch.arange(12)))
    assert whole.shape == (4, 12, 3) and torch.equal(
        _draw_probes(x[5:], 4, KeyedNoise(1, torch.arange(5, 12))), whole[:, 5:]
    )
