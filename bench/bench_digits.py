"""Digits: sample quality and test bits/dim of the ``digits_vp`` preset, against honest references.

- Sample quality: the Fréchet distance between the classifier features (``scorefield.eval.classifier``)
  of generated images and of the test split, read against the floor (the training split's distance
  to the same test split: what fresh draws of the data score). As many samples are drawn as the
  training split holds, because the distance's upward bias depends on the sample count. The goal
  is a ratio within 1.5x of the floor, and all ten digits in the class histogram.
- A second, independent judge: the same distance in the features of the hidden layer of a
  scikit-learn ``MLPClassifier`` fitted to the training split's labels (``MLPJudge``), which shares
  neither architecture nor training with the project's classifier, against its own floor. A
  generator can match one judge's features without matching the data; agreement of both is the claim.
- Few-step sampling: the same distance for ``sample_fast`` (on its default grid and on the grid
  ``tune_grid`` fits to the run) and DPM-Solver++(2M) at 5, 8, 10 and 20 score evaluations, the mean over
  three sampling seeds (up to 8 evaluations ``sample_fast`` starts each sample from its cluster's
  Gaussian, which the run keeps; at 5 and 8 it is also run from ``t = 1``, as a caller without the
  data's moments runs it).
- Likelihood: bits/dim of the test split under uniform dequantization, by the probability-flow ODE
  with Hutchinson probes, ± the standard error over test images; against scikit-learn's
  ``GaussianMixture`` and ``KernelDensity`` fitted to the same dequantized training split.

The preset is trained on the training split of ``digits_split`` into ``runs/bench_digits``
(resumed if it is there), or a run is read from ``$SCOREFIELD_DIGITS_RUN`` (the table then says how
many test images that run was trained on). ``--quick`` trains a few steps and draws a few samples: a smoke test of
the code path whose numbers mean nothing.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench import common
from bench.common import fmt, markdown_table, write_results
from scorefield.datasets import load_data
from scorefield.eval.classifier import (
    DIGITS_SCALER,
    DigitsClassifier,
    baseline_bits_per_dim,
    class_histogram,
    dequantized_bits_per_dim,
    digits_split,
    floor,
    frechet_digits_distance,
    scale_digits,
    to_levels,
)
from scorefield.keyed import KeyedNoise
from scorefield.metrics import frechet_distance
from scorefield.multistep import GAUSSIAN_START_MAX_NFE, sample_fast
from scorefield.run.config import load_config
from scorefield.run.finished import GRIDS_FILE, load_run
from scorefield.run.train import train
from scorefield.viz import image_grid

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "digits_vp.toml"
QUICK = ["train.steps=20", "train.ckpt_every=20", "sample.steps=20", "sample.ode_method=euler"]


def trained_run(quick: bool) -> tuple[Path, float | None]:
    """The run directory and the seconds spent training it here (None when it was given)."""
    given = os.environ.get("SCOREFIELD_DIGITS_RUN")
    if given:
        return Path(given), None
    run_dir = ROOT / "runs" / ("bench_digits_quick" if quick else "bench_digits")
    config = load_config(CONFIG, list(QUICK if quick else ()))
    start = time.perf_counter()
    result = train(config, run_dir, resume=True, progress=False)
    if result.interrupted:
        raise SystemExit(f"training interrupted at step {result.step}; run the benchmark again to resume it")
    if load_run(run_dir).moments is None:  # its few-step rows would start at t = 1 and say nothing true
        raise SystemExit(
            f"{run_dir} was trained before runs kept the moments of their data (sample_fast's Gaussian "
            "start); move it away and run the benchmark again to retrain it"
        )
    return run_dir, time.perf_counter() - start


class MLPJudge:
    """Fréchet distances in the features of an independent judge: the ReLU hidden layer (128 units) of
    scikit-learn's ``MLPClassifier`` fitted (seeded, deterministic) to the training split's images in
    ``[-1, 1]`` and their digit labels. Its ``floor`` is the training split's distance to the test split."""

    def __init__(self, split, hidden: int = 128, seed: int = 0):
        from sklearn.neural_network import MLPClassifier

        x = scale_digits(split.x_train).flatten(1).numpy()
        self.model = MLPClassifier((hidden,), max_iter=400, random_state=seed).fit(x, split.y_train.numpy())
        self.accuracy = float(self.model.score(scale_digits(split.x_test).flatten(1).numpy(), split.y_test))
        self.x_test = scale_digits(split.x_test)
        self.floor = self.distance(scale_digits(split.x_train))

    def features(self, x: torch.Tensor):
        flat = x.flatten(1).double().numpy()
        return np.maximum(flat @ self.model.coefs_[0] + self.model.intercepts_[0], 0.0)

    def distance(self, x: torch.Tensor) -> float:
        """The distance of images ``x`` in ``[-1, 1]`` (``scale_digits``) to the test split."""
        return frechet_distance(self.features(x), self.features(self.x_test))


