"""ScoreImputer: exact Gaussian conditionals through the whitening rotation, imputations near the
oracle's on correlated data, calibrated multiple imputation, and scikit-learn's conventions."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from torch import nn

from scorefield import ScoreImputer
from scorefield.distributions import Gaussian, GaussianMixture
from scorefield.estimators.imputer import _draw, choose_base, draw_interval, gaussian_em, min_draws
from scorefield.score import ScoreModel

MEAN = np.array([1.0, -20.0, 0.3])
SCALE = np.array([1.0, 10.0, 0.1])  # different units: the imputer must standardise
CORR = np.array([[1.0, 0.8, -0.5], [0.8, 1.0, -0.3], [-0.5, -0.3, 1.0]])
COV = CORR * np.outer(SCALE, SCALE)


def gaussian_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(complete, with_nan)``: Gaussian rows and a copy with 20% of the cells missing at random, at
    least one observed per row."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(MEAN, COV, size=n)
    missing = rng.random(x.shape) < 0.2
    missing[missing.all(1), rng.integers(0, 3)] = False
    return x, np.where(missing, np.nan, x)


def conditional(x_nan: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the Gaussian conditional mean (rows completed) and the conditional variances of the missing cells."""
    filled, var = x_nan.copy(), np.zeros_like(x_nan)
    for i, row in enumerate(x_nan):
        m = np.isnan(row)
        o = ~m
        if m.any():
            gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
            filled[i, m] = mean[m] + gain @ (row[o] - mean[o])
            var[i, m] = np.diag(cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)])
    return filled, var


def rmse(imputed: np.ndarray, x: np.ndarray, x_nan: np.ndarray) -> float:
    """RMSE over the missing cells in standard deviations of each column."""
    m = np.isnan(x_nan)
    return float(np.sqrt(np.mean((((imputed - x) / SCALE)[m]) ** 2)))


@pytest.fixture(scope="module")
def data():
    return gaussian_rows(800, 0)


@pytest.fixture(scope="module")
def fitted(data):
    return ScoreImputer(steps=600, n_draws=8, random_state=0).fit(data[1])


