"""The digits preset trained in eager float32 and in faster settings: what the speed costs in quality.

Each setting trains ``configs/digits_vp.toml`` (the training split of ``digits_split``) into
``runs/bench_precision/NAME`` (resumed if it is there; the wall time is that of the call that trained
it, kept beside the run) and is read with its network in the same setting. Reported: wall time,
steps/s (the median over the run's metric lines after the first, which holds the warm-up), the loss
curve, the Fréchet distance of as many samples as the training split holds to the test split under
the project's judge and the independent one (``bench_digits.MLPJudge``), each as a ratio to its floor,
over three sampling seeds (their spread is the seed-to-seed spread the targets name), and bits/dim of
the test split by the probability-flow ODE with the network in float32 for every run, so that the
number compares the weights. ``--quick`` trains a few steps: a smoke test whose numbers mean nothing.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from bench import common
from bench.bench_digits import MLPJudge
from bench.common import markdown_table, write_results
from scorefield.eval.classifier import (
    DigitsClassifier,
    dequantized_bits_per_dim,
    digits_split,
    floor,
    frechet_digits_distance,
    scale_digits,
    to_levels,
)
from scorefield.files import atomic_write
from scorefield.run.checkpoint import latest_good
from scorefield.run.config import load_config
from scorefield.run.finished import load_run
from scorefield.run.train import train

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "digits_vp.toml"
# name: the overrides of the setting
SETTINGS = {
    "eager fp32": [],
    "eager bf16": ['train.precision="bf16"'],
    "compiled bf16": ['train.precision="bf16"', "train.compile=true"],
}
SEEDS = (0, 1, 2)
QUICK = ["train.steps=20", "train.ckpt_every=10", "train.log_every=10", "sample.steps=5"]
CURVE_AT = (100, 500, 1000, 1500, 2000, 2500)


def trained(name: str, overrides: list[str], quick: bool) -> tuple[Path, float | None]:
    slug = name.replace(" ", "_")
    run_dir = ROOT / "runs" / ("bench_precision_quick" if quick else "bench_precision") / slug
    config = load_config(CONFIG, [*overrides, *(QUICK if quick else [])])
    timing = run_dir / "bench_wall_seconds.json"
    before = latest_good(run_dir) if run_dir.exists() else None
    if before is not None and before.step >= config.train.steps:
        return run_dir, json.loads(timing.read_text())["seconds"] if timing.exists() else None
    start = time.perf_counter()
    result = train(config, run_dir, resume=True, progress=False)
    if result.interrupted:
        raise SystemExit(f"training interrupted at step {result.step}; run the benchmark again to resume it")
    wall = time.perf_counter() - start if before is None else None  # a resumed run's time is partial
    atomic_write(timing, json.dumps({"seconds": wall}).encode())
    return run_dir, wall


def curve(run_dir: Path) -> tuple[float, dict[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    rate = statistics.median(line["steps_per_s"] for line in lines[1:]) if len(lines) > 1 else float("nan")
    return rate, {line["step"]: line["loss"] for line in lines}


def main(quick: bool = False) -> None:
    split = digits_split()
    classifier = DigitsClassifier.pretrained()
    floor_fd = floor(classifier)
    judge = MLPJudge(split)
    x_test = scale_digits(split.x_test)
    n = 200 if quick else split.x_train.shape[0]
    rows, curves = [], {}
    for name, overrides in SETTINGS.items():
        run_dir, wall = trained(name, overrides, quick)
        rate, losses = curve(run_dir)
        curves[name] = losses
        precision = "bf16" if any("bf16" in o for o in overrides) else "fp32"
        run = load_run(run_dir, precision=precision, compile=any("compile" in o for o in overrides))
        ours, theirs = [], []
        start = time.perf_counter()
        for seed in SEEDS[:1] if quick else SEEDS:
            drawn = run.sample(n, seed=seed).reshape(-1, 1, 8, 8)
            x = scale_digits(to_levels(drawn, run.config.data.dequantize))
            ours.append(frechet_digits_distance(x, x_test, classifier, allow_small=quick) / floor_fd)
            theirs.append(judge.distance(x) / judge.floor)
        sample_s = (time.perf_counter() - start) / len(ours)
        fp32_run = load_run(run_dir)
        x_eval = split.x_test[:16] if quick else split.x_test
        bpd = dequantized_bits_per_dim(
            lambda x, r=fp32_run: r.log_prob(
                x.reshape(-1, 1, 8, 8), divergence="hutchinson", n_probes=4, seed=1
            ),
            x_eval,
            torch.Generator().manual_seed(0),
        )
        rows.append(
            [
                name,
                run.step,
                "resumed" if wall is None else wall,
                rate,
                sample_s,
                " / ".join(f"{v:.3f}" for v in ours),
                " / ".join(f"{v:.3f}" for v in theirs),
                f"{float(bpd.mean()):.4f} ± {float(bpd.std() / len(bpd) ** 0.5):.4f}",
            ]
        )
    header = [
        "setting",
        "steps",
        "training wall s",
        "steps/s (median)",
        f"s to sample {n}",
        "FD / floor, project judge (seeds 0/1/2)",
        "FD / floor, MLPClassifier judge",
        "bits/dim (fp32 network) ± s.e.",
    ]
    steps = sorted({s for c in curves.values() for s in c if quick or s in CURVE_AT})
    loss_rows = [
        [step, *[f"{curves[name].get(step, float('nan')):.4f}" for name in SETTINGS]] for step in steps
    ]
    notes = (
        f"Floors: project judge {floor_fd:.3f}, MLPClassifier judge {judge.floor:.3f} (its test accuracy "
        f"{judge.accuracy:.3f}). Samples: the preset's sampler ({load_config(CONFIG).sample.sampler}, "
        f"{load_config(CONFIG).sample.steps} steps) with the network in the run's own setting. The machine "
        "is shared: wall times and steps/s move with its load; compare them within one run of this benchmark."
    )
    if quick:
        notes += "\n\n**Quick mode: a smoke test; these numbers mean nothing.**"
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    write_results(
        "precision",
        "Digits preset in float32 and in faster settings",
        [
            ("Speed and quality", markdown_table(header, rows)),
            (
                "Loss curve (mean training loss of the 50 steps before each step)",
                markdown_table(["step", *SETTINGS], loss_rows),
            ),
        ],
        notes,
    )
