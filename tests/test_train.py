"""The trainer: it learns the true score, it is deterministic, it resumes bitwise (after SIGKILL, SIGTERM or a
corrupt checkpoint), it stops on a non-finite loss, and runs read back sample and evaluate in data units."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from scorefield.datasets import Standardizer, two_gaussians
from scorefield.distributions import GaussianMixture
from scorefield.distributions import two_gaussians as two_gaussians_mixture
from scorefield.metrics import fisher_divergence
from scorefield.run.build import OBJECTIVES, build
from scorefield.run.checkpoint import CheckpointError, checkpoint_dir, latest_good, list_checkpoints
from scorefield.run.config import ConfigError, load_config, to_toml
from scorefield.run.distributed import local_rows
from scorefield.run.finished import load_run
from scorefield.run.train import EpochOrder, RunError, TrainingError, learning_rate, train

TINY = [
    "data.n=512",
    "model.hidden=32",
    "model.depth=2",
    "model.embed_dim=16",
    "train.batch_size=64",
    "train.steps=40",
    "train.ckpt_every=10",
    "train.log_every=10",
    "train.warmup=5",
    "train.keep_last=10",
    "train.device=cpu",
    "sample.steps=20",
]


def tiny(*overrides: str):
    return load_config(None, [*TINY, *overrides])


def final_state(run_dir) -> dict[str, torch.Tensor]:
    ckpt = latest_good(run_dir)
    flat = {f"model.{k}": v for k, v in ckpt.state["model"].items()}
    flat.update({f"ema.{k}": v for k, v in ckpt.state["ema"].items()})
    for index, moments in ckpt.state["optimizer"]["state"].items():
        flat.update({f"opt.{index}.{k}": v for k, v in moments.items()})
    return flat


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------------------------------
# pieces


def test_epoch_order_visits_every_example_once_per_epoch():
    order = EpochOrder(n=10, batch=4, seed=3, device=torch.device("cpu"))
    stream = torch.cat([order(step) for step in range(10)])  # 40 indices = 4 epochs
    for epoch in stream.reshape(4, 10):
        assert sorted(epoch.tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:20])  # a fresh permutation each epoch
    again = EpochOrder(n=10, batch=4, seed=3, device=torch.device("cpu"))
    assert torch.equal(again(7), order(7))  # a pure function of (seed, step)


def test_learning_rate_warms_up_linearly():
    config = tiny("train.lr=0.01", "train.warmup=4")
    assert [learning_rate(config, k) for k in range(6)] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]
    )
    assert learning_rate(tiny("train.warmup=0"), 0) == tiny().train.lr


@pytest.mark.parametrize(
    "overrides",
    [
        ["sde.kind=vp"],
        ["objective.kind=ncsn", "sde.kind=ncsn", "sde.sigma_max=auto"],
        ["objective.kind=ssm", "sde.kind=ncsn", "sde.sigma_max=5.0", "objective.n_projections=2"],
    ],
    ids=["sde_dsm", "ncsn", "ssm"],
)
def test_sharded_rows_give_the_same_per_example_losses(overrides):
    """What one process of N computes for its rows equals the single-process values of those rows (in
    float64: float32 matrix products over 4 and 12 rows round differently on some CPUs, and a loss
    like ||std s + z||² can cancel that rounding up to ~1e-5 relative)."""
    config = tiny(*overrides)
    diffusion = build(config, (2,), sigma_max=5.0)
    diffusion.model.double()
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    objective = OBJECTIVES[config.objective.kind]
    full = objective(diffusion.model, x, diffusion, torch.Generator().manual_seed(1))
    for lo, hi in ((0, 4), (4, 8), (8, 12)):
        local = objective(
            local_rows(diffusion.model, lo, hi, 12), x, diffusion, torch.Generator().manual_seed(1)
        )
        torch.testing.assert_close(local[lo:hi], full[lo:hi], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# training


def test_training_learns_the_true_diffused_score(tmp_path):
    """VP SDE on the tutorials' mixture: at t = 0.3 the learned score is close to the exact one (Fisher)."""
    config = load_config(
        Path(__file__).parents[1] / "configs" / "toy_vp.toml",
        ["train.steps=400", "data.n=4000", "model.hidden=64", "train.device=cpu", "train.ckpt_every=400"],
    )
    train(config, tmp_path, progress=False)
    run = load_run(tmp_path, device="cpu")
    # the exact p_t of the standardised data: the mixture mapped by z = (x - mean) / std, then diffused
    mixture, std = two_gaussians_mixture(), run.scaler.std
    standardised = GaussianMixture(
        (mixture.means - run.scaler.mean) / std, mixture.covs / (std[:, None] * std[None, :]), mixture.weights
    )
    t = 0.3
    p_t = standardised.diffuse(run.diffusion.sde, t)
    x = p_t.sample(2000, generator=torch.Generator().manual_seed(0))
    time = torch.full((x.shape[0],), t)
    with torch.no_grad():
        divergence = fisher_divergence(lambda y: run.diffusion.score_t(y, time), p_t.score, x)
    assert float(divergence) < 0.05


