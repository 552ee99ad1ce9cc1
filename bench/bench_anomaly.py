"""Anomaly detection: AUROC of ``ScoreAnomalyDetector`` (score ``-log p(x)``) against standard detectors.

- digits, one class at a time as the normal class: fit on that class's training rows (about 135 rows of
  the 48-55 pixels that vary within the class; the constant ones are dropped for every detector), test
  on the held-out rows of every class, the other nine classes being the anomalies; the mean AUROC over
  the ten classes, ± its standard error over classes.
- breast_cancer: fit on 200 benign rows, test on the other 157 benign rows and all 212 malignant ones.

Peers: scikit-learn's IsolationForest, LocalOutlierFactor (``novelty=True``), OneClassSVM, KernelDensity
(bandwidth by 3-fold cross-validation) and GaussianMixture (full covariances, components by BIC), each
with its defaults; and PyOD's ECOD, COPOD and KNN when ``pyod`` is installed (a line says so when not).
Every peer but IsolationForest sees the rows standardised by the training rows' mean and std, as the
score model does internally. Anomaly scores are oriented so that higher is more anomalous.
"""

from __future__ import annotations

import math
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity, LocalOutlierFactor
from sklearn.svm import OneClassSVM

from bench.bench_density import BANDWIDTHS, KDE_RTOL, Standardised, fit_gmm
from bench.common import markdown_table, one_thread, write_results
from scorefield.estimators import ScoreAnomalyDetector
from scorefield.metrics import auroc

OURS = "ScoreAnomalyDetector"


def _standardised(make):
    """A detector fitted on standardised rows: ``fit(train) -> anomaly score function``."""

    def fit(train: np.ndarray):
        scale = Standardised(train)
        return make(scale(train), lambda x: scale(x))

    return fit


def _sklearn(model_factory, standardise: bool = True):
    def make(z, transform):
        model = model_factory().fit(z)
        return lambda x: -model.score_samples(transform(x))

    return _standardised(make) if standardise else (lambda train: make(train, lambda x: x))


def _kde(z, transform):
    kde = GridSearchCV(KernelDensity(rtol=KDE_RTOL), {"bandwidth": BANDWIDTHS}, cv=3).fit(z).best_estimator_
    return lambda x: -kde.score_samples(transform(x))


def _gmm(train):
    log_density, _ = fit_gmm(train)
    return lambda x: -log_density(x)


def _pyod(model_factory):
    def make(z, transform):
        model = model_factory().fit(z)
        return lambda x: model.decision_function(transform(x))

    return _standardised(make)


def detectors(quick: bool) -> tuple[dict, list[str]]:
    """The detectors (name -> fit(train) -> score function) and notes on peers that are missing."""

    def ours(train):
        det = ScoreAnomalyDetector(random_state=0, steps=100 if quick else None).fit(train)
        return lambda x: -det.score_samples(x)

    found = {
        OURS: ours,
        "IsolationForest": _sklearn(lambda: IsolationForest(random_state=0), standardise=False),
        "LOF (novelty)": _sklearn(lambda: LocalOutlierFactor(novelty=True)),
        "OneClassSVM": _sklearn(OneClassSVM),
        "KDE (CV)": _standardised(_kde),
        "GMM (BIC)": _gmm,
    }
    missing = []
    try:
        from pyod.models.copod import COPOD
        from pyod.models.ecod import ECOD
        from pyod.models.knn import KNN

        found.update({"PyOD ECOD": _pyod(ECOD), "PyOD COPOD": _pyod(COPOD), "PyOD KNN": _pyod(KNN)})
    except ImportError as error:
        missing.append(f"PyOD detectors skipped: `{error}` (install the `bench` extra).")
    return found, missing


