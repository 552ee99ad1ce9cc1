"""scikit-learn estimators: conventions, exact-density accuracy in data units, persistence, errors."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from scorefield.distributions import Gaussian
from scorefield.estimator import ScoreAnomalyDetector, ScoreDensityEstimator

# A correlated 2-D Gaussian in "data units" far from standardised (mean 50, scales 10 and 0.5),
# so a wrong scaler log-determinant would show as an offset of log(10 * 0.5) ~ 1.6 nats.
MEAN = torch.tensor([50.0, -3.0], dtype=torch.float64)
COV = torch.tensor([[100.0, 2.0], [2.0, 0.25]], dtype=torch.float64)


@pytest.fixture(scope="module")
def fitted():
    p = Gaussian(MEAN, COV)
    g = torch.Generator().manual_seed(0)
    train, test = p.sample(1500, g).numpy(), p.sample(400, g).numpy()
    est = ScoreDensityEstimator(steps=1500, seed=0).fit(train)
    return p, est, train, test


def test_log_density_in_data_units_matches_truth(fitted):
    p, est, _, test = fitted
    logp = est.score_samples(test)
    true = p.log_prob(torch.as_tensor(test)).numpy()
    # the physical limit is the true mean log-density; a smooth model gets within a tenth of a nat
    assert abs(logp.mean() - true.mean()) < 0.1
    assert np.abs(logp - true).mean() < 0.25  # pointwise: 1500 steps on 1275 rows
    assert est.score(test) == pytest.approx(logp.mean())


def test_grad_log_prob_is_the_data_unit_score(fitted):
    p, est, _, test = fitted
    s = est.grad_log_prob(test)
    s_true = p.score(torch.as_tensor(test)).numpy()
    rel = np.square(s - s_true).sum(1).mean() / np.square(s_true).sum(1).mean()
    assert rel < 0.06


def test_samples_have_the_data_moments(fitted):
    p, est, _, _ = fitted
    x = est.sample(2000, seed=1)
    assert x.shape == (2000, 2)
    sd = np.sqrt(np.diag(COV.numpy()))
    assert (np.abs(x.mean(0) - MEAN.numpy()) < 0.1 * sd).all()
    # a learned flow after 1500 steps: variances within 25%, correlation within 0.1
    assert (np.abs(x.std(0) / sd - 1) < 0.12).all()
    corr = np.corrcoef(x.T)[0, 1]
    assert abs(corr - 0.4) < 0.1
    assert np.array_equal(est.sample(5, seed=3), est.sample(5, seed=3))


def test_save_and_load_round_trip(fitted, tmp_path):
    _, est, _, test = fitted
    est.save(tmp_path / "model.safetensors")
    back = ScoreDensityEstimator.load(tmp_path / "model.safetensors")
    np.testing.assert_allclose(
        back.score_samples(test[:20]), est.score_samples(test[:20]), rtol=1e-6, atol=1e-6
    )
    assert back.get_params() == est.get_params()
    with pytest.raises(FileNotFoundError, match="no saved estimator"):
        ScoreDensityEstimator.load(tmp_path / "missing.safetensors")


def test_scikit_learn_conventions_and_errors(fitted):
    _, est, _, _ = fitted
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "model_")
    with pytest.raises(NotFittedError):
        twin.score_samples(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ScoreDensityEstimator().fit(np.array([[0.0, 1.0]] * 20 + [[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="features"):
        est.score_samples(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="unknown sde"):
        ScoreDensityEstimator(sde="nope").fit(np.random.default_rng(0).normal(size=(50, 2)))


def test_anomaly_detector_flags_the_far_points():
    g = torch.Generator().manual_seed(5)
    normal = torch.randn(800, 3, generator=g, dtype=torch.float64).numpy()
    outliers = (6 + torch.randn(40, 3, generator=g, dtype=torch.float64)).numpy()
    det = ScoreAnomalyDetector(contamination=0.05, steps=800, seed=0).fit(normal)
    assert det.predict(outliers).tolist().count(-1) == len(outliers)
    flagged = (det.predict(normal) == -1).mean()
    assert 0.0 < flagged < 0.15  # about the contamination share of the training rows
    assert (det.decision_function(outliers) < 0).all()
