"""A small table for the estimators' input tests: three features at different scales and offsets."""

import numpy as np

from scorefield.estimators import ScoreDensityEstimator

FAST = {"steps": 60, "hidden": 16, "t_eval": 1e-2, "random_state": 0}
COLUMNS = ["a", "b", "c"]


def _table(n: int = 120, seed: int = 0) -> np.ndarray:
    """Three features at different scales and offsets, far from standardised."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]


X = _table()


def _fit(data, cls=ScoreDensityEstimator, **params):
    return cls(**{**FAST, **params}).fit(data)


def _with_column(values) -> np.ndarray:
    """``X`` with its second column replaced by ``values``."""
    out = X.copy()
    out[:, 1] = values
    return out