def test_runs_are_deterministic_and_seeded(tmp_path):
    train(tiny(), tmp_path / "a", progress=False)
    train(tiny(), tmp_path / "b", progress=False)
    train(tiny("train.seed=1"), tmp_path / "c", progress=False)
    assert_bitwise_equal(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    assert not torch.equal(final_state(tmp_path / "a")["model.net.output.weight"],
                           final_state(tmp_path / "c")["model.net.output.weight"])  # fmt: skip


def test_resume_from_a_corrupt_newest_checkpoint_falls_back_and_ends_bitwise_equal(tmp_path):
    train(tiny(), tmp_path / "straight", progress=False)
    train(tiny("train.steps=30"), tmp_path / "resumed", progress=False)
    newest = checkpoint_dir(tmp_path / "resumed") / "step-0000030.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping checkpoint of step 30"):
        result = train(tiny(), tmp_path / "resumed", resume=True, progress=False)
    assert result.step == 40
    assert_bitwise_equal(final_state(tmp_path / "straight"), final_state(tmp_path / "resumed"))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines] == [10, 20, 30, 40]


def test_run_directory_rules(tmp_path):
    train(tiny("train.steps=10"), tmp_path, progress=False)
    before = (checkpoint_dir(tmp_path) / "step-0000010.safetensors").read_bytes()
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        train(tiny(), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="model.hidden is 64 but the run .* was trained with 32"):
        train(tiny("model.hidden=64"), tmp_path, resume=True, progress=False)
    assert (checkpoint_dir(tmp_path) / "step-0000010.safetensors").read_bytes() == before
    assert train(tiny("train.steps=10"), tmp_path, resume=True, progress=False).step == 10  # nothing to do
    train(tiny("train.steps=20"), tmp_path, force=True, progress=False)
    assert list_checkpoints(tmp_path) == [20, 10]  # started over: step 10 was rewritten, not resumed
    for path in checkpoint_dir(tmp_path).glob("*.safetensors"):
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no checkpoint .* verifies; the newest \(step 20\)"):
        train(tiny("train.steps=30"), tmp_path, resume=True, progress=False)


def test_a_non_finite_loss_stops_with_the_step_and_keeps_good_checkpoints(tmp_path):
    config = tiny("train.lr=1e30", "train.warmup=0", "train.grad_clip=0.0", "train.ckpt_every=1")
    with pytest.raises(
        TrainingError, match=r"not finite at step (\d+).*last good checkpoint is step"
    ) as info:
        train(config, tmp_path, progress=False)
    bad = int(info.value.args[0].split("step ")[1].split(";")[0])
    assert bad > 1
    assert list_checkpoints(tmp_path) == list(range(bad - 1, 0, -1))
    ckpt = latest_good(tmp_path)
    assert all(torch.isfinite(v).all() for v in ckpt.state["model"].values())


