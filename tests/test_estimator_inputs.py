"""The estimators' inputs: array layouts and DataFrames, feature names, randomness of ``sample``,
``contamination="auto"``, saving, constant columns, verbosity, and a catalogue of bad inputs.

Every fit here is tiny (60 steps of a 16-wide network, a fixed ``eval_eps``): these tests check the
handling of inputs, not the quality of the density.
"""

import inspect
import json
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import scorefield.estimator as estimator_module
from scorefield.estimator import ScoreAnomalyDetector, ScoreDensityEstimator

FAST = {"steps": 60, "hidden": 16, "eval_eps": 1e-2}
COLUMNS = ["a", "b", "c"]


def _table(n: int = 120, seed: int = 0) -> np.ndarray:
    """Three features at different scales and offsets, far from standardised."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]


X = _table()


def _fit(data, cls=ScoreDensityEstimator, **params):
    return cls(**{**FAST, **params}).fit(data)


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
    # the older seed keyword keeps reproducing its rows
    np.testing.assert_array_equal(draw(seed=2), draw(seed=2))
    np.testing.assert_array_equal(draw(seed=np.int64(2)), draw(seed=2))
    with pytest.raises(ValueError, match=r"both seed=2 and random_state=2; pass only one"):
        draw(seed=2, random_state=2)


def test_predictor_corrector_samples_take_the_same_random_state(fitted):
    def draw(**kwargs):  # 500 predictor-corrector steps: a few draws only
        return fitted.sample(3, method="pc", **kwargs)

    assert not np.array_equal(draw(), draw())
    np.testing.assert_array_equal(draw(random_state=3), draw(random_state=3))


# -- 5. contamination="auto" ---------------------------------------------------------------------
def test_contamination_auto_is_tukeys_lower_fence_of_the_held_out_log_densities():
    det = _fit(X, cls=ScoreAnomalyDetector, contamination="auto")
    # the held-out split of fit: the first round(validation_fraction * n) rows of a seeded permutation
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(det.seed)).numpy()
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
    est = _fit(X, device=torch.device("cpu"), seed=np.int64(1), steps=np.int64(20))
    est.save(tmp_path / "model.safetensors")
    back = ScoreDensityEstimator.load(tmp_path / "model.safetensors")
    assert back.get_params()["device"] == "cpu" and back.get_params()["seed"] == 1 and back.n_steps_ == 20


def test_a_failed_save_leaves_the_earlier_pair_whole_and_no_temporary_file(fitted, tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    fitted.save(target)
    before = target.read_bytes(), (tmp_path / "model.safetensors.json").read_text()
    other = _fit(X, seed=1)

    def torn_write(tensors, filename):  # a crash half way through writing the weights
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(estimator_module, "save_file", torn_write)
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    monkeypatch.undo()

    def failing_dumps(*args, **kwargs):  # the weights are written, the side file fails
        raise OSError("disk full")

    monkeypatch.setattr(estimator_module, "json", SimpleNamespace(dumps=failing_dumps, loads=json.loads))
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    monkeypatch.undo()

    assert (target.read_bytes(), (tmp_path / "model.safetensors.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model.safetensors.json"]


# -- 7. constant columns -------------------------------------------------------------------------
def _with_column(values) -> np.ndarray:
    out = X.copy()
    out[:, 1] = values
    return out


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
        r"ScoreDensityEstimator: trained 250 steps, best held-out loss -?\d+\.\d{4}, eval_eps_=0\.01\n", out
    )
    assert "fit" in err and "held_out_loss=" in err  # tqdm writes to stderr

    _fit(X)
    assert capsys.readouterr() == ("", "")  # verbose=0: silent

    _fit(X, cls=ScoreAnomalyDetector, progress=True)  # the older switch acts as verbose=1
    out, err = capsys.readouterr()
    assert out.startswith("ScoreAnomalyDetector: trained 60 steps") and "fit" in err


NON_DEFAULT = {
    "sde": "ve",
    "steps": 60,
    "batch_size": 32,
    "hidden": 16,
    "depth": 2,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "validation_fraction": 0.2,
    "eval_eps": 1e-2,
    "weighting": "std2",
    "param": "eps",
    "seed": 3,
    "device": "cpu",
    "verbose": 2,
    "progress": True,
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
    twin.set_params(verbose=0, progress=False, steps=10).fit(X)
    assert twin.n_steps_ == 10 and np.isfinite(twin.score_samples(X[:3])).all()


# -- 4. a catalogue of bad inputs ----------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    fitted.save(folder / "density.safetensors")
    _fit(X, cls=ScoreAnomalyDetector).save(folder / "detector.safetensors")
    return folder


def _bad_fit(data=X, cls=ScoreDensityEstimator, **params):
    return lambda fitted, saved: cls(**{**FAST, **params}).fit(data)


def _nan(value):
    out = X.copy()
    out[3, 1] = value
    return out


PARAM = "The '{}' parameter of ScoreDensityEstimator must be"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
BAD_INPUTS = [
    # X at fit
    pytest.param(_bad_fit(_nan(np.nan)), ValueError, "Input X contains NaN", id="NaN in X"),
    pytest.param(_bad_fit(_nan(np.inf)), ValueError, "Input X contains infinity", id="inf in X"),
    pytest.param(_bad_fit(X[:, 0]), ValueError, r"X must be 2-D .*got shape \(120,\)", id="1-D X"),
    pytest.param(_bad_fit(X[:, :, None]), ValueError, r"X must be 2-D .*got shape \(120, 3, 1\)", id="3-D X"),
    pytest.param(_bad_fit(X[:5]), ValueError, "X has 5 rows, but fit needs at least 10", id="too few rows"),
    pytest.param(_bad_fit(_with_column(2.0)), ValueError, "X has 1 constant column", id="constant column"),
    # constructor parameters, checked at fit
    pytest.param(_bad_fit(validation_fraction=0.7), ValueError, PARAM.format("validation_fraction"), id="validation_fraction=0.7"),
    pytest.param(_bad_fit(validation_fraction=0), ValueError, PARAM.format("validation_fraction"), id="validation_fraction=0"),
    pytest.param(_bad_fit(sde="nope"), ValueError, PARAM.format("sde"), id="sde='nope'"),
    pytest.param(_bad_fit(weighting="l2"), ValueError, PARAM.format("weighting"), id="weighting='l2'"),
    pytest.param(_bad_fit(param="x0"), ValueError, PARAM.format("param"), id="param='x0'"),
    pytest.param(_bad_fit(steps=0), ValueError, PARAM.format("steps"), id="steps=0"),
    pytest.param(_bad_fit(steps=2.5), ValueError, PARAM.format("steps"), id="steps=2.5"),
    pytest.param(_bad_fit(batch_size=0), ValueError, PARAM.format("batch_size"), id="batch_size=0"),
    pytest.param(_bad_fit(hidden=-8), ValueError, PARAM.format("hidden"), id="hidden=-8"),
    pytest.param(_bad_fit(depth=0), ValueError, PARAM.format("depth"), id="depth=0"),
    pytest.param(_bad_fit(lr=0.0), ValueError, PARAM.format("lr"), id="lr=0"),
    pytest.param(_bad_fit(weight_decay=-1.0), ValueError, PARAM.format("weight_decay"), id="weight_decay=-1"),
    pytest.param(_bad_fit(eval_eps=1.5), ValueError, PARAM.format("eval_eps"), id="eval_eps=1.5"),
    pytest.param(_bad_fit(seed=-1), ValueError, PARAM.format("seed"), id="seed=-1"),
    pytest.param(_bad_fit(verbose=-1), ValueError, PARAM.format("verbose"), id="verbose=-1"),
    pytest.param(_bad_fit(progress="yes"), ValueError, PARAM.format("progress"), id="progress='yes'"),
    pytest.param(_bad_fit(device="tpu9"), ValueError, r"device='tpu9' is not available", id="device='tpu9'"),
    pytest.param(_bad_fit(device=3.5), ValueError, PARAM.format("device"), id="device=3.5"),
    pytest.param(_bad_fit(device="cuda"), ValueError, r"device='cuda' is not available on this machine", id="device='cuda' without CUDA", marks=NO_CUDA),
    pytest.param(_bad_fit(cls=ScoreAnomalyDetector, contamination=0.7), ValueError, "'contamination' parameter of ScoreAnomalyDetector", id="contamination=0.7"),
    pytest.param(_bad_fit(cls=ScoreAnomalyDetector, contamination=0.0), ValueError, "'contamination' parameter", id="contamination=0"),
    pytest.param(_bad_fit(cls=ScoreAnomalyDetector, contamination="x"), ValueError, r"'contamination' parameter .* among \{'auto'\}", id="contamination='x'"),
    # a fitted estimator's inputs
    pytest.param(lambda f, s: f.score_samples(np.zeros((3, 5))), ValueError, "X has 5 features, but ScoreDensityEstimator is expecting 3", id="score_samples: 5 features"),
    pytest.param(lambda f, s: f.grad_log_prob(np.zeros((3, 2))), ValueError, "X has 2 features", id="grad_log_prob: 2 features"),
    pytest.param(lambda f, s: f.score_samples(_nan(np.nan)), ValueError, "Input X contains NaN", id="score_samples: NaN"),
    pytest.param(lambda f, s: f.score_samples(X[0]), ValueError, r"X must be 2-D .*X.reshape\(1, -1\)", id="score_samples: 1-D row"),
    pytest.param(lambda f, s: f.sample(0), ValueError, r"'n' parameter of ScoreDensityEstimator.sample must be an int in the range \[1, inf\)", id="sample(0)"),
    pytest.param(lambda f, s: f.sample(-1), ValueError, "'n' parameter", id="sample(-1)"),
    pytest.param(lambda f, s: f.sample(2.5), ValueError, "'n' parameter", id="sample(2.5)"),
    pytest.param(lambda f, s: f.sample("3"), ValueError, "'n' parameter", id="sample('3')"),
    pytest.param(lambda f, s: f.sample(3, method="euler"), ValueError, "'method' parameter", id="sample: method='euler'"),
    pytest.param(lambda f, s: f.sample(3, random_state="x"), ValueError, "'random_state' parameter", id="sample: random_state='x'"),
    pytest.param(lambda f, s: f.sample(3, seed=1.5), ValueError, "'seed' parameter", id="sample: seed=1.5"),
    pytest.param(lambda f, s: f.sample(3, seed=1, random_state=1), ValueError, "both seed=1 and random_state=1", id="sample: seed and random_state"),
    # not fitted
    pytest.param(lambda f, s: ScoreDensityEstimator().score_samples(X), NotFittedError, "not fitted yet", id="unfitted score_samples"),
    pytest.param(lambda f, s: ScoreDensityEstimator().grad_log_prob(X), NotFittedError, "not fitted yet", id="unfitted grad_log_prob"),
    pytest.param(lambda f, s: ScoreDensityEstimator().sample(3), NotFittedError, "not fitted yet", id="unfitted sample"),
    pytest.param(lambda f, s: ScoreAnomalyDetector().predict(X), NotFittedError, "not fitted yet", id="unfitted predict"),
    pytest.param(lambda f, s: ScoreDensityEstimator().save("never.safetensors"), NotFittedError, "not fitted yet", id="unfitted save"),
    # load
    pytest.param(lambda f, s: ScoreDensityEstimator.load(s / "missing.safetensors"), FileNotFoundError, r"no saved estimator at path '.*missing\.safetensors'", id="load: missing path"),
    pytest.param(lambda f, s: ScoreDensityEstimator.load(s / "detector.safetensors"), ValueError, r"path '.*detector\.safetensors' holds a ScoreAnomalyDetector, not a ScoreDensityEstimator", id="load: a detector's file"),
    pytest.param(lambda f, s: ScoreAnomalyDetector.load(s / "density.safetensors"), ValueError, "holds a ScoreDensityEstimator, not a ScoreAnomalyDetector", id="load: a density's file"),
    pytest.param(lambda f, s: ScoreDensityEstimator.load(s / "density.safetensors", device="tpu9"), ValueError, "device='tpu9'", id="load: device='tpu9'"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, match", BAD_INPUTS)
def test_bad_input_raises_naming_it(call, error, match, fitted, saved):
    with pytest.raises(error, match=match):
        call(fitted, saved)


def test_constructor_parameters_are_checked_at_fit_not_in_init():
    est = ScoreDensityEstimator(sde="nope", steps=-1, validation_fraction=2.0, device="tpu9")
    det = ScoreAnomalyDetector(contamination=0.9)
    assert est.get_params()["sde"] == "nope" and det.get_params()["contamination"] == 0.9
    with pytest.raises(ValueError, match="'contamination' parameter"):
        det.fit(X)
