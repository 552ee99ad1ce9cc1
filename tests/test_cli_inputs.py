"""A catalogue of bad command lines. Each one ends with exit status 2 and at most three lines on stderr,
the first starting ``scorefield: error:``, no traceback, and leaves every file and folder of the good run,
of the input files and of the would-be outputs exactly as it was (nothing created, nothing changed)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_cli import TINY

from scorefield.checkpoint import checkpoint_dir
from scorefield.cli import main


def sets(*overrides: str) -> list[str]:
    return [arg for item in [*TINY, *overrides] for arg in ("--set", item)]


def write_inputs(folder: Path) -> None:
    folder.mkdir()
    data = np.random.default_rng(0).normal(size=(64, 2)) * [1.0, 10.0] + [3.5, 70.0]
    np.savetxt(folder / "data.csv", data, delimiter=",", header="eruptions,waiting", comments="")
    np.savetxt(folder / "renamed.csv", data[:, ::-1], delimiter=",", header="waiting,eruptions", comments="")
    nan = data[:5].copy()
    nan[2, 1] = np.nan
    np.savetxt(folder / "nan.csv", nan, delimiter=",", header="eruptions,waiting", comments="")
    np.save(folder / "nan.npy", nan)
    np.save(folder / "wide.npy", np.ones((5, 3)))
    np.savetxt(folder / "one.csv", data[:1], delimiter=",")
    (folder / "empty.csv").write_text("")
    (folder / "text.csv").write_text("eruptions,waiting\n3.6,79\n1.8,about 54\n")
    (folder / "ragged.csv").write_text("eruptions,waiting\n3.6,79\n1.8\n")
    (folder / "table.txt").write_text("3.6,79\n1.8,54\n")
    (folder / "garbage.npy").write_bytes(b"\x93NUMPY but not really")
    (folder / "bad.toml").write_text("[train\nsteps = \n")
    (folder / "file").write_text("a regular file, not a folder\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """A good run trained on a CSV with a header, the input files, broken copies of the run, and paths
    of outputs that do not exist yet, all under one folder."""
    base = tmp_path_factory.mktemp("inputs")
    inputs = base / "in"
    write_inputs(inputs)
    run = base / "run"
    assert main(["train", *sets(f"data.path={inputs / 'data.csv'}"), "--out", str(run), "--quiet"]) == 0
    corrupt = base / "corrupt"
    shutil.copytree(run, corrupt)
    for path in checkpoint_dir(corrupt).glob("*.safetensors"):
        path.write_bytes(path.read_bytes()[:-8])
    (base / "empty_run").mkdir()
    (base / "taken.npy").mkdir()  # a folder where a file would go
    return SimpleNamespace(base=base, i=inputs, run=run, corrupt=corrupt, out=base / "out")


def train(w, *overrides: str) -> list:
    return ["train", *sets(f"data.path={w.i / 'data.csv'}", *overrides)]


def sample(w, *args) -> list:
    return ["sample", "--run", w.run, "--n", 5, *args]


def score(command: str, w, data: str, *args) -> list:
    return [command, "--run", w.run, "--data", w.i / data, *args]


CASES = {
    # train: flags and configs
    "train-bad-flag": (lambda w: [*train(w), "--out", w.out, "--bogus"], "unrecognized arguments: --bogus"),
    "train-unknown-key": (
        lambda w: [*train(w, "train.stepz=3"), "--out", w.out],
        "unknown key 'train.stepz'",
    ),
    "train-wrong-type": (
        lambda w: [*train(w, "train.steps=abc"), "--out", w.out],
        "valid integer, got 'abc'",
    ),
    "train-sigma-order": (
        lambda w: [*train(w, "sde.kind=ve", "sde.sigma_min=5.0", "sde.sigma_max=1.0"), "--out", w.out],
        "sigma_min (5.0) must be smaller than sigma_max",
    ),
    "train-bad-override": (
        lambda w: [*train(w), "--set", "trainsteps3", "--out", w.out],
        "section.key=value",
    ),
    "train-missing-config": (
        lambda w: ["train", "--config", w.i / "nope.toml", "--out", w.out],
        "nope.toml does not exist",
    ),
    "train-invalid-toml": (
        lambda w: ["train", "--config", w.i / "bad.toml", "--out", w.out],
        "not valid TOML",
    ),
    "train-unet-on-a-table": (lambda w: [*train(w, "model.kind=unet"), "--out", w.out], "unet needs images"),
    "train-bad-device": (lambda w: [*train(w), "--device", "gpu", "--out", w.out], "device 'gpu' is unknown"),
    "train-absent-device": (lambda w: [*train(w), "--device", "cuda:99", "--out", w.out], "is not available"),
    # train: data
    "train-missing-data": (
        lambda w: [*train(w, f"data.path={w.i / 'missing.csv'}"), "--out", w.out],
        "missing.csv does not exist",
    ),
    "train-nan-data": (
        lambda w: [*train(w, f"data.path={w.i / 'nan.csv'}"), "--out", w.out],
        "nan.csv line 4: the row holds NaN or Inf",
    ),
    "train-empty-csv": (lambda w: [*train(w, f"data.path={w.i / 'empty.csv'}"), "--out", w.out], "no rows"),
    "train-text-cell": (
        lambda w: [*train(w, f"data.path={w.i / 'text.csv'}"), "--out", w.out],
        "text.csv line 3: 'about 54' in column 'waiting' is not a number",
    ),
    "train-one-row": (lambda w: [*train(w, f"data.path={w.i / 'one.csv'}"), "--out", w.out], "at least 2"),
    "train-unknown-format": (
        lambda w: [*train(w, f"data.path={w.i / 'table.txt'}"), "--out", w.out],
        "unknown table format '.txt'",
    ),
    # train: the output
    "train-out-in-proc": (lambda w: [*train(w), "--out", "/proc/run"], "cannot write /proc/run"),
    "train-out-below-a-file": (
        lambda w: [*train(w), "--out", w.i / "file" / "run"],
        "is a file, not a folder",
    ),
    "train-out-is-a-file": (lambda w: [*train(w), "--out", w.i / "file"], "it is a file"),
    # train: an existing run
    "train-over-a-run": (lambda w: [*train(w), "--out", w.run], "already holds a run; pass --resume"),
    "train-force-missing-data": (
        lambda w: [*train(w, f"data.path={w.i / 'missing.csv'}"), "--out", w.run, "--force"],
        "missing.csv does not exist",
    ),
    "train-force-nan-data": (
        lambda w: [*train(w, f"data.path={w.i / 'nan.csv'}"), "--out", w.run, "--force"],
        "nan.csv line 4",
    ),
    "train-resume-other-model": (
        lambda w: [*train(w, "model.hidden=64", "train.steps=30"), "--out", w.run, "--resume"],
        "model.hidden is 64 but the run",
    ),
    "train-resume-other-data": (
        lambda w: [
            *train(w, f"data.path={w.i / 'renamed.csv'}", "train.steps=30"),
            "--out",
            w.run,
            "--resume",
        ],
        "data.path is",
    ),
    # sample
    "sample-n-0": (lambda w: ["sample", "--run", w.run, "--n", 0, "--out", w.out / "s.npy"], "got 0"),
    "sample-no-n": (lambda w: ["sample", "--run", w.run, "--out", w.out / "s.npy"], "required: --n"),
    "sample-steps-negative": (lambda w: sample(w, "--steps", -1, "--out", w.out / "s.npy"), "got -1"),
    "sample-bad-sampler": (
        lambda w: sample(w, "--sampler", "ddim", "--out", w.out / "s.npy"),
        "invalid choice",
    ),
    "sample-bad-device": (
        lambda w: sample(w, "--device", "tpu", "--out", w.out / "s.npy"),
        "'tpu' is unknown",
    ),
    "sample-missing-run": (
        lambda w: ["sample", "--run", w.base / "nope", "--n", 5, "--out", w.out / "s.npy"],
        "nope does not exist",
    ),
    "sample-run-is-a-file": (
        lambda w: ["sample", "--run", w.i / "file", "--n", 5, "--out", w.out / "s.npy"],
        "is a file, not a run directory",
    ),
    "sample-run-without-checkpoints": (
        lambda w: ["sample", "--run", w.base / "empty_run", "--n", 5, "--out", w.out / "s.npy"],
        "holds no checkpoint; train it first",
    ),
    "sample-corrupt-checkpoint": (
        lambda w: ["sample", "--run", w.corrupt, "--n", 5, "--out", w.out / "s.npy"],
        "verifies; the newest (step 20)",
    ),
    "sample-out-bad-suffix": (
        lambda w: sample(w, "--out", w.out / "s.txt"),
        "must end in .npy or .csv or .png",
    ),
    "sample-out-in-proc": (lambda w: sample(w, "--out", "/proc/s.csv"), "cannot write /proc/s.csv"),
    "sample-out-below-a-file": (
        lambda w: sample(w, "--out", w.i / "file" / "s.csv"),
        "is a file, not a folder",
    ),
    "sample-out-is-a-folder": (lambda w: sample(w, "--out", w.base / "taken.npy"), "it is a folder"),
    "sample-grid-of-a-table": (lambda w: sample(w, "--out", w.out / "s.png"), "asks for an image grid"),
    # likelihood and anomaly
    "likelihood-wrong-width": (lambda w: score("likelihood", w, "wide.npy"), "shape (3,) per example"),
    "likelihood-wrong-header": (
        lambda w: score("likelihood", w, "renamed.csv"),
        "has columns (waiting, eruptions) but the run",
    ),
    "anomaly-wrong-header": (lambda w: score("anomaly", w, "renamed.csv"), "trained on (eruptions, waiting)"),
    "likelihood-nan-csv": (lambda w: score("likelihood", w, "nan.csv"), "nan.csv line 4"),
    "anomaly-nan-npy": (lambda w: score("anomaly", w, "nan.npy"), "nan.npy: row 2 (0-based) contains NaN"),
    "likelihood-empty-csv": (
        lambda w: score("likelihood", w, "empty.csv"),
        "empty.csv: the file holds no rows",
    ),
    "anomaly-text-cell": (lambda w: score("anomaly", w, "text.csv"), "'about 54' in column 'waiting'"),
    "likelihood-ragged-csv": (lambda w: score("likelihood", w, "ragged.csv"), "line 3 has 1 columns"),
    "likelihood-not-an-npy": (lambda w: score("likelihood", w, "garbage.npy"), "not a numeric .npy array"),
    "anomaly-missing-data": (lambda w: score("anomaly", w, "missing.csv"), "missing.csv does not exist"),
    "likelihood-probes-0": (lambda w: score("likelihood", w, "data.csv", "--probes", 0), "got 0"),
    "likelihood-bad-divergence": (
        lambda w: score("likelihood", w, "data.csv", "--divergence", "exactish"),
        "invalid choice: 'exactish'",
    ),
    "anomaly-top-0": (lambda w: score("anomaly", w, "data.csv", "--top", 0), "got 0"),
    "likelihood-out-in-proc": (
        lambda w: score("likelihood", w, "data.csv", "--out", "/proc/l.csv"),
        "cannot write /proc/l.csv",
    ),
    "anomaly-out-below-a-file": (
        lambda w: score("anomaly", w, "data.csv", "--out", w.i / "file" / "a.csv"),
        "is a file, not a folder",
    ),
    "likelihood-out-bad-suffix": (
        lambda w: score("likelihood", w, "data.csv", "--out", w.out / "l.json"),
        "must end in .npy or .csv",
    ),
    "unknown-command": (lambda w: ["frobnicate"], "invalid choice: 'frobnicate'"),
}


def snapshot(base: Path) -> dict[str, str]:
    """Every file (its SHA-256) and folder under ``base``, by relative path."""
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(base.rglob("*"))
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_touches_nothing(capsys, world, case):
    build, message = CASES[case]
    before = snapshot(world.base)
    code = main([str(arg) for arg in build(world)])
    _, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and lines[0].startswith("scorefield: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(world.base) == before
