"""Anomaly detection

`ScoreAnomalyDetector` learns the density of benign tumours only (scikit-learn's breast cancer table,
30 measurements per tumour) and flags the rows it finds unlikely. Its `score_samples` is the
log-density in data units: malignant tumours, never seen in training, should score low. The AUROC
measures how well the score separates the two (1 is perfect, 0.5 is chance), beside scikit-learn's
isolation forest trained on the same rows.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import train_test_split

import scorefield as sf

X, y = load_breast_cancer(return_X_y=True)  # y == 1: benign
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
benign = X_train[y_train == 1]

detector = sf.ScoreAnomalyDetector(contamination="auto", steps=1000, random_state=0).fit(benign)
logp = detector.score_samples(X_test)  # low means anomalous
auroc = sf.metrics.auroc(-logp[y_test == 1], -logp[y_test == 0])  # (normal, anomalous)
flagged = detector.predict(X_test) == -1
print(f"scorefield AUROC {auroc:.3f}")
print(f"flagged: {flagged[y_test == 0].mean():.0%} of malignant, {flagged[y_test == 1].mean():.0%} of benign")

forest = IsolationForest(random_state=0).fit(benign)
forest_score = forest.score_samples(X_test)
print(
    f"isolation forest AUROC {sf.metrics.auroc(-forest_score[y_test == 1], -forest_score[y_test == 0]):.3f}"
)

fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.linspace(np.percentile(logp, 1), logp.max(), 40)
ax.hist(logp[y_test == 1], bins=bins, alpha=0.7, label="benign (held out)")
ax.hist(logp[y_test == 0], bins=bins, alpha=0.7, label="malignant")
ax.axvline(detector.offset_, color="k", ls="--", label="threshold (contamination='auto')")
ax.set(xlabel="log-density in data units", ylabel="tumours")
ax.legend()
plt.show()