class Zero(nn.Module):
    """A network that outputs zero: with ``param="denoiser"`` the model is exactly the whitened Gaussian."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, noise):
        return torch.zeros_like(x)


def test_em_recovers_the_covariance_and_draws_keep_the_observed_cells(data):
    x, x_nan = data
    mean, cov = gaussian_em(x_nan)
    complete = np.cov(x.T, bias=True)
    assert np.abs((cov.numpy() - complete) / np.outer(SCALE, SCALE)).max() < 0.05
    assert np.abs((mean.numpy() - x.mean(0)) / SCALE).max() < 0.03
    missing = torch.from_numpy(np.isnan(x_nan))
    given = Gaussian(mean, cov).condition(torch.from_numpy(x_nan), missing)
    drawn = given.sample(1, torch.Generator().manual_seed(0))[0].numpy()
    m = np.isnan(x_nan)
    assert np.array_equal(drawn[~m], x_nan[~m]) and np.isfinite(drawn).all()
    # the draws have the conditional law: standardised residuals about the conditional mean are N(0, 1)
    cond_mean, cond_var = conditional(x_nan, mean.numpy(), cov.numpy())
    z = ((drawn - cond_mean)[m]) / np.sqrt(cond_var[m])
    se = 1 / np.sqrt(m.sum())
    assert abs(z.mean()) < 5 * se and abs(z.var() - 1) < 5 * np.sqrt(2) * se


def test_with_a_gaussian_base_alone_the_imputations_are_its_closed_form_conditionals(fitted, data):
    """On Gaussian rows the fitted density is the whitened Gaussian N(mu, D W^-2 D) (no mixture or KDE
    beats it, nor a 600-step correction), which VP diffusion leaves unchanged: transform is its exact
    conditional mean, to float64 rounding, and the draws have its conditional law."""
    est = fitted.estimator_
    assert est.base_ == "gaussian" and not est.correction_
    scaler = est.scaler_
    std = scaler.standardizer.std.double().numpy()
    w_inv = np.linalg.inv(scaler.matrix.double().numpy())
    mean, cov = scaler.standardizer.mean.double().numpy(), (w_inv @ w_inv) * np.outer(std, std)
    x_nan = data[1]
    cond_mean, cond_var = conditional(x_nan, mean, cov)
    np.testing.assert_allclose(fitted.transform(x_nan), cond_mean, rtol=1e-9, atol=1e-9 * std.max())
    draws = fitted.sample_imputations(x_nan[:200], 400)
    m = np.isnan(x_nan[:200])
    z = (draws[:, m] - cond_mean[:200][m]) / np.sqrt(cond_var[:200][m])
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.var() - 1) < 4 * np.sqrt(2 / z.size), (
        z.mean(),
        z.var(),
    )


def test_with_a_kept_correction_the_draws_are_exact_conditionals_by_smc(fitted, data):
    """A kept correction is sampled by sequential Monte Carlo in rotated whitened coordinates; with a zero
    network (the whitened Gaussian) the rotation must make its draws the exact Gaussian conditionals
    (docs/math.md#conditional-sampling), whatever the pattern."""
    imp = clone(fitted)
    imp.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    est = imp.estimator_ = clone(fitted.estimator_)
    est.__dict__.update({k: v for k, v in fitted.estimator_.__dict__.items() if k.endswith("_")})
    est.model_ = ScoreModel(Zero(), fitted.estimator_.model_.sde, param="denoiser")
    est.correction_ = True  # sampled as a corrected model would be
    scaler = est.scaler_
    std = scaler.standardizer.std.double().numpy()
    w_inv = np.linalg.inv(scaler.matrix.double().numpy())
    mean, cov = scaler.standardizer.mean.double().numpy(), (w_inv @ w_inv) * np.outer(std, std)
    rows = data[1][[i for i, r in enumerate(data[1]) if np.isnan(r).any()][:6]]  # several patterns
    draws = imp.sample_imputations(rows, 1500)  # (n, rows, d)
    cond_mean, cond_var = conditional(rows, mean, cov)
    m = np.isnan(rows)
    got_mean = draws.mean(0)[m]
    se = np.sqrt(cond_var[m] / 1500)
    assert (np.abs(got_mean - cond_mean[m]) < 5 * se).all(), (got_mean, cond_mean[m], se)
    # the draws' spread, pooled over the cells: SMC moves by the ancestral kernel, whose step variance is
    # that of a narrow law, so on a unit-variance one its 50 steps give standardised residuals of variance
    # about 0.83 (docs/math.md#conditional-sampling-by-sequential-monte-carlo), never more than 1
    z = (draws[:, m] - cond_mean[m]) / np.sqrt(cond_var[m])
    assert 0.75 < z.var() < 1 + 4 * np.sqrt(2 / z.size), z.var()
    # transform's control variate is the same sampler with the base's score: here the model is its base,
    # the two runs agree draw for draw (to float32 rounding), and their mean is the exact conditional one
    np.testing.assert_allclose(imp.transform(rows), cond_mean, rtol=0, atol=1e-4 * std.max())


def test_imputations_approach_the_oracle_and_beat_the_column_means(fitted, data):
    x, x_nan = data
    imputed = fitted.transform(x_nan)
    m = np.isnan(x_nan)
    assert np.array_equal(imputed[~m], x_nan[~m]) and np.isfinite(imputed).all()
    oracle = rmse(conditional(x_nan, MEAN, COV)[0], x, x_nan)  # the true law's conditional mean
    means = rmse(np.where(m, np.nanmean(x_nan, 0), x_nan), x, x_nan)
    ours = rmse(imputed, x, x_nan)
    # the fitted Gaussian's exact conditional mean: only its estimation error from 800 rows separates it
    # from the oracle's (parameters off by ~1/sqrt(800) = 3.5% of a standard deviation)
    assert ours < 1.03 * oracle and oracle < 0.8 * means, (ours, oracle, means)


def mixture_table(n: int, seed: int) -> tuple[GaussianMixture, np.ndarray, np.ndarray]:
    """``(law, complete, with_nan)``: rows of a 3-D mixture of three correlated Gaussians 6-8 sd apart,
    20% of the cells missing at random, at least one observed per row."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, -0.4], [0.0, -0.4, 1.0]])
    law = GaussianMixture(
        torch.tensor([[0.0, 0.0, 0.0], [6.0, 4.0, -2.0], [-3.0, 6.0, 5.0]], dtype=torch.float64),
        torch.tensor(np.stack([cov, 0.5 * cov + 0.2 * np.eye(3), np.eye(3)])),
        torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    )
    x = law.sample(n, torch.Generator().manual_seed(seed)).numpy()
    missing = rng.random(x.shape) < 0.2
    missing[missing.all(1), 0] = False
    return law, x, np.where(missing, np.nan, x)


def test_on_a_mixture_table_the_imputations_are_the_fitted_mixtures_conditional_means():
    """Rows of a Gaussian mixture: the base by BIC is a mixture, which a short correction cannot beat, so
    transform is the closed form's conditional mean (docs/math.md#conditioning-a-mixture), near the true
    law's. What separates them: the components fitted to ~1,000 rows (off by ~1/sqrt(rows per component),
    5-8% of a standard deviation), the 1% of whitened Gaussian in the base, and the fill the density is
    fitted to (each missing cell drawn first from a Gaussian, then from the chosen mixture's conditional,
    so a few rows still sit between the clusters); the gap is largest on rows whose observed cells leave the
    component in doubt. Their RMS gap is held to 0.15 sd (the column means are 0.9 sd away), and the
    error against the hidden values to within 5% of the oracle's."""
    law, x, x_nan = mixture_table(1200, 3)
    imp = ScoreImputer(steps=200, random_state=0).fit(x_nan)
    assert imp.base_ == imp.estimator_.base_ == "gmm" and not imp.estimator_.correction_
    m = np.isnan(x_nan)
    oracle = law.condition(torch.from_numpy(x_nan), torch.from_numpy(m)).mean().numpy()
    imputed = imp.transform(x_nan)
    scale = x.std(0)
    gap = np.sqrt(np.mean((((imputed - oracle) / scale)[m]) ** 2))
    means = np.sqrt(np.mean((((np.nanmean(x_nan, 0) - oracle) / scale)[m]) ** 2))
    ours, best = (np.sqrt(np.mean((((v - x) / scale)[m]) ** 2)) for v in (imputed, oracle))
    assert gap < 0.15 and means > 0.8 and ours < 1.05 * best, (gap, means, ours, best)