def digits_tasks(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, train, test_normal, test_anomalous)`` for each digit class as the normal one."""
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    n_train = int(0.75 * len(x))
    train, test = perm[:n_train], perm[n_train:]
    classes = (0,) if quick else range(10)
    tasks = []
    for c in classes:
        rows = x[train][y[train] == c]
        # pixels that never vary within the class (9-16 of 64, mostly the border) carry no density
        # (ScoreAnomalyDetector refuses a constant column): every detector sees the same other pixels
        kept = rows.std(axis=0) > 0
        split = (rows, x[test][y[test] == c], x[test][y[test] != c])
        tasks.append((f"digit {c}", *(part[:, kept].astype(np.float64) for part in split)))
    return tasks


def breast_cancer_task() -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)  # target 1 = benign
    benign = x[y == 1][np.random.default_rng(0).permutation(int((y == 1).sum()))]
    return "breast_cancer", benign[:200], benign[200:], x[y == 0]


def run_task(task, found: dict) -> tuple[dict, dict]:
    name, train, normal, anomalous = task
    aurocs, seconds = {}, {}
    for det, fit in found.items():
        start = time.perf_counter()
        score = fit(train)
        aurocs[det] = auroc(score(normal), score(anomalous))
        seconds[det] = time.perf_counter() - start
    best = max(aurocs, key=aurocs.get)
    print(f"  {name}: {OURS} {aurocs.get(OURS, math.nan):.4f}, best {best} {aurocs[best]:.4f}", flush=True)
    return aurocs, seconds


@one_thread
def main(quick: bool = False) -> None:
    found, missing = detectors(quick)
    names = list(found)
    digit_tasks = digits_tasks(quick)
    digit_results = [run_task(task, found) for task in digit_tasks]
    bc_auroc, bc_time = run_task(breast_cancer_task(), found)

    per_class = np.array([[r[0][d] for d in names] for r in digit_results])  # (classes, detectors)
    mean = per_class.mean(0)
    se = (
        per_class.std(0, ddof=1) / np.sqrt(len(per_class))
        if len(per_class) > 1
        else np.full_like(mean, np.nan)
    )
    digit_seconds = np.array([[r[1][d] for d in names] for r in digit_results]).sum(0)
    overall = (mean + np.array([bc_auroc[d] for d in names])) / 2
    top = {"digits": names[int(mean.argmax())], "bc": max(bc_auroc, key=bc_auroc.get)}
    top_overall = names[int(overall.argmax())]

    def bold(text: str, flag: bool) -> str:
        return f"**{text}**" if flag else text

    summary = []
    for j, det in enumerate(names):
        wins = int((per_class[:, 0] > per_class[:, j]).sum())
        losses = int((per_class[:, 0] < per_class[:, j]).sum())
        bc = (
            "—"
            if det == OURS
            else (
                "win"
                if bc_auroc[OURS] > bc_auroc[det]
                else "loss"
                if bc_auroc[OURS] < bc_auroc[det]
                else "tie"
            )
        )
        summary.append(
            [
                det,
                bold(f"{mean[j]:.4f} ± {se[j]:.4f}", det == top["digits"]),
                bold(f"{bc_auroc[det]:.4f}", det == top["bc"]),
                bold(f"{overall[j]:.4f}", det == top_overall),
                "—" if det == OURS else f"{wins} / {losses}",
                bc,
                f"{digit_seconds[j]:.1f}",
                f"{bc_time[det]:.1f}",
            ]
        )
    class_rows = [
        [task[0]] + [bold(f"{r[0][d]:.4f}", r[0][d] == max(r[0].values())) for d in names]
        for task, r in zip(digit_tasks, digit_results, strict=True)
    ]
    notes = (
        "AUROC, higher is better (1 = every anomaly ranked above every normal row, 0.5 = chance); bold marks "
        "the best. digits: a fixed 75 / 25 split of the 1,797 images; each class in turn is the normal class, "
        "fitted on its ~135 training rows and tested on all 449 held-out rows. breast_cancer: fitted on 200 "
        "benign rows, tested on the other 157 benign and all 212 malignant rows. Every detector runs with its "
        "defaults; the score model picks its training length and evaluation time on a held-out part of the "
        "training rows. Seconds include fitting and scoring (digits: summed over the classes)."
        + (
            " **Quick mode**: one digit class, the score model capped at 100 steps: a smoke test, not a result."
            if quick
            else ""
        )
    )
    if missing:
        notes += "\n\n" + "\n".join(missing)
    write_results(
        "anomaly",
        "Anomaly detection: AUROC",
        [
            (
                "Mean AUROC",
                markdown_table(
                    [
                        "detector",
                        f"digits (mean ± se over {len(per_class)} classes)",
                        "breast_cancer",
                        "mean of the two",
                        f"{OURS} wins / losses (digit classes)",
                        f"{OURS} on breast_cancer",
                        "digits s",
                        "breast_cancer s",
                    ],
                    summary,
                ),
            ),
            ("Digits, AUROC per normal class", markdown_table(["normal class", *names], class_rows)),
        ],
        notes,
    )


if __name__ == "__main__":
    main()
