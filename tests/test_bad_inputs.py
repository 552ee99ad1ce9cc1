"""A catalogue of bad inputs, to the command line and to the Python API.

A bad command line ends with exit status 2 and at most three lines on stderr, the first starting
``scorefield: error:``, no traceback, and leaves every file and folder of the good run, of the input
files and of the would-be outputs exactly as it was (nothing created, nothing changed). A bad call of
an estimator raises one exception whose message names the argument, and leaves the saved estimators
on disk unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _inputs import FAST, X, _fit, _with_column
from sklearn.exceptions import NotFittedError
from test_cli import TINY

from scorefield.cli import main
from scorefield.estimators import ScoreAnomalyDetector, ScoreDensityEstimator
from scorefield.run.checkpoint import FORMAT, checkpoint_dir, load_checkpoint, save_checkpoint


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
    (folder / "huge.csv").write_text("eruptions,waiting\n3.6,79\n1.8,1e40\n")  # Inf once in float32
    (folder / "text.csv").write_text("eruptions,waiting\n3.6,79\n1.8,about 54\n")
    (folder / "ragged.csv").write_text("eruptions,waiting\n3.6,79\n1.8\n")
    (folder / "table.txt").write_text("3.6,79\n1.8,54\n")
    (folder / "garbage.npy").write_bytes(b"\x93NUMPY but not really")
    (folder / "bad.toml").write_text("[train\nsteps = \n")
    (folder / "file").write_text("a regular file, not a folder\n")
    # numbers NumPy's reader refuses though Python's float() takes them
    (folder / "underscore.csv").write_text("eruptions,waiting\n3.6,1_000\n1.8,54\n")
    (folder / "arabic.csv").write_text("eruptions,waiting\n3.6,\u0667\u0669\n1.8,54\n", encoding="utf-8")
    (folder / "fullwidth.csv").write_text("eruptions,waiting\n\uff13.6,79\n1.8,54\n", encoding="utf-8")
    (folder / "years.csv").write_text("2019,2020\n3.6,79\n1.8,54\n")  # a header of numbers
    with open(folder / "claims.npy", "wb") as f:  # 300 bytes claiming 10^12 rows
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)}
        )
        f.write(bytes(300 - f.tell()))
    (folder / "dangling").symlink_to(folder / "nowhere" / "run")
    (folder / "dangling.npy").symlink_to(folder / "nowhere" / "s.npy")


def rewrite_sidecars(run: Path, change) -> None:
    """Apply ``change`` to the parsed JSON sidecar of every checkpoint of ``run`` (the weights stay)."""
    for path in checkpoint_dir(run).glob("*.json"):
        sidecar = json.loads(path.read_text())
        change(sidecar)
        path.write_text(json.dumps(sidecar))


def nan_weights(run: Path) -> None:
    """Every checkpoint of ``run`` rewritten, hashes and all, with NaN in its weights."""
    for path in checkpoint_dir(run).glob("*.safetensors"):
        ckpt = load_checkpoint(path)
        for key in ("model", "ema"):
            ckpt.state[key] = {name: torch.full_like(v, float("nan")) for name, v in ckpt.state[key].items()}
        save_checkpoint(run, ckpt.step, ckpt.state, ckpt.meta)


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
    w = SimpleNamespace(base=base, i=inputs, run=run, corrupt=corrupt, out=base / "out")
    for name in ("old_format", "huge_shape", "bad_state", "linked", "nan_run"):
        shutil.copytree(run, base / name)
        setattr(w, name, base / name)
    rewrite_sidecars(w.old_format, lambda sidecar: sidecar.update(format=1))
    rewrite_sidecars(w.huge_shape, lambda sidecar: sidecar["meta"].update(data_shape=[10**12]))
    rewrite_sidecars(w.bad_state, lambda sidecar: sidecar.update(state=[]))
    shutil.move(checkpoint_dir(w.linked), base / "elsewhere")  # checkpoints/ a link out of the run
    checkpoint_dir(w.linked).symlink_to(base / "elsewhere")
    nan_weights(w.nan_run)
    w.big = tmp_path_factory.mktemp("big") / "big.toml"  # outside base: the snapshot would read 2 GiB
    with open(w.big, "wb") as f:  # 2 GiB, sparse: a size no config has
        f.truncate(2**31)
    return w


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
    "train-config-of-2-gib": (
        lambda w: ["train", "--config", w.big, "--out", w.out],
        "big.toml is larger than 1 MiB: not a config",
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
        "nan.csv line 4: the row holds NaN, Inf or a number beyond",
    ),
    "train-beyond-float32": (
        lambda w: [*train(w, f"data.path={w.i / 'huge.csv'}"), "--out", w.out],
        "huge.csv line 3: the row holds NaN, Inf or a number beyond ±3.4e38",
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
    "sample-nfe-1": (lambda w: sample(w, "--nfe", 1, "--out", w.out / "s.npy"), "--nfe must be at least 2"),
    "sample-nfe-and-sampler": (
        lambda w: sample(w, "--nfe", 8, "--sampler", "pc", "--out", w.out / "s.npy"),
        "leave out --sampler and --steps",
    ),
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
    # values finite in float64 but not where the model computes
    "train-beta-max-1e308": (
        lambda w: [*train(w, "sde.beta_max=1e308"), "--out", w.out],
        "sde.beta_max: Input should be less than or equal to 1000000, got 1e+308",
    ),
    "train-sigma-max-beyond-float32": (
        lambda w: [*train(w, "sde.kind=ve", "sde.sigma_max=1e39"), "--out", w.out],
        "sde.sigma_max: expected a number finite in float32",
    ),
    "train-lr-inf": (
        lambda w: [*train(w, "train.lr=inf"), "--out", w.out],
        "train.lr: expected a number finite",
    ),
    # allocation bombs, refused before anything is allocated
    "train-hidden-1e9": (
        lambda w: [*train(w, "model.hidden=1000000000"), "--out", w.out],
        "and its optimizer state need",
    ),
    "train-toy-n-1e12": (
        lambda w: ["train", *sets("data.n=1000000000000"), "--out", w.out],
        "data.n = 1000000000000 toy examples need",
    ),
    "train-batch-1e9": (
        lambda w: [*train(w, "train.batch_size=1000000000"), "--out", w.out],
        "train.batch_size = 1000000000 exceeds the 64 training examples",
    ),
    "train-batch-over-the-data": (
        lambda w: [*train(w, "train.batch_size=65"), "--out", w.out],
        "train.batch_size = 65 exceeds the 64 training examples",
    ),
    "sample-n-1e15": (
        lambda w: ["sample", "--run", w.run, "--n", 10**15, "--out", w.out / "s.npy"],
        "--n 1000000000000000 samples need",
    ),
    # numbers as NumPy reads them, and headers
    "train-underscore-digits": (
        lambda w: [*train(w, f"data.path={w.i / 'underscore.csv'}"), "--out", w.out],
        "'1_000' in column 'waiting' is not a number",
    ),
    "likelihood-arabic-indic-digits": (
        lambda w: score("likelihood", w, "arabic.csv"),
        "'\u0667\u0669' in column 'waiting' is not a number",
    ),
    "anomaly-full-width-digits": (
        lambda w: score("anomaly", w, "fullwidth.csv"),
        "'\uff13.6' in column 'eruptions' is not a number",
    ),
    "train-no-header-on-a-header": (
        lambda w: [*train(w), "--no-header", "--out", w.out],
        "line 1: 'eruptions' in column 1 is not a number; if it is a header, say so",
    ),
    "train-header-of-a-npy": (
        lambda w: [*train(w, f"data.path={w.i / 'wide.npy'}", "data.header=true"), "--out", w.out],
        "header applies to a CSV file",
    ),
    "likelihood-a-header-of-numbers": (
        lambda w: score("likelihood", w, "years.csv", "--header"),
        "has columns (2019, 2020) but the run",
    ),
    # sizes claimed by files
    "likelihood-npy-claiming-1e12-rows": (
        lambda w: score("likelihood", w, "claims.npy"),
        "claims shape (1000000000000, 2) of float64 (16000000000000 bytes) but the file holds",
    ),
    "inpaint-mask-claiming-1e12-rows": (
        lambda w: [
            "inpaint",
            "--run",
            w.run,
            "--data",
            w.i / "data.csv",
            "--mask",
            w.i / "claims.npy",
            "--out",
            w.out / "f.csv",
        ],
        "claims shape (1000000000000, 2)",
    ),
    "sample-sidecar-claiming-1e12-features": (
        lambda w: ["sample", "--run", w.huge_shape, "--n", 5, "--out", w.out / "s.npy"],
        "its data_shape [1000000000000] is not 1 to 3 positive sizes",
    ),
    "sample-sidecar-of-the-wrong-structure": (
        lambda w: ["sample", "--run", w.bad_state, "--n", 5, "--out", w.out / "s.npy"],
        "is malformed: its 'state' is not a dict",
    ),
    "sample-checkpoint-of-another-format": (
        lambda w: ["sample", "--run", w.old_format, "--n", 5, "--out", w.out / "s.npy"],
        f"is a checkpoint of format 1; this version reads format {FORMAT} only",
    ),
    "train-resume-checkpoint-of-another-format": (
        lambda w: [*train(w, "train.steps=30"), "--out", w.old_format, "--resume"],
        f"is a checkpoint of format 1; this version reads format {FORMAT} only",
    ),
    # symbolic links
    "train-out-dangling-symlink": (
        lambda w: [*train(w), "--out", w.i / "dangling"],
        "is a symbolic link to",
    ),
    "sample-out-dangling-symlink": (
        lambda w: sample(w, "--out", w.i / "dangling.npy"),
        "is a symbolic link to",
    ),
    "train-force-over-symlinked-checkpoints": (
        lambda w: [*train(w), "--out", w.linked, "--force"],
        "--force deletes a run's own files, but",
    ),
    # results that are not finite are never written
    "sample-nan-model": (
        lambda w: [
            "sample",
            "--run",
            w.nan_run,
            "--n",
            5,
            "--sampler",
            "em",
            "--steps",
            5,
            "--quiet",
            "--out",
            w.out / "s.csv",
        ],
        "5 of 5 samples hold NaN or infinite values",
    ),
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


# --------------------------------------------------------------------------------------------------
# the Python API
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
    pytest.param(_bad_fit(X[:5]), ValueError, r"X has 5 rows \(n_samples=5\), but fit needs at least 10", id="too few rows"),
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
    pytest.param(_bad_fit(t_eval=1.5), ValueError, PARAM.format("t_eval"), id="t_eval=1.5"),
    pytest.param(_bad_fit(random_state=-1), ValueError, PARAM.format("random_state"), id="random_state=-1"),
    pytest.param(_bad_fit(verbose=-1), ValueError, PARAM.format("verbose"), id="verbose=-1"),
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


@pytest.fixture(scope="module")
def fitted():
    return _fit(X)


@pytest.mark.parametrize("call, error, match", BAD_INPUTS)
def test_bad_api_input_raises_naming_it_and_touches_nothing(call, error, match, fitted, saved):
    before = snapshot(saved)
    with pytest.raises(error, match=match):
        call(fitted, saved)
    assert snapshot(saved) == before
