"""The command line: the happy paths write what they promise; every bad input is one line on stderr, exit
status 2, no traceback, and no good file touched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scorefield.checkpoint import checkpoint_dir
from scorefield.cli import PLOTS, main
from scorefield.train import load_run

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
        (["data.path=missing.csv"], "data.path: data file missing.csv does not exist"),
    ],
    ids=["unknown-key", "wrong-type", "non-positive-steps", "sigma-order", "missing-data"],
)
def test_train_refuses_bad_configs(capsys, tmp_path, overrides, message):
    out = tmp_path / "run"
    expect_error(capsys, ["train", *sets(*overrides), "--out", out], message)
    assert not (out / "checkpoints").exists()


def test_train_refuses_bad_files(capsys, tmp_path, tables):
    expect_error(
        capsys, ["train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "r"], "does not exist"
    )
    expect_error(
        capsys, ["train", *sets(f"data.path={tables / 'nan.csv'}"), "--out", tmp_path / "r"],
        "nan.csv: row 7 contains NaN or Inf",
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
            "nan.csv: row 7 contains NaN or Inf",
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
        f"scorefield: warning: skipping checkpoint of step 20: checkpoint {newest} is corrupt: its size or "
        "SHA-256 differs from the one recorded in step-0000020.json"
    ]
    assert torch.from_numpy(np.load(tmp_path / "s.npy")).shape == (4, 2)