def seen_in_training(x_test: torch.Tensor, training_data: torch.Tensor) -> float:
    """The fraction of test images that occur, pixel for pixel, in the data the run was trained on."""
    train_rows = {tuple(row) for row in training_data.flatten(1).round().long().tolist()}
    return sum(tuple(row) in train_rows for row in x_test.flatten(1).long().tolist()) / x_test.shape[0]


FEW_SEEDS = (0, 1, 2)  # sampling seeds of the few-step table: the distance moves by ~0.5 between seeds
# tune_grid's search, smaller than `scorefield tune`'s defaults (256 draws, 200 iterations, 3 starts),
# which took over 35 minutes of a shared 2-core CPU for the 10-evaluation grid of this U-Net
TUNE_DRAWS, TUNE_STARTS = 64, 2


def sample_fast_from_one(run, n: int, nfe: int, seed: int) -> torch.Tensor:
    """``run.sample(n, sampler="fast", steps=nfe, seed=seed)`` without the Gaussian start: the same prior
    draws and clusters, spent on ``sample_fast``'s grid from ``t = 1`` (what a caller of ``sample_fast``
    without the data's moments gets)."""
    rows = torch.arange(n, device=run.device)
    x_T = run.diffusion.sde.prior_std * KeyedNoise(seed, rows).randn((n, *run.data_shape))
    score = run.score_functions(run.draw_clusters(seed, rows) if run.clusters is not None else None, 0.0)
    x, _ = sample_fast(score.at_time, run.diffusion.sde, x_T, nfe)
    return run.scaler.inverse_transform(x.cpu())