@pytest.mark.parametrize(
    ("overrides", "samplers"),
    [
        (["sde.kind=subvp"], ["ode", "dpm", "pc", "em"]),
        (["sde.kind=ve", "sde.sigma_max=auto", "model.param=denoiser"], ["ode", "dpm", "ald"]),
        (["sde.kind=vp", "objective.weighting=likelihood", "objective.importance_sampling=true"], ["pc"]),
        (["sde.kind=ncsn", "objective.kind=ncsn", "sde.sigma_max=auto"], ["ald", "ode", "dpm"]),
        (["sde.kind=ncsn", "objective.kind=dsm", "objective.sigma=0.1"], ["ald"]),
        (["sde.kind=ncsn", "objective.kind=ism", "sde.sigma_max=1.0"], ["ald"]),
        (["sde.kind=ncsn", "objective.kind=ism", "objective.trace=hutchinson", "sde.sigma_max=1.0"], []),
        (["sde.kind=ncsn", "objective.kind=ssm", "sde.sigma_max=1.0"], []),
    ],
    ids=["subvp", "ve", "vp-likelihood", "ncsn", "dsm", "ism", "ism-hutchinson", "ssm"],
)
def test_every_objective_trains_and_samples(tmp_path, overrides, samplers):
    config = tiny(*overrides, "train.steps=6", "train.ckpt_every=6", "train.log_every=3")
    train(config, tmp_path, progress=False)
    run = load_run(tmp_path, device="cpu")
    assert run.step == 6
    for sampler in samplers:
        x = run.sample(16, sampler=sampler, steps=3, seed=0)
        assert x.shape == (16, 2) and torch.isfinite(x).all(), sampler
    if run.diffusion.single_level:
        with pytest.raises(RunError, match="no time axis"):
            run.sample(4, sampler="ode")
        with pytest.raises(RunError, match="no likelihood"):
            run.log_prob(torch.zeros(3, 2))


# --------------------------------------------------------------------------------------------------
# runs read back


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(tiny("train.steps=60"), run_dir, progress=False)
    return run_dir


def test_load_run_uses_the_ema_weights_by_default(trained_run):
    ckpt = latest_good(trained_run)
    ema, last = load_run(trained_run, device="cpu"), load_run(trained_run, device="cpu", use_ema=False)
    for key, value in ema.diffusion.model.state_dict().items():
        assert torch.equal(value, ckpt.state["ema"][key])
        assert torch.equal(last.diffusion.model.state_dict()[key], ckpt.state["model"][key])
    assert ema.step == 60 and ema.data_shape == (2,)
    assert torch.equal(ema.scaler.std, ckpt.state["scaler"]["std"])


def test_load_run_errors(tmp_path, trained_run):
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="holds no checkpoint; train it first"):
        load_run(tmp_path)
    with pytest.raises(RunError, match=r"shape \(3,\) per example but the run .* was trained on \(2,\)"):
        load_run(trained_run, device="cpu").log_prob(torch.zeros(4, 3))


