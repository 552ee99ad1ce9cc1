"""The digits preset trained in eager float32 and in bfloat16: what the speed costs, and what it buys.

Three runs of ``configs/digits_vp.toml`` (the training split of ``digits_split``), each read with its
network in its own setting: eager fp32 (the preset), compiled bf16 (the fastest setting of
``python -m bench throughput``) with the same 2500 steps, and compiled bf16 continued to the steps that
fp32's wall time buys at its measured speed (the preset's schedule is constant after warm-up, so
continuing the run is the longer run). The compiled run's wall time includes the compilation (seconds
from inductor's cache, minutes without). Runs live in ``runs/bench_precision/NAME`` and are resumed if
there (a wall time is that of the call that trained the run from scratch).

Reported: wall time, steps/s (the median over the metric lines after the first, which holds the
warm-up), the loss curve, the Fréchet distance of as many samples as the training split holds to the
test split under the project's judge and the independent one (``bench_digits.MLPJudge``), each as a
ratio to its floor, for three sampling seeds (their spread is the seed-to-seed spread the targets
name), and bits/dim of the test split by the probability-flow ODE (4 Hutchinson probes) with the
network in float32 for every run, so that the number compares the weights. The table is rewritten
after each run. ``SCOREFIELD_PRECISION_STEPS=N`` shortens the runs to N steps (the table says so);
``--quick`` trains a few steps: a smoke test whose numbers mean nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import torch

from bench import common
from bench.bench_digits import MLPJudge
from bench.common import markdown_table, one_thread, write_results
from scorefield.eval.classifier import (
    DigitsClassifier,
    dequantized_bits_per_dim,
    digits_split,
    floor,
    frechet_digits_distance,
    scale_digits,
    to_levels,
)
from scorefield.run.checkpoint import latest_good
from scorefield.run.config import load_config
from scorefield.run.finished import load_run
from scorefield.run.train import train

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "digits_vp.toml"
FASTEST = "compiled bf16"
FASTEST_OVERRIDES = ['train.precision="bf16"', "train.compile=true"]
LONGER = f"{FASTEST}, fp32's wall time"  # continues the FASTEST run
CONTINUES: dict[str, str] = {}  # setting -> the setting whose finished run it continues
CHUNK = 500  # steps per turn of the interleaved training
SEEDS = (0, 1, 2)
QUICK = ["train.steps=20", "train.ckpt_every=10", "train.log_every=10", "sample.steps=5"]
CURVE_AT = (100, 500, 1000, 1500, 2000, 2500)


def run_path(name: str, quick: bool) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in name)
    return ROOT / "runs" / ("bench_precision_quick" if quick else "bench_precision") / slug


def newest(name: str, quick: bool):
    """The newest good checkpoint of the setting's run, None if it has none."""
    run_dir = run_path(name, quick)
    return latest_good(run_dir) if run_dir.exists() else None


def train_interleaved(settings: dict[str, list[str]], steps: int, quick: bool) -> dict[str, float | None]:
    """Train each setting's run to ``steps`` in interleaved chunks of ``CHUNK`` steps (resumed runs are
    bitwise the uninterrupted ones), so that the machine's load falls on all alike; returns each run's
    training wall time, None for a run that existed before this call (its time would be partial).
    A setting named in ``CONTINUES`` starts as a copy of that setting's run."""
    walls: dict[str, float | None] = {}
    for name, base in CONTINUES.items():
        if name in settings and not run_path(name, quick).exists():
            shutil.copytree(run_path(base, quick), run_path(name, quick))
    for name in settings:
        walls[name] = None if newest(name, quick) is not None else 0.0
    chunk = 10 if quick else CHUNK
    for target in range(chunk, steps + chunk, chunk):
        for name, overrides in settings.items():
            done = newest(name, quick)
            if done is not None and done.step >= min(target, steps):
                continue
            config = load_config(
                CONFIG, [*(QUICK if quick else []), *overrides, f"train.steps={min(target, steps)}"]
            )
            start = time.perf_counter()
            result = train(config, run_path(name, quick), resume=True, progress=False)
            if result.interrupted:
                raise SystemExit(
                    f"training interrupted at step {result.step}; run the benchmark again to resume"
                )
            if walls[name] is not None:
                walls[name] += time.perf_counter() - start
    return walls


