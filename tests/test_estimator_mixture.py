"""The fitted density ``(1 - a) p_corr + a p_base``: no row below ``log a + log p_base``, the weight chosen
by cross-validated per-row log-densities, and each row's log-density a function of that row alone."""

import math

import numpy as np
import pytest
import torch

from scorefield.estimators import ScoreDensityEstimator, recipe


def _planted_table(n: int = 300, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A curved, correlated table and test rows with one planted outlier (40 sds from the data)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n + 20, d))
    x = u.copy()
    x[:, 1] += 0.8 * u[:, 0] ** 2  # a curved relation the whitened Gaussian misses
    x = x * np.arange(1, d + 1) + 10.0
    test = x[n:].copy()
    test[0] = x[:n].mean(0) + 40 * x[:n].std(0)
    return x[:n], test


def _base_log_density(est: ScoreDensityEstimator, x: np.ndarray) -> np.ndarray:
    """``log p_base`` of the fitted mixture's base at ``t_eval``, in data units."""
    z = est.scaler_.transform(torch.from_numpy(x).float())
    logp = recipe.base_log_density(est._base(), est.model_.sde, z, est.t_eval_).double()
    return (logp + est.scaler_.log_det).numpy()


@pytest.fixture(scope="module")
def corrected():
    """A fit whose correction is then kept with base weight 0.05 (the bound must hold for any weight)."""
    train, test = _planted_table()
    est = ScoreDensityEstimator(steps=150, hidden=32, base="gaussian", random_state=0).fit(train)
    est.correction_, est.base_weight_ = True, 0.05
    return est, test


def test_no_row_falls_below_log_a_plus_the_bases_log_density(corrected):
    est, test = corrected
    logp, log_base = est.score_samples(test), _base_log_density(est, test)
    floor = math.log(est.base_weight_) + log_base
    # the mixture's log-density is logaddexp(log(1 - a) + log p_corr, log a + log p_base) >= the floor,
    # to float rounding (the components are float32, the sum float64)
    assert (logp >= floor - 1e-4).all()
    assert logp[0] < logp[1:].min()  # the planted outlier is the least likely row


def test_the_default_fit_keeps_the_guarantee_on_the_planted_outlier():
    train, test = _planted_table(seed=1)
    est = ScoreDensityEstimator(steps=150, hidden=32, random_state=1).fit(train)
    assert est.base_weight_ in recipe.MIXTURE_WEIGHTS
    assert est.correction_ == (est.base_weight_ < 1)
    floor = math.log(est.base_weight_) + _base_log_density(est, test)
    assert (est.score_samples(test) >= floor - 1e-4).all()


def test_the_weight_limits_a_correction_that_is_catastrophic_on_some_rows():
    g = torch.Generator().manual_seed(0)
    log_base = {1e-2: -5 + torch.randn(200, generator=g, dtype=torch.float64)}
    bad = log_base[1e-2] + 1.0  # a nat better on most rows ...
    bad[::25] = -1e5  # ... and absurd on every 25th row
    mixture = recipe.choose_mixture({1e-2: bad}, log_base, torch.Generator().manual_seed(1))
    a = mixture.weight
    assert 0 < a < 1 and mixture.cv_gain > 0
    worst = float(
        torch.logaddexp(math.log1p(-a) + bad, math.log(a) + log_base[1e-2]).min() - log_base[1e-2].min()
    )
    assert worst >= math.log(a) - 1e-9


def test_a_correction_worse_on_every_row_is_dropped():
    g = torch.Generator().manual_seed(0)
    log_base = {t: -5 + torch.randn(100, generator=g, dtype=torch.float64) for t in (1e-3, 1e-2)}
    worse = {t: v - 0.5 for t, v in log_base.items()}
    mixture = recipe.choose_mixture(worse, log_base, torch.Generator().manual_seed(1))
    assert mixture.weight == 1.0 and mixture.cv_gain <= 0


@pytest.mark.parametrize("d", [4, 12])  # exact divergence, and Hutchinson's keyed probes beyond 8 features
def test_a_rows_log_density_does_not_depend_on_the_rows_beside_it(d):
    train, test = _planted_table(n=200, d=d, seed=2)
    est = ScoreDensityEstimator(steps=40, hidden=16, base="gaussian", random_state=0).fit(train)
    est.correction_, est.base_weight_ = True, 0.5  # the ODE path, whatever the fit decided
    together = est.score_samples(test)
    alone = np.array([est.score_samples(row[None])[0] for row in test[:6]])
    order = np.random.default_rng(0).permutation(len(test))
    shuffled = est.score_samples(np.concatenate([test[order], train[:50]]))[: len(test)]
    # float32 network evaluations of different batch sizes differ in the last bits (matmul blocking)
    np.testing.assert_allclose(alone, together[:6], rtol=0, atol=1e-3)
    np.testing.assert_allclose(shuffled, together[order], rtol=0, atol=1e-3)


def test_every_base_keeps_the_whitened_gaussians_tail():
    # a narrow KDE alone would put a far row thousands of nats down; its tail component keeps it within
    # -log(TAIL_WEIGHT) of the whitened Gaussian at any diffusion time
    from scorefield.distributions import gaussian_log_density
    from scorefield.estimators.bases import TAIL_WEIGHT, fit_gmm, fit_kde

    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, 3, generator=g) * 0.3
    far = torch.tensor([[8.0, -6.0, 5.0], [0.0, 0.0, 9.0]])
    for base in (fit_kde(z[:300], z[300:]), fit_gmm(z, seed=0)):
        one = torch.ones(len(far))
        for m, std in ((1.0, 1e-3), (0.8, 0.6)):
            var = m**2 + std**2
            gaussian = gaussian_log_density(far.square().sum(1) / var, 3 * math.log(var), 3)
            logp = base.log_prob(far, m * one, std * one)
            assert (logp >= math.log(TAIL_WEIGHT) + gaussian - 1e-4).all()


def test_a_fit_on_rows_its_base_already_matches_stops_early_and_drops_the_correction():
    # Gaussian rows and a mixture-by-BIC base (one component plus the tail): the base is the truth, so
    # no check beats its held-out loss by BEAT_BASE_SES standard errors; the first plateau after the
    # trial ends training and no log-density ODE is solved for the correction
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.5]]) + 5.0
    est = ScoreDensityEstimator(base="gmm", random_state=0).fit(x)
    assert not est.correction_ and est.base_weight_ == 1.0
    # of a budget of MAX_STEPS = 20,000: the trial and one patience
    pace = recipe.pace(len(x))
    assert est.n_steps_ <= pace.base_trial_steps + recipe.PATIENCE * pace.eval_every
    assert all(a == 1.0 for _, a in est.mixture_scores_)  # only the base alone was a candidate
    assert est.model_.net.net.output.weight.abs().max() == 0  # the model is the base alone


def test_a_correction_that_clearly_beats_the_base_is_a_candidate():
    # the planted table's curved relation, which the whitened Gaussian misses: the held-out loss of a
    # short run beats the Gaussian base's by more than BEAT_BASE_SES standard errors (on each of six
    # tables and seeds tried)
    train, _ = _planted_table(seed=3)
    est = ScoreDensityEstimator(steps=300, hidden=32, base="gaussian", random_state=0).fit(train)
    assert any(a < 1.0 for _, a in est.mixture_scores_)
