"""ScoreDensityEstimator's base density (a mixture by BIC or a KDE that the network corrects) and its
dequantisation of lattice columns (docs/math.md#a-base-density-for-the-denoiser, #ties-and-dequantisation)."""

import numpy as np
import pytest
import torch

from scorefield.distributions import GaussianMixture
from scorefield.estimators import ScoreDensityEstimator, recipe


def _three_blobs() -> GaussianMixture:
    means = torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]], dtype=torch.float64)
    covs = torch.stack([torch.eye(2, dtype=torch.float64) * s for s in (0.3, 0.6, 0.2)])
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


def test_a_mixture_is_found_as_the_base_and_matches_the_truth():
    mix = _three_blobs()
    g = torch.Generator().manual_seed(0)
    train, test = mix.sample(900, g).numpy(), mix.sample(600, g).numpy()
    est = ScoreDensityEstimator(steps=300, random_state=0).fit(train)
    assert est.base_ == "gmm"
    assert est.base_scores_["gmm"] > max(est.base_scores_["gaussian"], est.base_scores_["kde"]) - 0.05
    # 900 rows of a 3-component mixture: the held-out gap to the true density is a few hundredths
    gap = float(mix.log_prob(torch.from_numpy(test)).mean()) - est.score(test)
    assert -0.02 < gap < 0.08


def test_the_base_alone_gives_its_closed_form_through_the_ode():
    """A zero network on a base: the probability-flow log-density equals the base's closed form."""
    mix = _three_blobs()
    x = mix.sample(400, torch.Generator().manual_seed(1)).numpy()
    est = ScoreDensityEstimator(steps=50, base="kde").fit(x)
    z = est.scaler_.transform(torch.from_numpy(x[:64]).float())
    closed = recipe.base_log_density(est.model_.base.mixture, est.model_.sde, z, 1e-3)
    est.model_.net.net.output.weight.data.zero_()
    est.model_.net.net.output.bias.data.zero_()
    ode = recipe.log_density(est.model_, z, 1e-3, torch.arange(64), seed=0)
    # rk4 on 16 log-SNR steps in float32 through a sharp KDE: a few rows are off by ~1e-2, the
    # mean by far less; a wrong base score or divergence would be off by O(1)
    assert float((ode - closed).abs().max()) < 0.03
    assert abs(float((ode - closed).mean())) < 2e-3


def test_lattice_columns_are_found_and_dequantised():
    rng = np.random.default_rng(0)
    n = 800
    ages = rng.integers(20, 26, size=n).astype(float)  # six integer values
    x = np.column_stack([ages, rng.normal(size=n) + 0.3 * ages])
    assert recipe.lattice_steps(torch.from_numpy(x)).tolist() == [1.0, 0.0]
    est = ScoreDensityEstimator(steps=300).fit(x)
    assert est.dequantized_ == {0: 1.0}
    # no spikes: the density at the lattice points is that of a quarter-cell away
    probe = x[:200].copy()
    off = probe.copy()
    off[:, 0] += 0.25
    spike = est.score_samples(probe) - est.score_samples(off)
    assert abs(float(np.mean(spike))) < 0.3, np.mean(spike)


def test_save_and_load_keep_the_base(tmp_path):
    x = _three_blobs().sample(300, torch.Generator().manual_seed(2)).numpy()
    est = ScoreDensityEstimator(steps=30, base="kde").fit(x)
    est.save(tmp_path / "kde.safetensors")
    back = ScoreDensityEstimator.load(tmp_path / "kde.safetensors")
    assert back.base_ == "kde" and back.correction_ == est.correction_
    np.testing.assert_array_equal(back.score_samples(x[:20]), est.score_samples(x[:20]))


def test_a_base_needs_the_denoiser_parameterisation():
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="param='denoiser'"):
        ScoreDensityEstimator(param="eps", base="kde", steps=5).fit(x)
    with pytest.raises(ValueError, match="base"):
        ScoreDensityEstimator(base="parzen", steps=5).fit(x)


def test_a_kernel_base_denoises_by_runs_as_its_mixture_does():
    # the KDE's kernels share a variance and the tail has another: the per-run matrix products give the
    # mixture's exact posterior mean (float64: to rounding), with and without the tail
    from scorefield.estimators.bases import RUNS_MIN_PAIRS, MixtureBase, _kde, with_tail

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(300, 3, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(256, 3, generator=g, dtype=torch.float64)
    t = torch.rand(256, generator=g, dtype=torch.float64)
    m, std = torch.exp(-t), (1 - torch.exp(-2 * t)).sqrt() + 1e-3
    assert len(x) * len(rows) >= RUNS_MIN_PAIRS  # the runs' path
    for mixture in (_kde(rows, 0.2), with_tail(_kde(rows, 0.2), 0.01)):
        by_runs = MixtureBase(mixture).denoise(x, m, std)
        torch.testing.assert_close(by_runs, mixture.denoise(x, m, std), rtol=1e-10, atol=1e-10)
