"""Imputation in a scikit-learn Pipeline

`ScoreImputer` fills missing cells (NaN) by sampling each row's missing values given its observed
ones from a score-based density of the table. Here a fifth of the cells of scikit-learn's diabetes
table are removed at random, and each imputer is the first step of a `Pipeline` whose ridge
regression predicts disease progression. Fitted on three quarters of the rows, each pipeline is
scored on the rest twice: by the error of the cells it filled there (in standard deviations of each
column) and by the R² of its predictions. Column means and scikit-learn's iterative imputer are the
peers.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.experimental import enable_iterative_imputer  # noqa: F401 (makes IterativeImputer importable)
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

import scorefield as sf

X, y = load_diabetes(return_X_y=True)
rng = np.random.default_rng(0)
missing = rng.random(X.shape) < 0.2
X_missing = np.where(missing, np.nan, X)
train, test = train_test_split(np.arange(len(X)), random_state=0)

imputers = {
    "column means": SimpleImputer(),
    "iterative (BayesianRidge)": IterativeImputer(max_iter=30, random_state=0),
    "scorefield": sf.ScoreImputer(n_draws=4, steps=1000, random_state=0),
}
errors, r2 = {}, {}
for name, imputer in imputers.items():
    pipeline = make_pipeline(imputer, RidgeCV()).fit(X_missing[train], y[train])
    filled = pipeline[0].transform(X_missing[test])
    errors[name] = np.sqrt((((filled - X[test]) / X.std(0))[missing[test]] ** 2).mean())
    r2[name] = pipeline.score(X_missing[test], y[test])
    print(f"{name:26s} RMSE of the filled cells {errors[name]:.3f} sd, R² of the pipeline {r2[name]:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
names = list(imputers)
axes[0].barh(names, [errors[n] for n in names])
axes[0].set(xlabel="RMSE of the filled cells (sd)")
axes[1].barh(names, [r2[n] for n in names])
axes[1].set(xlabel="R² of the pipeline on held-out rows")
axes[1].set_yticks([])
fig.tight_layout()
plt.show()