def few_step_rows(run, quick, n_samples, dequantized, x_test, classifier, floor_fd, timings) -> list[list]:
    """Fréchet distance at 5, 8, 10 and 20 score evaluations, over ``FEW_SEEDS``: ``sample_fast`` on its default
    grid (and up to ``GAUSSIAN_START_MAX_NFE`` on its grid from ``t = 1``), the ``dpm`` sampler (DPM-Solver++2M), then ``sample_fast`` on the grid ``Run.tune_grid`` fits to the
    run (what ``scorefield tune --nfe N --n 64 --iterations 100 --starts 2`` stores; its cost is in the
    wall-time table)."""
    (run.run_dir / GRIDS_FILE).unlink(missing_ok=True)  # a grid a previous run of this bench stored
    budgets, seeds = ((5, 10), FEW_SEEDS[:1]) if quick else ((5, 8, 10, 20), FEW_SEEDS)
    configs = [
        ("fast", "sample_fast (UniPC + UniC), default grid"),
        ("dpm", "DPM-Solver++2M (the dpm sampler)"),
    ]
    rows = []

    def measure(sampler: str, label: str, nfe: int) -> None:
        steps = nfe if sampler != "dpm" else nfe - 1  # dpm: nfe - 1 steps + the denoising evaluation
        values, start = [], time.perf_counter()
        for seed in seeds:
            if sampler == "fast from 1":
                drawn = sample_fast_from_one(run, n_samples, nfe, seed).reshape(-1, 1, 8, 8)
            else:
                drawn = run.sample(n_samples, sampler=sampler, steps=steps, seed=seed).reshape(-1, 1, 8, 8)
            x_few = scale_digits(to_levels(drawn, dequantized))
            values.append(frechet_digits_distance(x_few, x_test, classifier, allow_small=quick))
        mean = sum(values) / len(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        wall = (time.perf_counter() - start) / len(seeds)
        per_seed = " / ".join(f"{v:.2f}" for v in values)
        rows.append([label, nfe, f"{mean:.3f} ± {sd:.3f}", per_seed, mean / floor_fd, wall])

    for nfe in budgets:
        for sampler, label in configs:
            measure(sampler, label, nfe)
        if nfe <= GAUSSIAN_START_MAX_NFE:  # above, the default grid starts at t = 1 already
            measure("fast from 1", "sample_fast (UniPC + UniC), default grid from t = 1 (no moments)", nfe)
    for nfe in budgets:
        start = time.perf_counter()
        run.tune_grid(nfe, n=16 if quick else TUNE_DRAWS, max_iter=5 if quick else 100, n_starts=TUNE_STARTS)
        timings.append(
            (
                f"tune_grid for {nfe} evaluations ({TUNE_DRAWS} prior draws, {TUNE_STARTS} starts)",
                time.perf_counter() - start,
            )
        )
        measure("fast", "sample_fast (UniPC + UniC), grid fitted to the run (tune_grid)", nfe)
    return rows


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def main(quick: bool = False) -> None:
    split = digits_split()
    timings: list[tuple[str, float]] = []

    start = time.perf_counter()
    classifier = DigitsClassifier.pretrained()
    timings.append(("classifier (train or load)", time.perf_counter() - start))
    floor_fd = floor(classifier)

    run_dir, train_s = trained_run(quick)
    if train_s is not None:
        timings.append(("training the preset", train_s))
    run = load_run(run_dir)
    seen = seen_in_training(split.x_test, load_data(run.config.data))

    n_samples = 200 if quick else split.x_train.shape[0]
    start = time.perf_counter()
    samples = run.sample(n_samples, seed=0).reshape(-1, 1, 8, 8)  # pixel units
    timings.append(
        (f"sampling {n_samples} images ({run.config.sample.sampler})", time.perf_counter() - start)
    )
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    image_grid(samples[:100], nrow=10, value_range=(0, 17), path=common.RESULTS / "digits_samples.png")
    dequantized = bool(getattr(run.config.data, "dequantize", False))
    x_samples, x_test = scale_digits(to_levels(samples, dequantized)), scale_digits(split.x_test)
    fd = frechet_digits_distance(x_samples, x_test, classifier, allow_small=quick)
    fd_raw = frechet_digits_distance(scale_digits(samples), x_test, classifier, allow_small=quick)
    hist = class_histogram(x_samples, classifier)
    judge = MLPJudge(split)
    fd_judge = judge.distance(x_samples)

    few_rows = few_step_rows(run, quick, n_samples, dequantized, x_test, classifier, floor_fd, timings)
    few = markdown_table(
        [
            "sampler",
            "NFE",
            "Fréchet distance (mean ± sd over seeds)",
            "per seed",
            "ratio to floor",
            "seconds",
        ],
        few_rows,
    )

    x_eval = split.x_test[:16] if quick else split.x_test
    n_probes = 1 if quick else 4
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    bpd_ode = dequantized_bits_per_dim(
        lambda x: run.log_prob(
            x.reshape(-1, *run.data_shape), divergence="hutchinson", n_probes=n_probes, seed=1
        ),
        x_eval,
        generator,
    )
    timings.append((f"ODE likelihood of {x_eval.shape[0]} test images", time.perf_counter() - start))
    start = time.perf_counter()
    grids = {"n_components": (1, 5), "bandwidths": (0.1, 0.2)} if quick else {}
    baselines = baseline_bits_per_dim(split.x_train, x_eval, DIGITS_SCALER, **grids)
    timings.append(("fitting and scoring the baselines", time.perf_counter() - start))

    quality = markdown_table(
        ["quantity", "value"],
        [
            ["classifier test accuracy", classifier.test_accuracy],
            [f"Fréchet distance, {n_samples} samples on the 17 levels vs test split ({x_test.shape[0]})", fd],
            [f"floor: training split ({split.x_train.shape[0]}) vs test split", floor_fd],
            ["ratio (goal <= 1.5)", fd / floor_fd],
            ["Fréchet distance of the samples as drawn (not put on the levels)", fd_raw],
            [
                f"independent judge (MLPClassifier hidden layer, test accuracy {judge.accuracy:.3f}): distance",
                fd_judge,
            ],
            ["independent judge: floor (training split vs test split)", judge.floor],
            ["independent judge: ratio (goal <= 1.5)", fd_judge / judge.floor],
            ["digits present in the samples", int((hist > 0).sum())],
        ],
    )
    histogram = markdown_table([str(k) for k in range(10)], [[f"{v:.3f}" for v in hist.tolist()]])
    rows = []
    for name, bpd, detail in [
        (f"score model, probability-flow ODE ({n_probes} Hutchinson probes)", bpd_ode, f"step {run.step}"),
        *[
            (f"{n} (held-out choice)", r["bpd"], f"{k} = {r['param']}")
            for (n, r), k in zip(baselines.items(), ("components", "bandwidth"), strict=True)
        ],  # fmt: skip
        ("uniform on the 17 levels", torch.full((1,), math.log2(17)), "log2 17"),
    ]:
        mean, se = mean_and_stderr(bpd) if bpd.numel() > 1 else (float(bpd), 0.0)
        rows.append([name, fmt(mean), fmt(se, 2), detail])
    likelihood = markdown_table(["model", "bits/dim", "s.e.", ""], rows)
    times = markdown_table(["stage", "seconds"], [[name, f"{s:.1f}"] for name, s in timings])
    notes = (
        f"Run: `{run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir}` "
        f"({run.config.data.name}, step {run.step}). Samples: `bench/results/digits_samples.png`."
    )
    if seen > 0.05:
        notes += (
            f"\n\n**{seen:.0%} of the test images are in the run's training data: its bits/dim on them is "
            "not a held-out number.** Train on the training split of `scorefield.datasets.digits_split`."
        )
    if quick:
        notes += "\n\n**Quick mode: a smoke test; these numbers mean nothing.**"
    write_results(
        "digits",
        "Digits: sample quality and bits/dim",
        [
            ("Sample quality", quality),
            ("Class histogram of the samples", histogram),
            (
                f"Few-step samplers: Fréchet distance of {n_samples} samples at a budget of score evaluations",
                few,
            ),
            (f"Bits/dim on the test split ({x_eval.shape[0]} images, uniform dequantization)", likelihood),
            ("Wall time", times),
        ],
        notes,
    )
