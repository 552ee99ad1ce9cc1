"""Two processes under torchrun (gloo, CPU) compute what one process computes: training with the same global
batch (also when a one-process run is resumed by two), and sampling split over the processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scorefield.run.checkpoint import latest_good
from scorefield.run.config import load_config, to_toml
from scorefield.run.finished import load_run
from scorefield.run.train import train

TINY = [
    "data.n=512",
    "model.hidden=32",
    "model.depth=2",
    "model.embed_dim=16",
    "train.batch_size=64",
    "train.ckpt_every=20",
    "train.log_every=10",
    "train.warmup=5",
    "train.device=cpu",
]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is unavailable"
)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two gloo processes under torchrun. On a loaded 2-core machine a worker has been seen to abort in
    gloo's teardown ("terminate called without an active exception", SIGABRT) after its work: such a
    death by a signal is retried once; any exit of the program itself (a status it returns) is not."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for _attempt in range(2):
        result = subprocess.run(
            [*command, "-m", "scorefield", *args], capture_output=True, text=True, env=env
        )
        killed = "Signal 6 (SIGABRT)" in result.stderr or "terminate called" in result.stderr
        if result.returncode == 0 or not killed:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_two_processes_sample_like_one(run_dir, sampler: str) -> None:
    """21 samples of ``run_dir`` by ``scorefield sample`` over two processes (blocks of 4) equal one
    process's ``Run.sample``."""
    out = run_dir.parent / f"samples_{sampler}.npy"
    flags = {"--run-dir": run_dir, "--num-samples": 21, "--sampler": sampler, "--steps": 5,
             "--batch-size": 4, "--seed": 7, "--device": "cpu", "--out": out}  # fmt: skip
    torchrun("sample", "--quiet", *[str(v) for item in flags.items() for v in item])
    expected = load_run(run_dir, device="cpu").sample(21, sampler, 5, seed=7, batch_size=4)
    assert np.allclose(np.load(out), expected.numpy(), rtol=1e-6, atol=1e-6)


def test_two_processes_train_like_one_and_resume_a_one_process_run(tmp_path):
    config = load_config(None, [*TINY, "train.steps=40"])
    (tmp_path / "c.toml").write_text(to_toml(config))
    train(config, tmp_path / "one", progress=False)
    train(load_config(None, [*TINY, "train.steps=20"]), tmp_path / "two", progress=False)

    torchrun(
        "train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "two"), "--resume", "--quiet"
    )

    one, two = latest_good(tmp_path / "one"), latest_good(tmp_path / "two")
    assert two.step == 40 and two.meta["world_size"] == 2
    for part in ("model", "ema"):
        for key, value in one.state[part].items():
            assert torch.allclose(value, two.state[part][key], rtol=0, atol=1e-5), (part, key)
    logged = [line for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 4  # steps 10 and 20 by one process, 30 and 40 by two, written once


def test_samples_split_over_two_processes_equal_one_process(tmp_path):
    train(load_config(None, [*TINY, "train.steps=10"]), tmp_path / "run", progress=False)
    assert_two_processes_sample_like_one(tmp_path / "run", "pc")


def test_a_run_conditioned_on_clusters_trains_and_samples_over_two_processes_like_one(tmp_path):
    """Every process finds the same k-means clusters (seeded), so two train what one trains and store the
    same clusters; the mixture's samples split over two processes equal one process's."""
    clustered = [
        *TINY,
        "train.steps=20",
        "data.labels=clusters",
        "model.num_classes=2",
        "train.label_dropout=0.0",
    ]
    config = load_config(None, clustered)
    (tmp_path / "c.toml").write_text(to_toml(config))
    train(config, tmp_path / "one", progress=False)
    torchrun("train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "two"), "--quiet")
    one, two = latest_good(tmp_path / "one"), latest_good(tmp_path / "two")
    assert two.meta["world_size"] == 2
    for key, value in one.state["clusters"].items():
        assert torch.equal(value, two.state["clusters"][key]), key
    for key, value in one.state["ema"].items():
        assert torch.allclose(value, two.state["ema"][key], rtol=0, atol=1e-5), key
    assert_two_processes_sample_like_one(tmp_path / "one", "dpm")
