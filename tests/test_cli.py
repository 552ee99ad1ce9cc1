"""The command line: the happy paths write what they promise; every bad input is one line on stderr, exit
status 2, no traceback, and no good file touched."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scorefield.cli import PLOTS, main
from scorefield.run.checkpoint import checkpoint_dir, latest_good
from scorefield.run.finished import load_run

TINY = [
    "data.n=256",
    "model.hidden=16",
    "model.depth=2",
    "model.embed_dim=8",
    "train.batch_size=32",
    "train.steps=20",
    "train.ckpt_every=10",
    "train.log_every=5",
    "train.device=cpu",
    "sample.steps=10",
    "sample.ode_method=rk4",
]


def sets(*overrides: str) -> list[str]:
    return [arg for item in [*TINY, *overrides] for arg in ("--set", item)]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def digest(folder) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *sets(), "--out", str(folder), "--quiet"]) == 0
    return folder


@pytest.fixture
def tables(tmp_path):
    good = np.random.default_rng(0).normal(size=(12, 2)) * 3 - 2
    np.savetxt(tmp_path / "good.csv", good, delimiter=",", header="a,b", comments="")
    bad = good.copy()
    bad[7, 1] = np.nan
    np.savetxt(tmp_path / "nan.csv", bad, delimiter=",")
    np.save(tmp_path / "wide.npy", np.ones((5, 3)))
    return tmp_path


# --------------------------------------------------------------------------------------------------
# what works


def test_train_writes_a_run_directory(run_dir):
    assert (run_dir / "config.toml").is_file()
    assert sorted(p.name for p in checkpoint_dir(run_dir).iterdir())[-2:] == [
        "step-0000020.json",
        "step-0000020.safetensors",
    ]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4


def test_sample_with_a_budget_of_score_evaluations_uses_sample_fast(capsys, run_dir, tmp_path):
    code, out, _ = run_cli(
        capsys, "sample", "--run", run_dir, "--n", 12, "--nfe", 6, "--out", tmp_path / "f.npy"
    )
    assert code == 0 and "wrote 12 samples (fast, 6 score evaluations)" in out
    expected = load_run(run_dir, device="cpu").sample(12, sampler="fast", steps=6).numpy()
    assert np.array_equal(np.load(tmp_path / "f.npy"), expected) and np.isfinite(expected).all()


def test_sample_writes_npy_and_csv_in_data_units(capsys, run_dir, tmp_path):
    code, out, _ = run_cli(
        capsys, "sample", "--run", run_dir, "--n", 30, "--seed", 2, "--out", tmp_path / "s.npy"
    )
    assert code == 0 and "wrote 30 samples" in out
    samples = np.load(tmp_path / "s.npy")
    expected = load_run(run_dir, device="cpu").sample(30, seed=2).numpy()
    assert samples.shape == (30, 2) and np.array_equal(samples, expected)
    code, _, _ = run_cli(
        capsys,
        "sample",
        "--run",
        run_dir,
        "--n",
        30,
        "--seed",
        2,
        "--batch-size",
        7,
        "--out",
        tmp_path / "s.csv",
    )
    assert code == 0
    from_csv = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert np.allclose(from_csv, samples, atol=1e-5)  # rk4 samples do not depend on the batch size


def test_likelihood_and_anomaly(capsys, run_dir, tables):
    code, out, _ = run_cli(
        capsys, "likelihood", "--run", run_dir, "--data", tables / "good.csv", "--out", tables / "logp.npy"
    )
    assert code == 0 and "mean log-likelihood" in out
    logp = np.load(tables / "logp.npy")
    assert logp.shape == (12, 1) and np.isfinite(logp).all()
    assert f"{logp.mean():.4f}" in out

    code, out, _ = run_cli(
        capsys, "anomaly", "--run", run_dir, "--data", tables / "good.csv", "--out", tables / "scores.csv"
    )
    assert code == 0
    table = np.loadtxt(tables / "scores.csv", delimiter=",", skiprows=1)
    assert np.array_equal(table[:, 0], np.arange(12))
    assert np.allclose(table[:, 1], -logp[:, 0], rtol=1e-6)
    worst = int(table[:, 1].argmax())
    assert f"highest: row {worst} " in out


def test_plot_writes_figures(capsys, run_dir, tmp_path):
    code, out, _ = run_cli(
        capsys, "plot", "--run", run_dir, "--what", *PLOTS, "--n", 200, "--steps", 5, "--out", tmp_path
    )
    assert code == 0 and out.count(str(tmp_path)) == len(PLOTS)
    for name in ("samples.png", "loss.png", "field.png", "denoise.png", "langevin.gif"):
        assert (tmp_path / name).stat().st_size > 1000, name


def test_python_dash_m_runs_the_command(run_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "scorefield", "sample", "--run", str(run_dir), "--n", "0", "--out", "x.npy"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "scorefield: error: argument --n/--num-samples: expected a positive integer, got 0 (see scorefield sample --help)"
    ]
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------------
# what is refused


def expect_error(capsys, args, message: str) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scorefield: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.stepz=3"], "unknown key 'train.stepz'"),
        (["train.steps=abc"], "train.steps: Input should be a valid integer, got 'abc'"),
        (["train.steps=0"], "train.steps: Input should be greater than 0"),
        (
            ["sde.kind=ve", "sde.sigma_min=5.0", "sde.sigma_max=1.0"],
            "sigma_min (5.0) must be smaller than sigma_max",
        ),
        (["data.path=missing.csv"], "missing.csv does not exist"),
    ],
    ids=["unknown-key", "wrong-type", "non-positive-steps", "sigma-order", "missing-data"],
)
def test_train_refuses_bad_configs(capsys, tmp_path, overrides, message):
    out = tmp_path / "run"
    expect_error(capsys, ["train", *sets(*overrides), "--out", out], message)
    assert not out.exists()  # a run that cannot start leaves no empty directory behind


def test_train_refuses_bad_files(capsys, tmp_path, tables):
    expect_error(
        capsys, ["train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "r"], "does not exist"
    )
    expect_error(
        capsys, ["train", *sets(f"data.path={tables / 'nan.csv'}"), "--out", tmp_path / "r"],
        "nan.csv line 8: the row holds NaN, Inf or a number beyond",
    )  # fmt: skip


def test_an_existing_run_is_never_overwritten(capsys, run_dir):
    before = digest(run_dir)
    expect_error(
        capsys, ["train", *sets("train.steps=30"), "--out", run_dir], "already holds a run; pass --resume"
    )
    expect_error(
        capsys, ["train", *sets("model.hidden=64"), "--out", run_dir, "--resume"],
        "model.hidden is 64 but the run",
    )  # fmt: skip
    assert digest(run_dir) == before


def test_data_errors_name_the_problem(capsys, run_dir, tables):
    for command in ("likelihood", "anomaly"):
        expect_error(
            capsys,
            [command, "--run", run_dir, "--data", tables / "nan.csv"],
            "nan.csv line 8: the row holds NaN, Inf or a number beyond",
        )
        expect_error(capsys, [command, "--run", run_dir, "--data", tables / "none.csv"], "does not exist")
        expect_error(
            capsys, [command, "--run", run_dir, "--data", tables / "wide.npy"],
            "shape (3,) per example but the run",
        )  # fmt: skip


def test_run_errors(capsys, tmp_path, run_dir):
    out = tmp_path / "s.npy"
    expect_error(capsys, ["sample", "--run", tmp_path / "none", "--n", 5, "--out", out], "does not exist")
    expect_error(
        capsys, ["sample", "--run", run_dir, "--n", 5, "--out", tmp_path / "s.txt"], "must end in .npy"
    )
    expect_error(
        capsys, ["sample", "--run", run_dir, "--n", 5, "--steps", 0, "--out", out], "positive integer"
    )
    expect_error(
        capsys, ["sample", "--run", run_dir, "--n", 5, "--sampler", "ddim", "--out", out], "invalid choice"
    )
    expect_error(
        capsys, ["sample", "--run", run_dir, "--n", 5, "--sampler", "ald", "--out", out], "ald needs noise"
    )
    expect_error(capsys, ["frobnicate"], "invalid choice: 'frobnicate'")
    assert not out.exists()


def test_a_corrupt_checkpoint_is_refused_and_good_outputs_survive(capsys, tmp_path, run_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in checkpoint_dir(run_dir).iterdir():
        (broken / "checkpoints").mkdir(exist_ok=True)
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        (broken / "checkpoints" / path.name).write_bytes(data)
    out = tmp_path / "keep.npy"
    np.save(out, np.arange(3))
    before = out.read_bytes()
    line = expect_error(
        capsys,
        ["sample", "--run", broken, "--n", 5, "--out", out],
        "verifies; the newest (step 20): checkpoint",
    )
    assert "warning" not in line
    assert out.read_bytes() == before


def test_a_corrupt_newest_checkpoint_warns_in_one_line_and_falls_back(capsys, tmp_path, run_dir):
    copy = tmp_path / "copy"
    (copy / "checkpoints").mkdir(parents=True)
    for path in checkpoint_dir(run_dir).iterdir():
        (copy / "checkpoints" / path.name).write_bytes(path.read_bytes())
    newest = copy / "checkpoints" / "step-0000020.safetensors"
    newest.write_bytes(newest.read_bytes()[:-4])
    code, _, err = run_cli(capsys, "sample", "--run", copy, "--n", 4, "--quiet", "--out", tmp_path / "s.npy")
    assert code == 0
    assert err.strip().splitlines() == [
        f"scorefield: warning: skipping checkpoint of step 20: checkpoint {newest} is corrupt: it holds "
        f"{newest.stat().st_size} bytes, step-0000020.json records {newest.stat().st_size + 4}"
    ]
    assert torch.from_numpy(np.load(tmp_path / "s.npy")).shape == (4, 2)


# --------------------------------------------------------------------------------------------------
# a run is checked whole before its directory is touched; outputs are checked before any compute


def copy_run(run_dir, dest):
    shutil.copytree(run_dir, dest)
    return dest


@pytest.mark.parametrize(
    ("data", "message"),
    [("missing.csv", "missing.csv does not exist"), ("nan.csv", "line 8: the row holds NaN"),
     ("one.csv", "at least 2 are needed")],
    ids=["missing", "nan", "one-row"],
)  # fmt: skip
def test_force_with_bad_data_leaves_the_good_run_untouched(capsys, tmp_path, run_dir, tables, data, message):
    np.savetxt(tables / "one.csv", np.ones((1, 2)), delimiter=",")
    good = copy_run(run_dir, tmp_path / "good")
    before = digest(good)
    expect_error(
        capsys, ["train", *sets(f"data.path={tables / data}"), "--out", good, "--force"], message
    )  # fmt: skip
    assert digest(good) == before


def forbid(monkeypatch, *names: str) -> None:
    """Make the compute steps fail loudly, so a check that comes after them fails the test."""
    import scorefield.cli.commands
    from scorefield.run.finished import Run

    def boom(*args, **kwargs):
        raise AssertionError("computed before checking the output")

    for name in names:
        monkeypatch.setattr(Run, name, boom)
    monkeypatch.setattr(scorefield.cli.commands, "train", boom)


@pytest.mark.parametrize("where", ["proc", "below-a-file", "a-folder"])
@pytest.mark.parametrize("command", ["train", "sample", "likelihood", "anomaly"])
def test_unwritable_outputs_are_refused_before_any_work(
    capsys, monkeypatch, tmp_path, run_dir, tables, command, where
):
    forbid(monkeypatch, "sample", "log_prob")
    (tmp_path / "file").write_text("keep")
    (tmp_path / "taken.csv").mkdir()
    name = "run" if command == "train" else "out.csv"
    out = {"proc": Path("/proc") / name, "below-a-file": tmp_path / "file" / name}.get(where)
    if out is None:  # a folder where a file goes; for train, a file where the run's folder goes
        out = tmp_path / ("file" if command == "train" else "taken.csv")
    args = {
        "train": ["train", *sets(), "--out", out],
        "sample": ["sample", "--run", run_dir, "--n", 5, "--out", out],
        "likelihood": ["likelihood", "--run", run_dir, "--data", tables / "good.csv", "--out", out],
        "anomaly": ["anomaly", "--run", run_dir, "--data", tables / "good.csv", "--out", out],
    }[command]
    expect_error(capsys, args, f"cannot write {out}")
    assert (tmp_path / "file").read_text() == "keep" and not any((tmp_path / "taken.csv").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_is_refused(capsys, tmp_path, run_dir):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    expect_error(
        capsys, ["sample", "--run", run_dir, "--n", 5, "--out", locked / "s.npy"], "accepts no new files"
    )


# --------------------------------------------------------------------------------------------------
# column names travel with the run


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("named")
    data = np.random.default_rng(1).normal(size=(64, 2)) * [1.0, 10.0] + [3.5, 70.0]
    np.savetxt(folder / "faithful.csv", data, delimiter=",", header="eruptions,waiting", comments="")
    code = main(
        ["train", *sets(f"data.path={folder / 'faithful.csv'}"), "--out", str(folder / "run"), "--quiet"]
    )
    assert code == 0
    return folder


def test_a_run_keeps_its_training_columns(named_run, run_dir):
    assert load_run(named_run / "run", device="cpu").columns == ("eruptions", "waiting")
    assert latest_good(named_run / "run").meta["columns"] == ["eruptions", "waiting"]
    assert load_run(run_dir, device="cpu").columns == ("x0", "x1")  # a toy's features have no names


def test_likelihood_refuses_a_header_that_differs_from_the_run(capsys, named_run):
    data = np.loadtxt(named_run / "faithful.csv", delimiter=",", skiprows=1)[:8]
    np.savetxt(
        named_run / "renamed.csv", data[:, ::-1], delimiter=",", header="waiting,duration", comments=""
    )
    for command in ("likelihood", "anomaly"):
        line = expect_error(
            capsys, [command, "--run", named_run / "run", "--data", named_run / "renamed.csv"],
            "renamed.csv has columns (waiting, duration) but the run",
        )  # fmt: skip
        assert "trained on (eruptions, waiting)" in line


def test_data_without_names_or_with_the_runs_names_are_scored(capsys, named_run, tmp_path):
    data = np.loadtxt(named_run / "faithful.csv", delimiter=",", skiprows=1)[:8]
    np.save(tmp_path / "plain.npy", data)
    np.savetxt(tmp_path / "plain.csv", data, delimiter=",")
    np.savetxt(tmp_path / "same.csv", data, delimiter=",", header="eruptions,waiting", comments="")
    results = []
    for name in ("plain.npy", "plain.csv", "same.csv"):
        out = tmp_path / f"{name}.logp.csv"
        code, _, err = run_cli(
            capsys, "likelihood", "--run", named_run / "run", "--data", tmp_path / name, "--out", out
        )
        assert code == 0, err
        assert out.read_text().splitlines()[0] == "log_likelihood"  # per-row outputs keep their own names
        results.append(np.loadtxt(out, delimiter=",", skiprows=1))
    assert np.allclose(results[0], results[1]) and np.allclose(results[0], results[2])


def test_any_header_of_the_right_width_suits_a_run_without_names(capsys, run_dir, tables):
    code, _, err = run_cli(capsys, "likelihood", "--run", run_dir, "--data", tables / "good.csv")  # a,b
    assert code == 0, err


def test_sample_csv_has_the_runs_column_names(capsys, named_run, tmp_path):
    code, _, err = run_cli(
        capsys, "sample", "--run", named_run / "run", "--n", 4, "--out", tmp_path / "s.csv", "--quiet"
    )
    assert code == 0, err
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "eruptions,waiting"


def test_resume_refuses_the_same_values_under_other_names(capsys, tmp_path):
    data = np.random.default_rng(3).normal(size=(40, 2))
    np.savetxt(tmp_path / "data.csv", data, delimiter=",", header="eruptions,waiting", comments="")
    run = tmp_path / "run"
    assert (
        run_cli(capsys, "train", *sets(f"data.path={tmp_path / 'data.csv'}"), "--out", run, "--quiet")[0] == 0
    )
    np.savetxt(tmp_path / "data.csv", data, delimiter=",", header="a,b", comments="")
    before = digest(run)
    expect_error(
        capsys,
        ["train", *sets(f"data.path={tmp_path / 'data.csv'}", "train.steps=30"), "--out", run, "--resume"],
        "the training data have columns (a, b) but the run",
    )
    assert digest(run) == before


# --------------------------------------------------------------------------------------------------
# data paths are stored absolute


def test_a_relative_data_path_is_stored_absolute_and_resumes_from_elsewhere(
    capsys, monkeypatch, tmp_path, named_run
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(named_run / "faithful.csv", tmp_path / "a" / "data.csv")
    monkeypatch.chdir(tmp_path / "a")
    code, _, err = run_cli(capsys, "train", *sets("data.path=data.csv"), "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    absolute = str(tmp_path / "a" / "data.csv")
    assert f'path = "{absolute}"' in (tmp_path / "run" / "config.toml").read_text()
    assert latest_good(tmp_path / "run").meta["config"]["data"]["path"] == absolute
    monkeypatch.chdir(tmp_path / "b")
    code, out, err = run_cli(
        capsys, "train", "--set", "train.steps=30", "--out", tmp_path / "run", "--resume", "--quiet"
    )
    assert code == 0 and "to step 30" in out, err


# --------------------------------------------------------------------------------------------------
# version, help, device


def test_version_and_bare_command(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out == f"scorefield {importlib.metadata.version('scorefield')}\n"
    code, out, err = run_cli(capsys)
    assert code == 0 and out.startswith("usage: scorefield") and not err
    for command in ("train", "sample", "likelihood", "anomaly", "plot", "demo"):
        assert command in out


def test_train_device_overrides_the_config(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", *sets("train.device=auto"), "--device", "cpu", "--out", out, "--quiet"
    )
    assert code == 0, err
    assert 'device = "cpu"' in (out / "config.toml").read_text()
    expect_error(
        capsys, ["train", *sets(), "--device", "gpu", "--out", tmp_path / "r2"], "device 'gpu' is unknown"
    )


# --------------------------------------------------------------------------------------------------
# per-row outputs and row numbers


def test_anomaly_csv_writes_integer_rows(capsys, run_dir, tables):
    code, _, err = run_cli(
        capsys, "anomaly", "--run", run_dir, "--data", tables / "good.csv", "--out", tables / "a.csv"
    )
    assert code == 0, err
    lines = (tables / "a.csv").read_text().splitlines()
    assert lines[0] == "row,anomaly_score"
    assert [line.split(",")[0] for line in lines[1:]] == [str(i) for i in range(12)]


def test_bad_rows_are_named_by_file_line_or_npy_row(capsys, run_dir, tmp_path):
    values = np.ones((6, 2))
    values[3, 1] = np.inf
    np.savetxt(tmp_path / "h.csv", values, delimiter=",", header="a,b", comments="")
    np.save(tmp_path / "v.npy", values)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n\n3,oops\n")
    cases = {"h.csv": "h.csv line 5: the row holds NaN, Inf or a number beyond", "v.npy": "v.npy: row 3 (0-based) contains",
             "t.csv": "t.csv line 4: 'oops' in column 'b' is not a number"}  # fmt: skip
    for name, message in cases.items():
        expect_error(capsys, ["anomaly", "--run", run_dir, "--data", tmp_path / name], message)


def test_a_run_keeps_the_gaussian_of_its_data_for_the_fast_samplers_start(run_dir):
    """The checkpoint holds the training data's mean and covariance in model units; ``sample --nfe``
    starts from them at small budgets, and a run saved without them samples from t = 1 as before."""
    from dataclasses import replace

    from scorefield.datasets import read_labelled_data
    from scorefield.gaussian import data_moments
    from scorefield.keyed import KeyedNoise
    from scorefield.multistep import sample_fast

    run = load_run(run_dir, device="cpu")
    expected = data_moments(run.scaler.transform(read_labelled_data(run.config.data)[0]))
    torch.testing.assert_close(run.moments.mean(), expected.mean(), atol=1e-5, rtol=0)
    torch.testing.assert_close(run.moments.cov, expected.cov, atol=1e-5, rtol=1e-5)
    x_T = run.diffusion.sde.prior_std * KeyedNoise(2, torch.arange(8)).randn((8, 2))
    for moments in (run.moments, None):
        sampled = replace(run, moments=moments).sample(8, sampler="fast", steps=5, seed=2)
        x, info = sample_fast(run.diffusion.score_t, run.diffusion.sde, x_T, 5, moments=moments)
        torch.testing.assert_close(sampled, run.scaler.inverse_transform(x))
        assert (info["start"] < 1) == (moments is not None)


def test_tune_fits_a_grid_to_the_run_that_sample_nfe_then_uses(capsys, run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    default = load_run(run, device="cpu").sample(16, sampler="fast", steps=4, seed=1)
    code, out, _ = run_cli(
        capsys, "tune", "--run", run, "--nfe", 4, "--n", 64, "--iterations", 30, "--starts", 2, "--quiet"
    )
    assert code == 0 and "tuned the grid for 4 score evaluations" in out
    stored = json.loads((run / "grids.json").read_text())["4"]
    assert (
        stored["rms"] <= stored["rms_default"] and len(stored["times"]) == 4 and 0 < stored["times"][0] <= 1
    )
    loaded = load_run(run, device="cpu")
    assert loaded.fast_grid(4).tolist() == pytest.approx(stored["times"]) and loaded.fast_grid(5) is None
    code, _, _ = run_cli(
        capsys, "sample", "--run", run, "--n", 16, "--nfe", 4, "--seed", 1, "--out", tmp_path / "t.npy"
    )
    tuned = np.load(tmp_path / "t.npy")
    assert code == 0 and np.array_equal(tuned, loaded.sample(16, sampler="fast", steps=4, seed=1).numpy())
    assert not np.allclose(tuned, default.numpy())  # the stored grid is the one used
    code, _, err = run_cli(capsys, "tune", "--run", run, "--nfe", 1)
    assert code == 2 and "--nfe must be at least 2" in err