def ar_table(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(complete, with_nan)``: Gaussian rows with correlations ``0.9^|i - j|``, 20% of cells missing."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(d), 0.9 ** np.abs(np.subtract.outer(np.arange(d), np.arange(d))), n)
    missing = rng.random(x.shape) < 0.2
    missing[missing.all(1), 0] = False
    return x, np.where(missing, np.nan, x)


@pytest.mark.parametrize(
    "table, chosen, worse", [("gaussian", "gaussian", "kde"), ("mixture", "gmm", "gaussian")]
)
def test_the_base_is_the_one_whose_conditionals_predict_hidden_cells_best(table, chosen, worse):
    """choose_base scores each base by its conditional means on observed cells hidden from held-out rows
    (docs/math.md#choosing-the-conditional-model). On 300 rows of a 20-D Gaussian the kernel density
    estimate's conditional is little more than its nearest kernel's value: its error is over 20% above
    the Gaussian's (0.47 against 0.36 sd). On three clusters the Gaussian's conditional mean falls between
    them: over 30% above the mixture's (0.80 against 0.52)."""
    x_nan = ar_table(20, 300, 0)[1] if table == "gaussian" else mixture_table(1200, 3)[2]
    gaussian = Gaussian(*gaussian_em(x_nan))
    filled = _draw(gaussian, x_nan, torch.Generator().manual_seed(0))
    name, errors = choose_base(x_nan, filled, gaussian, 0)
    assert name == chosen and set(errors) == {"gaussian", "gmm", "kde"}
    assert errors[chosen] == min(errors.values())
    assert errors[worse] > (1.2 if table == "gaussian" else 1.3) * errors[chosen], errors


def test_multiple_imputation_intervals_cover_at_their_level(fitted, data):
    x, x_nan = data
    draws = fitted.sample_imputations(x_nan, 20)
    assert draws.shape == (20, *x_nan.shape)
    m = np.isnan(x_nan)
    low, high = np.percentile(draws, [5, 95], axis=0)
    covered = ((x >= low) & (x <= high))[m].mean()
    # for 21 exchangeable values, the one left out lies between the interpolated 5th and 95th
    # percentiles of the other 20 with probability (19.05 - 1.95) / 21 = 0.814 (E F(x_(k)) = k / 21),
    # the coverage of exact conditional draws; the band is about 2.7 binomial se for ~490 cells
    assert abs(covered - 17.1 / 21) < 0.05, covered
    # predict_interval's order statistics hold the level: the extremes of the same 20 draws, 19/21
    low, high = fitted.predict_interval(x_nan, level=0.9, n=20)
    assert np.array_equal(low, draws.min(0)) and np.array_equal(high, draws.max(0))
    covered = ((x >= low) & (x <= high))[m].mean()
    assert abs(covered - 19 / 21) < 0.04, covered  # 3 binomial se (0.013) for ~490 cells
    assert np.array_equal(low[~m], x_nan[~m]) and np.array_equal(high[~m], x_nan[~m])


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95])
def test_draw_interval_covers_an_exchangeable_value_with_its_stated_probability(level):
    n = min_draws(level)
    with pytest.raises(ValueError, match=f"at least {n}"):
        draw_interval(np.zeros((n - 1, 3)), level)
    rng = np.random.default_rng(0)
    for draws_n in (n, n + 7, 3 * n):
        values = rng.standard_normal((draws_n + 1, 40_000))  # column k: n draws and one more value
        low, high, coverage = draw_interval(values[:-1], level)
        assert coverage >= level - 1e-12
        covered = ((values[-1] >= low) & (values[-1] <= high)).mean()
        assert abs(covered - coverage) < 4 * np.sqrt(coverage * (1 - coverage) / 40_000), (draws_n, covered)
    assert min_draws(0.9) == 19 and draw_interval(np.arange(19.0)[:, None], 0.9)[2] == pytest.approx(0.9)


