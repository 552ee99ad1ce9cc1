"""The estimators' inputs: array layouts and DataFrames, feature names, randomness of ``sample``,
``contamination="auto"``, saving, constant columns, verbosity (the catalogue of bad inputs is in
``test_bad_inputs.py``).

Every fit here is tiny (60 steps of a 16-wide network, a fixed ``t_eval``): these tests check the
handling of inputs, not the quality of the density.
"""

import inspect
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _inputs import COLUMNS, X, _fit, _with_column
from sklearn.base import clone

from scorefield.estimators import ScoreAnomalyDetector, ScoreDensityEstimator
from scorefield.estimators.density import IgnoredParameterWarning
from scorefield.estimators.io import Streams


@pytest.fixture(scope="module")
def fitted():
    return _fit(X)


# -- 1. array layouts and DataFrames ---------------------------------------------------------------
def _frame(data=X):
    return pd.DataFrame(data, columns=COLUMNS)


# (what the estimator is given, the same numbers as a plain C-contiguous array)
LAYOUTS = {
    "rows reversed X[::-1]": (lambda: X[::-1], lambda: X[::-1].copy()),
    "columns reversed X[:, ::-1]": (lambda: X[:, ::-1], lambda: X[:, ::-1].copy()),
    "every other row X[::-2]": (lambda: X[::-2], lambda: X[::-2].copy()),
    "Fortran order": (lambda: np.asfortranarray(X), lambda: X.copy()),
    "DataFrame": (lambda: _frame(), lambda: X.copy()),
    "DataFrame, columns reordered": (lambda: _frame()[["c", "a", "b"]], lambda: X[:, [2, 0, 1]].copy()),
    "DataFrame, columns reversed by iloc": (lambda: _frame().iloc[:, ::-1], lambda: X[:, ::-1].copy()),
    "DataFrame, rows reversed": (lambda: _frame().iloc[::-1], lambda: X[::-1].copy()),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_layout_converts_without_error_or_warning(layout):
    make, plain = LAYOUTS[layout]
    data = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's non-writable-array warning included
        warnings.simplefilter("ignore", IgnoredParameterWarning)  # the tiny test network is often dropped
        est = _fit(data)
        logp, grad = est.score_samples(data), est.grad_log_prob(data)
    ref = _fit(plain())  # the same numbers, the same seed: the same model
    np.testing.assert_allclose(logp, ref.score_samples(plain()), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, ref.grad_log_prob(plain()), rtol=1e-6, atol=1e-6)
    assert np.isfinite(logp).all() and grad.shape == (len(plain()), 3)


def test_a_fitted_estimator_scores_any_layout_and_a_single_row(fitted):
    expected = fitted.score_samples(X[::-1].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(fitted.score_samples(X[::-1]), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fitted.grad_log_prob(X[::-1]), fitted.grad_log_prob(X[::-1].copy()))
        one = fitted.score_samples(X[:1])  # scikit-learn scores a single row; so does this estimator
    assert one.shape == (1,) and np.isfinite(one).all()
    assert fitted.grad_log_prob(X[:1]).shape == (1, 3)


# -- 2. feature names ----------------------------------------------------------------------------
def test_feature_names_follow_scikit_learn(tmp_path):
    frame = _frame()
    est = _fit(frame)
    assert est.feature_names_in_.tolist() == COLUMNS and est.n_features_in_ == 3
    renamed = frame.rename(columns={"c": "z"})
    both = r"(?s)unseen at fit time:\n- z\n.*seen at fit time, yet now missing:\n- c\n"
    for method in (est.score_samples, est.grad_log_prob, est.score):
        with pytest.raises(ValueError, match=both):
            method(renamed)
    with pytest.raises(ValueError, match="same order"):
        est.score_samples(frame[["c", "a", "b"]])

    est.save(tmp_path / "named.safetensors")
    assert (
        json.loads((tmp_path / "named.safetensors.json").read_text())["state"]["feature_names_in_"] == COLUMNS
    )
    back = ScoreDensityEstimator.load(tmp_path / "named.safetensors")
    assert back.feature_names_in_.tolist() == COLUMNS and back.feature_names_in_.dtype == object
    np.testing.assert_allclose(back.score_samples(frame[:10]), est.score_samples(frame[:10]), atol=1e-6)
    with pytest.raises(ValueError, match=both):
        back.score_samples(renamed)

    est.fit(X)  # refitted on an array: the names go, as in scikit-learn
    assert not hasattr(est, "feature_names_in_")
    est.save(tmp_path / "plain.safetensors")
    assert not hasattr(ScoreDensityEstimator.load(tmp_path / "plain.safetensors"), "feature_names_in_")


@pytest.mark.parametrize("contamination", [0.1, "auto"])
def test_the_detector_takes_a_dataframe_without_warnings(contamination):
    frame = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither PyTorch's nor scikit-learn's feature-name warning
        warnings.simplefilter("ignore", IgnoredParameterWarning)
        det = _fit(frame, cls=ScoreAnomalyDetector, contamination=contamination)
        labels = det.fit_predict(frame)
    assert det.feature_names_in_.tolist() == COLUMNS and set(labels.tolist()) <= {-1, 1}
    with pytest.warns(UserWarning, match="X does not have valid feature names"):  # scikit-learn's rule
        np.testing.assert_array_equal(labels, det.predict(X.copy()))


# -- 3. randomness of sample ---------------------------------------------------------------------
def test_sample_follows_kernel_density_random_state(fitted):
    def draw(**kwargs):
        return fitted.sample(4, **kwargs)

    assert not np.array_equal(draw(), draw())  # fresh rows on every call
    np.random.seed(11)  # None draws from numpy's global state, as KernelDensity.sample does
    first = draw()
    np.random.seed(11)
    np.testing.assert_array_equal(draw(), first)
    np.testing.assert_array_equal(draw(random_state=3), draw(random_state=3))
    assert not np.array_equal(draw(random_state=3), draw(random_state=4))
    np.testing.assert_array_equal(
        draw(random_state=np.random.RandomState(5)), draw(random_state=np.random.RandomState(5))
    )
    np.testing.assert_array_equal(
        draw(random_state=np.random.default_rng(5)), draw(random_state=np.random.default_rng(5))
    )
    state = np.random.default_rng(6)  # a state passed in is drawn from, so it moves on
    assert not np.array_equal(draw(random_state=state), draw(random_state=state))
    np.testing.assert_array_equal(draw(random_state=np.int64(2)), draw(random_state=2))


def test_predictor_corrector_samples_take_the_same_random_state(fitted):
    def draw(**kwargs):  # 500 predictor-corrector steps: a few draws only
        return fitted.sample(3, method="pc", **kwargs)

    assert not np.array_equal(draw(), draw())
    np.testing.assert_array_equal(draw(random_state=3), draw(random_state=3))


# -- 5. contamination="auto" ---------------------------------------------------------------------
def test_contamination_auto_is_tukeys_lower_fence_of_the_held_out_log_densities():
    det = _fit(X, cls=ScoreAnomalyDetector, contamination="auto")
    # the held-out split of fit: the first round(validation_fraction * n) rows of a seeded permutation
    perm = torch.randperm(len(X), generator=Streams(det.seed_).generator("split")).numpy()
    held_out = X[perm[: round(det.validation_fraction * len(X))]]
    q1, q3 = np.percentile(det.score_samples(held_out), [25, 75])
    assert det.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1), abs=1e-4)
    far = X.mean(0) + 40 * X.std(0)
    assert det.predict(far[None]).tolist() == [-1]
    assert det.decision_function(far[None])[0] < 0
    assert (det.predict(X) == 1).mean() > 0.8  # most normal rows are inliers


