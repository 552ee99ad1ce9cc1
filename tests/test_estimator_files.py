"""The estimators' saved files and the inputs they refuse: a file cannot shadow a method or pair new
weights with old JSON, every load failure is one ValueError naming the path, values beyond float32
and text columns are refused with their column, an ODE that cannot be solved says so, a search over
an unused parameter warns, and scikit-learn's own checks pass."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _inputs import FAST, X, _fit
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

from scorefield.estimators import ScoreAnomalyDetector, ScoreDensityEstimator, ScoreImputer
from scorefield.estimators.density import IgnoredParameterWarning
from scorefield.estimators.io import FORMAT
from scorefield.likelihood import log_likelihood
from scorefield.sde import VPSDE


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fitted estimator saved to a folder: ``(estimator, path)``."""
    folder = tmp_path_factory.mktemp("saved")
    est = _fit(X)
    est.save(folder / "model.safetensors")
    return est, folder / "model.safetensors"


def _edit_json(path, edit) -> None:
    meta_path = path.with_name(path.name + ".json")
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))


def _copy(saved, tmp_path):
    est, path = saved
    target = tmp_path / "model.safetensors"
    target.write_bytes(path.read_bytes())
    target.with_name(target.name + ".json").write_text(path.with_name(path.name + ".json").read_text())
    return est, target


def test_the_json_carries_format_library_and_the_weights_hash(saved):
    import hashlib

    _, path = saved
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["format"] == FORMAT and isinstance(meta["library"], str)
    assert meta["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["weights_bytes"] == path.stat().st_size


def test_a_file_cannot_set_a_method_or_any_unknown_attribute(saved, tmp_path):
    est, path = _copy(saved, tmp_path)
    _edit_json(path, lambda meta: meta["state"].update(score_samples="pwned"))
    with pytest.raises(ValueError, match=r"cannot load the estimator saved at path '.*model\.safetensors'"):
        ScoreDensityEstimator.load(path)
    assert callable(ScoreDensityEstimator.score_samples)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda meta: meta["state"].update(t_eval_="soon"), id="fitted value of the wrong type"),
        pytest.param(lambda meta: meta["state"].pop("base_weight_"), id="fitted value missing"),
        pytest.param(lambda meta: meta["params"].update(hidden=-3), id="a bad parameter"),
        pytest.param(lambda meta: meta["params"].update(colour="red"), id="an unknown parameter"),
        pytest.param(lambda meta: meta.update(format=FORMAT + 1), id="another format"),
        pytest.param(lambda meta: meta.update(state=[]), id="state not an object"),
    ],
)
def test_every_bad_json_is_one_value_error_naming_the_path(saved, tmp_path, edit):
    _, path = _copy(saved, tmp_path)
    _edit_json(path, edit)
    with pytest.raises(ValueError, match=r"cannot load the estimator saved at path '.*model\.safetensors'"):
        ScoreDensityEstimator.load(path)


def test_unreadable_json_and_torn_weights_are_value_errors_naming_the_path(saved, tmp_path):
    _, path = _copy(saved, tmp_path)
    path.with_name(path.name + ".json").write_text("{not json")
    with pytest.raises(ValueError, match=r"path '.*model\.safetensors': its JSON side file cannot be read"):
        ScoreDensityEstimator.load(path)
    _, path = _copy(saved, tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"path '.*model\.safetensors': its weights are not the ones"):
        ScoreDensityEstimator.load(path)


def test_new_weights_beside_old_json_are_refused(saved, tmp_path):
    # what a crash between the two renames of a save would leave: another fit's weights, the old JSON
    _, path = _copy(saved, tmp_path)
    other = tmp_path / "other.safetensors"
    _fit(X, random_state=5, steps=30).save(other)
    path.write_bytes(other.read_bytes())
    with pytest.raises(ValueError, match=r"its weights are not the ones its JSON side file was written with"):
        ScoreDensityEstimator.load(path)


def test_a_saved_estimator_loads_and_scores_the_same(saved):
    est, path = saved
    back = ScoreDensityEstimator.load(path)
    np.testing.assert_allclose(back.score_samples(X[:5]), est.score_samples(X[:5]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("where", ["fit", "score_samples", "imputer"])
def test_values_finite_in_float64_but_not_in_float32_are_refused(saved, where):
    big = X.copy()
    big[3, 1] = 1e39
    message = r"beyond float32's range .* column\(s\) 1"
    with pytest.raises(ValueError, match=message):
        if where == "fit":
            _fit(big)
        elif where == "score_samples":
            saved[0].score_samples(big)
        else:
            ScoreImputer(steps=5).fit(big)


@pytest.mark.parametrize("cls", [ScoreDensityEstimator, ScoreImputer])
def test_a_text_column_is_named_with_the_advice_to_drop_it(cls):
    frame = pd.DataFrame({"a": X[:, 0], "city": ["Oslo"] * len(X), "c": X[:, 2]})
    with pytest.raises(
        ValueError, match=r"text in column\(s\) 1 \('city'\) \(e\.g\. 'Oslo'\).*drop the column"
    ):
        cls(steps=5).fit(frame)


def test_an_unsolvable_probability_flow_ode_is_a_clear_error():
    def exploding(x, t):  # a score that is infinite everywhere: dopri5's step falls to nothing
        return x * float("inf")

    with pytest.raises(
        ValueError, match="probability-flow ODE could not be solved: dopri5's step size underflowed"
    ):
        log_likelihood(exploding, VPSDE(), torch.ones(2, 2))


def test_a_search_over_a_parameter_the_fit_ignores_warns():
    rng = np.random.default_rng(0)
    gaussian = rng.normal(size=(150, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])  # the base is exact
    est = ScoreDensityEstimator(steps=20, base="gaussian", t_eval=1e-2, random_state=0)
    with pytest.warns(
        IgnoredParameterWarning, match=r"correction was not kept .* hidden=(8|16) did not change"
    ):
        GridSearchCV(est, {"hidden": [8, 16]}, cv=2).fit(gaussian)


@pytest.mark.slow
@pytest.mark.parametrize(
    "est",
    [
        ScoreDensityEstimator(**{**FAST, "steps": 5, "hidden": 8}),
        ScoreAnomalyDetector(**{**FAST, "steps": 5, "hidden": 8}),
        ScoreImputer(steps=5, hidden=8, n_draws=2, random_state=0),
    ],
    ids=lambda est: type(est).__name__,
)
def test_scikit_learns_estimator_checks_pass(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredParameterWarning)
        check_estimator(est)