def curve(run_dir: Path) -> tuple[float, dict[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    rate = statistics.median(line["steps_per_s"] for line in lines[1:]) if len(lines) > 1 else float("nan")
    return rate, {line["step"]: line["loss"] for line in lines}


def evaluate(name, run_dir, wall, precision, compiled, quick, judges) -> tuple[list, dict[int, float]]:
    """One row of the table for the run in ``run_dir``, and its loss curve."""
    split, classifier, floor_fd, judge = judges
    rate, losses = curve(run_dir)
    run = load_run(run_dir, precision=precision, compile=compiled)
    n = 200 if quick else split.x_train.shape[0]
    x_test = scale_digits(split.x_test)
    ours, theirs, seconds = [], [], []
    for seed in SEEDS[:1] if quick else SEEDS:
        start = time.perf_counter()
        drawn = run.sample(n, seed=seed).reshape(-1, 1, 8, 8)
        seconds.append(time.perf_counter() - start)
        x = scale_digits(to_levels(drawn, run.config.data.dequantize))
        ours.append(frechet_digits_distance(x, x_test, classifier, allow_small=quick) / floor_fd)
        theirs.append(judge.distance(x) / judge.floor)
    sample_s = statistics.median(seconds)  # of 3 seeds: leaves out the first, which compiles
    fp32_run = load_run(run_dir)
    x_eval = split.x_test[:16] if quick else split.x_test
    bpd = dequantized_bits_per_dim(
        lambda x, r=fp32_run: r.log_prob(x.reshape(-1, 1, 8, 8), divergence="hutchinson", n_probes=4, seed=1),
        x_eval,
        torch.Generator().manual_seed(0),
    )
    row = [
        name,
        run.step,
        "resumed" if wall is None else wall,
        rate,
        sample_s,
        " / ".join(f"{v:.3f}" for v in ours),
        " / ".join(f"{v:.3f}" for v in theirs),
        f"{float(bpd.mean()):.4f} ± {float(bpd.std() / len(bpd) ** 0.5):.4f}",
    ]
    return row, losses


def write(rows, curves, judges, quick, steps) -> None:
    split, _, floor_fd, judge = judges
    n = 200 if quick else split.x_train.shape[0]
    header = [
        "setting",
        "steps",
        "training wall s",
        "steps/s (median)",
        f"s to sample {n} (median of seeds)",
        "FD / floor, project judge (seeds 0/1/2)",
        "FD / floor, MLPClassifier judge (seeds 0/1/2)",
        "bits/dim (fp32 network) ± s.e.",
    ]
    at = sorted({s for c in curves.values() for s in c if quick or s in CURVE_AT or s % 500 == 0})
    loss_rows = [[step, *[f"{c[step]:.4f}" if step in c else "" for c in curves.values()]] for step in at]
    preset = load_config(CONFIG)
    notes = (
        f"Floors: project judge {floor_fd:.3f}, MLPClassifier judge {judge.floor:.3f} (its test accuracy "
        f"{judge.accuracy:.3f}); goal: both ratios <= 1.5. Samples: the preset's sampler "
        f"({preset.sample.sampler}, {preset.sample.steps} steps) with the network in the run's own setting. "
        "The machine is shared: wall times and steps/s move with its load; compare them within one run of "
        "this benchmark."
    )
    if steps != preset.train.steps and not quick:
        notes += (
            f"\n\n**Shortened: {steps} steps instead of the preset's {preset.train.steps}** (the full runs "
            "did not fit the time left on the loaded machine). The full benchmark: `python -m bench precision`; "
            f"this one: `SCOREFIELD_PRECISION_STEPS={steps} python -m bench precision`."
        )
    if quick:
        notes += "\n\n**Quick mode: a smoke test; these numbers mean nothing.**"
    write_results(
        "precision",
        "Digits preset in eager float32 and compiled bfloat16",
        [
            ("Speed and quality", markdown_table(header, rows)),
            (
                "Loss curve (mean training loss of the logging interval before each step)",
                markdown_table(["step", *curves], loss_rows),
            ),
        ],
        notes,
    )


@one_thread
def main(quick: bool = False) -> None:
    split = digits_split()
    classifier = DigitsClassifier.pretrained()
    judges = (split, classifier, floor(classifier), MLPJudge(split))
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    steps = load_config(CONFIG, QUICK if quick else []).train.steps
    if os.environ.get("SCOREFIELD_PRECISION_STEPS"):  # a shortened run, where the full one takes too long
        steps = int(os.environ["SCOREFIELD_PRECISION_STEPS"])
    settings = {"eager fp32": ([], "fp32", False), FASTEST: (FASTEST_OVERRIDES, "bf16", True)}
    walls = train_interleaved({name: o for name, (o, _, _) in settings.items()}, steps, quick)
    rows, curves, rates = [], {}, {}
    for name, (_, precision, compiled) in settings.items():
        row, curves[name] = evaluate(
            name, run_path(name, quick), walls[name], precision, compiled, quick, judges
        )
        rates[name] = row[3]
        rows.append(row)
        write(rows, curves, judges, quick, steps)
    # the steps that fp32's time buys at the fastest setting's speed (steps/s: medians over the same
    # interleaved chunks)
    longer = int(round(steps * rates[FASTEST] / rates["eager fp32"], -1 if quick else -2))
    if longer <= steps:  # it was not faster here: there is nothing to spend
        return
    name = f"{LONGER} ({longer} steps)"
    CONTINUES[name] = FASTEST
    train_interleaved({name: FASTEST_OVERRIDES}, longer, quick)
    row, curves[name] = evaluate(name, run_path(name, quick), None, "bf16", True, quick, judges)
    rows.append(row)
    write(rows, curves, judges, quick, steps)