def test_a_float_contamination_still_sets_the_training_quantile():
    det = _fit(X, cls=ScoreAnomalyDetector, contamination=0.2)
    assert (det.predict(X) == -1).mean() == pytest.approx(0.2, abs=1 / len(X))


# -- 6. save -------------------------------------------------------------------------------------
def test_save_creates_missing_folders(fitted, tmp_path):
    target = tmp_path / "not" / "yet" / "there" / "model.safetensors"
    fitted.save(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.safetensors", "model.safetensors.json"]
    back = ScoreDensityEstimator.load(target)
    np.testing.assert_allclose(back.score_samples(X[:10]), fitted.score_samples(X[:10]), atol=1e-6)


def test_save_writes_a_torch_device_and_numpy_scalars_as_json(tmp_path):
    est = _fit(X, device=torch.device("cpu"), random_state=np.int64(1), steps=np.int64(20))
    est.save(tmp_path / "model.safetensors")
    back = ScoreDensityEstimator.load(tmp_path / "model.safetensors")
    assert (
        back.get_params()["device"] == "cpu"
        and back.get_params()["random_state"] == 1
        and back.n_steps_ == 20
    )


def test_a_failed_save_leaves_the_earlier_pair_whole_and_no_temporary_file(fitted, tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    fitted.save(target)
    before = target.read_bytes(), (tmp_path / "model.safetensors.json").read_text()
    other = _fit(X, random_state=1)

    real_write_bytes = Path.write_bytes

    def torn_write(self, data):  # a crash half way through writing the weights
        real_write_bytes(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", torn_write)
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    monkeypatch.undo()

    def torn_text(self, data):  # the weights are written, the side file fails
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", torn_text)
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    monkeypatch.undo()

    assert (target.read_bytes(), (tmp_path / "model.safetensors.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model.safetensors.json"]


# -- 7. constant columns -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "column",
    [
        pytest.param(np.full(len(X), 7.0), id="exactly constant"),
        pytest.param(np.zeros(len(X)), id="all zero"),
        pytest.param(
            1e6 + 1e-7 * np.random.default_rng(1).normal(size=len(X)), id="spread 1e-13 of the mean"
        ),
    ],
)
def test_a_constant_column_is_refused_with_its_index(column):
    with pytest.raises(
        ValueError, match=r"1 constant column\(s\), index 1, .*drop the column\(s\) before fit"
    ):
        _fit(_with_column(column))
    with pytest.raises(ValueError, match=r"index 1 \('b'\)"):
        _fit(_frame(_with_column(column)))


def test_a_small_but_real_spread_is_not_constant():
    est = _fit(_with_column(1e-6 * np.random.default_rng(2).normal(size=len(X))))
    assert np.isfinite(est.score_samples(X[:5] * [1, 0, 1])).all()


def test_every_constant_column_is_named():
    data = np.column_stack([X, np.ones(len(X)), X[:, 0], np.zeros(len(X))])
    with pytest.raises(ValueError, match=r"2 constant column\(s\), index 3, 5,"):
        _fit(data)


# -- 8. verbosity and scikit-learn parameters ----------------------------------------------------
def test_verbose_shows_a_progress_bar_and_a_summary(capsys):
    _fit(X, steps=250, hidden=8, verbose=1)  # one held-out check, at step 250
    out, err = capsys.readouterr()
    assert re.fullmatch(
        r"ScoreDensityEstimator: base (gaussian|gmm|kde) \((mixed with the network's correction, base "
        r"weight [0-9.]+|alone: no correction helped)\), trained \d+ steps, best held-out loss -?\d+\.\d{4}, t_eval_=0\.01\n",
        out,
    )
    assert "fit" in err and "held_out_loss=" in err  # tqdm writes to stderr

    _fit(X)
    assert capsys.readouterr() == ("", "")  # verbose=0: silent

    _fit(X, cls=ScoreAnomalyDetector, verbose=True)
    out, err = capsys.readouterr()
    assert out.startswith("ScoreAnomalyDetector: base ") and "trained 60 steps" in out and "fit" in err


NON_DEFAULT = {
    "sde": "ve",
    "steps": 60,
    "batch_size": 32,
    "hidden": 16,
    "depth": 2,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "validation_fraction": 0.2,
    "t_eval": 1e-2,
    "weighting": "std2",
    "param": "eps",
    "base": "gaussian",
    "random_state": 3,
    "device": "cpu",
    "verbose": 2,
}


@pytest.mark.parametrize(
    "cls, params",
    [
        (ScoreDensityEstimator, NON_DEFAULT),
        (ScoreAnomalyDetector, {**NON_DEFAULT, "contamination": "auto"}),
    ],
)
def test_every_parameter_is_in_init_validated_and_cloned(cls, params):
    init = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(cls().get_params()) == init == set(params) == set(cls._parameter_constraints)
    twin = clone(cls(**params))
    assert twin.get_params() == params
    twin.set_params(verbose=0, steps=10).fit(X)
    assert twin.n_steps_ == 10 and np.isfinite(twin.score_samples(X[:3])).all()


def test_constructor_parameters_are_checked_at_fit_not_in_init():
    est = ScoreDensityEstimator(sde="nope", steps=-1, validation_fraction=2.0, device="tpu9")
    det = ScoreAnomalyDetector(contamination=0.9)
    assert est.get_params()["sde"] == "nope" and det.get_params()["contamination"] == 0.9
    with pytest.raises(ValueError, match="'contamination' parameter"):
        det.fit(X)
