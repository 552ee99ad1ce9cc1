"""The command line on a CSV file

The `scorefield` command trains on a CSV file of your own, then samples, scores and fills rows
from the run directory it wrote. This script writes scikit-learn's wine table (13 columns, with
their names as the header) to `wine.csv` and runs the commands one after the other, as you would in
a shell (`scorefield --help` lists them; [the command line guide](../guides/command-line.md)
explains every flag). Training is kept short here (`--set train.steps=1500`), so the
samples are rougher than a full run's.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_wine

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

wine = load_wine(as_frame=True).frame.drop(columns="target")
wine.to_csv("wine.csv", index=False)
suspicious = wine.iloc[:5].copy()
suspicious.iloc[[0, 1], 9] *= 4  # two wines with an implausible colour intensity
suspicious.to_csv("new_wines.csv", index=False)
holes = wine.iloc[:3].copy()
mask = pd.DataFrame(1, index=holes.index, columns=holes.columns)  # 1 = observed (kept), 0 = fill
mask.iloc[0, [0, 6]] = 0  # the first wine's alcohol and flavanoids are to be filled
holes.to_csv("holes.csv", index=False)
mask.to_csv("mask.csv", index=False)


def scorefield(*args: str) -> None:
    """Run one `scorefield` command as a shell would, showing the line and what it printed."""
    print("$ scorefield", " ".join(args))
    done = subprocess.run([sys.executable, "-m", "scorefield", *args], capture_output=True, text=True)
    print((done.stdout + done.stderr).strip())
    done.check_returncode()


scorefield(
    "train", "--config", str(CONFIGS / "tabular_vp.toml"), "--out", "runs/wine",
    "--set", "data.path=wine.csv", "--set", "train.steps=1500", "--set", "model.hidden=128", "--quiet",
)  # fmt: skip
scorefield("sample", "--run", "runs/wine", "--n", "500", "--out", "samples.csv", "--quiet")
scorefield("anomaly", "--run", "runs/wine", "--data", "new_wines.csv", "--out", "scores.csv", "--quiet")
scorefield(
    "inpaint",
    "--run",
    "runs/wine",
    "--data",
    "holes.csv",
    "--mask",
    "mask.csv",
    "--out",
    "filled.csv",
    "--quiet",
)

samples = pd.read_csv("samples.csv")
print("\nsamples.csv keeps the header:", ", ".join(samples.columns[:4]), "...")
print(samples.describe().loc[["mean", "std"]].iloc[:, :4].round(2).to_string())
print("\nreal wines:")
print(wine.describe().loc[["mean", "std"]].iloc[:, :4].round(2).to_string())
print("\nscores.csv, -log p per row (the first two wines were altered):")
print(pd.read_csv("scores.csv").round(1).to_string())
print("\nfilled.csv: the first wine's alcohol and flavanoids filled in (the others as they were)")
filled = pd.read_csv("filled.csv").iloc[:, [0, 6]]
print(pd.concat({"filled": filled, "true": wine.iloc[:3, [0, 6]]}, axis=1).round(2).to_string())