@contextmanager
def float64(run):
    """``run`` computing in float64: its weights and every tensor the sampler creates. Batches of
    different sizes then agree to ~1e-12, so an agreement at 1e-9 tests that sample ``i`` does not
    depend on its batch, free of float32's batch-size-dependent rounding (~1e-6 relative per matrix
    product, amplified by the field's Lipschitz constant over the steps, CPU-dependent)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    run.diffusion.model.double()
    try:
        yield run
    finally:
        run.diffusion.model.float()
        torch.set_default_dtype(previous)


def test_ode_samples_do_not_depend_on_the_batch_size(trained_run):
    run = load_run(trained_run, device="cpu")
    whole = run.sample(24, sampler="ode", batch_size=24, seed=3)
    pieces = run.sample(24, sampler="ode", batch_size=5, seed=3)
    # dopri5 controls its error per batch, so different batches take different steps; the answers
    # agree to the solver's global error (~1e-2 here, where a barely trained field is stiff near eps),
    # relative to the state as its error control is (a few samples of such a field end near |x| ~ 100)
    assert torch.allclose(whole, pieces, rtol=1e-3, atol=3e-2)
    run.config = run.config.model_copy(
        update={"sample": run.config.sample.model_copy(update={"ode_method": "rk4"})}
    )
    with float64(run):
        whole = run.sample(24, sampler="ode", steps=10, batch_size=24, seed=3)
        pieces = run.sample(24, sampler="ode", steps=10, batch_size=7, seed=3)
        prefix = run.sample(6, sampler="ode", steps=10, batch_size=6, seed=3)
        other_seed = run.sample(24, sampler="ode", steps=10, seed=4)
    assert whole.dtype == torch.float64
    torch.testing.assert_close(pieces, whole, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prefix, whole[:6], rtol=1e-9, atol=1e-9)
    assert (whole - other_seed).abs().amax(1).min() > 1e-3


@pytest.mark.parametrize("sampler", ["pc", "em"])
def test_stochastic_samples_do_not_depend_on_the_batch_size(trained_run, sampler):
    """Step noise keyed by (seed, sample index): sample i is the same in any batch (float64, see above)."""
    run = load_run(trained_run, device="cpu")
    with float64(run):
        whole = run.sample(20, sampler=sampler, steps=8, seed=1, batch_size=20)
        pieces = run.sample(20, sampler=sampler, steps=8, seed=1, batch_size=3)
        tail = run.sample(20, sampler=sampler, steps=8, seed=1, batch_size=13)[13:]
        other_seed = run.sample(20, sampler=sampler, steps=8, seed=2, batch_size=20)
    torch.testing.assert_close(pieces, whole, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(tail, whole[13:], rtol=1e-9, atol=1e-9)
    assert (whole - other_seed).abs().amax(1).min() > 1e-3


def test_stochastic_samples_are_reproducible(trained_run):
    run = load_run(trained_run, device="cpu")
    a = run.sample(20, sampler="pc", steps=5, seed=1, batch_size=8)
    assert torch.equal(a, run.sample(20, sampler="pc", steps=5, seed=1, batch_size=8))
    assert not torch.equal(a, run.sample(20, sampler="pc", steps=5, seed=2, batch_size=8))


def test_annealed_langevin_samples_do_not_depend_on_the_batch_size(tmp_path):
    train(
        tiny("sde.kind=ncsn", "objective.kind=ncsn", "sde.n_levels=5", "train.steps=20"),
        tmp_path,
        progress=False,
    )
    run = load_run(tmp_path, device="cpu")
    with float64(run):
        whole = run.sample(12, sampler="ald", steps=4, seed=5, batch_size=12)
        pieces = run.sample(12, sampler="ald", steps=4, seed=5, batch_size=5)
    torch.testing.assert_close(pieces, whole, rtol=1e-9, atol=1e-9)


def test_log_likelihoods_are_in_data_units(tmp_path):
    """Data scaled by 4 (exact in floating point) train identically; log p shifts by -d log 4."""
    x = two_gaussians(512, torch.Generator().manual_seed(0)).double().numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x4.npy", 4 * x)
    for name in ("x", "x4"):
        train(tiny(f"data.path={tmp_path / name}.npy", "train.steps=20"), tmp_path / name, progress=False)
    run, run4 = load_run(tmp_path / "x", device="cpu"), load_run(tmp_path / "x4", device="cpu")
    points = torch.from_numpy(x[:16]).float()
    logp, logp4 = run.log_prob(points), run4.log_prob(4 * points)
    assert torch.allclose(logp4, logp - 2 * math.log(4), atol=1e-9)
    assert torch.allclose(run.scaler.log_det, -run.scaler.std.double().log().sum())
    assert isinstance(run.scaler, Standardizer)


# --------------------------------------------------------------------------------------------------
# crash and resume in real processes


def cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "scorefield", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **popen,
    )  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} appeared: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.005)


def test_sigkill_and_sigterm_then_resume_end_bitwise_equal(tmp_path):
    config = tiny("train.steps=600", "train.ckpt_every=50", "train.log_every=50", "train.batch_size=32")
    (tmp_path / "c.toml").write_text(to_toml(config))
    train_args = ["train", "--config", str(tmp_path / "c.toml"), "--quiet", "--out"]

    reference = cli(*train_args, str(tmp_path / "reference"))
    killed = cli(*train_args, str(tmp_path / "run"))
    wait_for(checkpoint_dir(tmp_path / "run") / "step-0000100.json", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert list_checkpoints(tmp_path / "run")[0] < config.train.steps  # killed mid-run

    resumed = cli(*train_args, str(tmp_path / "run"), "--resume")
    first = list_checkpoints(tmp_path / "run")[0]
    wait_for(checkpoint_dir(tmp_path / "run") / f"step-{first + 100:07d}.json", resumed)
    resumed.send_signal(signal.SIGTERM)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step" in err and "continue with --resume" in err
    stopped_at = int(err.split("at step ")[1].split(";")[0])
    assert list_checkpoints(tmp_path / "run")[0] == stopped_at < config.train.steps

    final = cli(*train_args, str(tmp_path / "run"), "--resume")
    for process in (reference, final):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert_bitwise_equal(final_state(tmp_path / "reference"), final_state(tmp_path / "run"))