def test_predict_interval_refuses_levels_and_counts_it_cannot_honour(fitted, data):
    x_nan = data[1][:10]
    with pytest.raises(ValueError, match="level must lie"):
        fitted.predict_interval(x_nan, level=1.0)
    with pytest.raises(ValueError, match="use n >= 19"):
        fitted.predict_interval(x_nan, level=0.9, n=10)
    low, high = fitted.predict_interval(x_nan)  # 19 draws by default
    assert np.all(low <= high) and np.array_equal(low, fitted.sample_imputations(x_nan, 19).min(0))


def test_imputations_are_reproducible_and_depend_on_each_row_alone(fitted, data):
    x_nan = data[1][:300]
    whole = fitted.transform(x_nan)
    assert np.array_equal(whole, fitted.transform(x_nan))
    part = fitted.transform(x_nan[140:100:-1])  # other rows, another order and batch
    np.testing.assert_allclose(part, whole[140:100:-1], rtol=1e-5, atol=1e-5)
    draws = fitted.sample_imputations(x_nan, 3)
    assert np.array_equal(draws, fitted.sample_imputations(x_nan, 3))
    np.testing.assert_allclose(
        fitted.sample_imputations(x_nan[140:100:-1], 3), draws[:, 140:100:-1], rtol=1e-12
    )
    other = copy.copy(fitted)
    other.seed_ = fitted.seed_ + 5  # what another random_state would draw
    assert not np.allclose(other.sample_imputations(x_nan[:50], 3), draws[:, :50])
    assert clone(fitted).set_params(random_state=0).fit(x_nan[:40]).seed_ == fitted.seed_


def test_bad_inputs_are_refused_with_a_clear_error(fitted, data):
    x_nan = data[1]
    with pytest.raises(NotFittedError):
        ScoreImputer().transform(x_nan)
    assert list(fitted.get_feature_names_out()) == ["x0", "x1", "x2"]  # set_output and pipelines need it
    with pytest.raises(ValueError, match="3 features"):
        fitted.transform(x_nan[:, :2])
    bad = x_nan[:20].copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="row"):
        fitted.transform(bad)
    with pytest.raises(ValueError, match="row"):
        ScoreImputer().fit(bad)
    bad = np.nan_to_num(x_nan[:20], nan=0.5)
    bad[:, 1] = np.nan
    with pytest.raises(ValueError, match="column.*no observed value"):
        ScoreImputer().fit(bad)
    bad = np.nan_to_num(x_nan[:20].copy(), nan=0.5)
    bad[:, 2] = 7.0
    with pytest.raises(ValueError, match="column.*distinct"):
        ScoreImputer().fit(bad)
    bad = x_nan[:20].copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        fitted.transform(bad)
    with pytest.raises(ValueError, match="at least 10"):
        ScoreImputer().fit(x_nan[:5])
    with pytest.raises(ValueError, match="n must be"):
        fitted.sample_imputations(x_nan[:5], 0)
    with pytest.raises(ValueError, match="n_draws"):
        ScoreImputer(n_draws=0).fit(x_nan)


def test_works_in_a_pipeline_before_a_regressor_and_clones():
    x, x_nan = gaussian_rows(200, 1)
    y = x @ np.array([1.0, 0.1, -5.0])
    imp = ScoreImputer(steps=100, n_draws=2, random_state=0)
    assert clone(imp).get_params() == imp.get_params() and imp.get_params()["n_draws"] == 2
    pipe = Pipeline([("impute", imp), ("regress", LinearRegression())]).fit(x_nan, y)
    pred = pipe.predict(x_nan)
    assert pred.shape == y.shape and np.isfinite(pred).all()
    assert np.corrcoef(pred, y)[0, 1] > 0.8  # the imputed features still predict y
