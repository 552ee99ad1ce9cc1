"""The subcommands that train a run and use it: ``train``, ``sample``, ``inpaint``, ``likelihood``,
``anomaly``, ``tune`` and ``demo``. Each checks its inputs and outputs before any work, then calls the
library (``scorefield.run``) and writes its results; ``plot`` is in ``cli.plots``.
"""

from __future__ import annotations

import math
import signal
import sys

import numpy as np
import torch

from ..conditional import inpaint_settings
from ..datasets import csv_header
from ..run.build import check_memory
from ..run.config import load_config
from ..run.distributed import distributed
from ..run.finished import GRIDS_FILE, load_run
from ..run.train import run_lock, train
from .io import (
    PROG,
    UsageError,
    check_writable,
    device_flag,
    is_main_process,
    read_data,
    read_labels,
    read_mask,
    refuse_non_finite,
    say,
    write_array,
)
from .plots import grid_scale, write_image_grid

__all__ = ["cmd_anomaly", "cmd_demo", "cmd_inpaint", "cmd_likelihood", "cmd_sample", "cmd_train", "cmd_tune"]


def cmd_train(args) -> int:
    config_file = args.config  # else: the run's own config when resuming, the defaults
    if config_file is None and args.resume and (args.out / "config.toml").is_file():
        config_file = args.out / "config.toml"
    overrides = [*args.set, f'train.device="{args.device}"'] if args.device else list(args.set)
    if args.header is not None:
        overrides.append(f"data.header={str(args.header).lower()}")
    config = load_config(config_file, overrides)
    device_flag(config.train.device)
    check_writable(args.out, folder=True)
    result = train(config, args.out, resume=args.resume, force=args.force, progress=not args.quiet)
    if result.interrupted:
        name = signal.Signals(result.interrupted).name
        say(
            f"{PROG}: stopped by {name} at step {result.step}; checkpoint {result.checkpoint}; "
            "continue with --resume",
            sys.stderr,
        )
        return 128 + result.interrupted
    path = config.data.path
    data = f" on {result.examples} rows" + (f" of {_table(path, config.data.header)}" if path else "")
    say(f"trained {args.out} to step {result.step}{data}; checkpoint {result.checkpoint}")
    return 0


def _table(path, header: bool | None, names: tuple[str, ...] | None = None) -> str:
    """``path`` and, for a CSV, whether a header was read and what it named."""
    if not str(path).lower().endswith(".csv"):
        return str(path)
    names = csv_header(path, header) if names is None and header is not False else names
    return f"{path} ({'header: ' + ', '.join(names) if names else 'no header line'})"


def _budget(args) -> None:
    """``--nfe N`` is ``--sampler fast --steps N``; it cannot be combined with another sampler or ``--steps``."""
    if args.nfe is None:
        return
    if args.sampler not in (None, "fast") or args.steps is not None:
        raise UsageError("--nfe sets the budget of sample_fast; leave out --sampler and --steps")
    if args.nfe < 2:
        raise UsageError(f"--nfe must be at least 2 score evaluations, got {args.nfe}")
    args.sampler, args.steps = "fast", args.nfe


def _label(args, run, n: int | None = None, chosen: bool = False) -> int | torch.Tensor | None:
    """``--label`` as a class index of ``run``, or ``--labels`` (inpaint: a file of one per row of its
    ``n``) as a tensor of them, checked before any sampling; None without either. ``chosen``: without
    either, the run chooses each row's class (inpaint), which ``--guidance`` may weigh."""
    labels = getattr(args, "labels", None)  # only inpaint has --labels
    if not (np.isfinite(args.guidance) and args.guidance >= 0):
        raise UsageError(f"--guidance must be a finite number >= 0, got {args.guidance}")
    if args.label is None and labels is None:
        if args.guidance and not chosen:
            raise UsageError("--guidance weighs the samples of one class: give --label too")
        return None
    if args.label is not None and labels is not None:
        raise UsageError("give --label (one class for every row) or --labels (one per row), not both")
    if labels is not None:
        return run.row_labels(read_labels(labels, n), n)
    return run.label_index(args.label)


def _describe_label(args, run, label: int | torch.Tensor | None, chosen: bool = False) -> str:
    if label is None and not chosen:
        return ""
    if label is None:
        text = ", each row as the class it most probably belongs to given its observed cells"
    elif isinstance(label, torch.Tensor):
        text = f", each row as the class {args.labels} gives it"
    else:
        text = f", class {run.classes[label]!r} (label {label})" if run.classes else f", label {label}"
    return text + (f", guidance {args.guidance:g}" if args.guidance else "")


def cmd_sample(args) -> int:
    _budget(args)
    images = args.out.suffix.lower() == ".png"
    array_path = args.out.with_suffix(".npy") if images else args.out
    check_writable(array_path)
    with distributed(args.device or "auto") as (d, device):
        run = load_run(
            args.run, device=device, use_ema=not args.last, precision=args.precision, compile=args.compile
        )
        if images and len(run.data_shape) != 3:
            raise UsageError(
                f"--out {args.out} asks for an image grid; the run's data have shape {run.data_shape}"
            )
        if len(run.data_shape) == 3:
            check_writable(array_path.with_suffix(".png"))
        scale = grid_scale(run, args.n, args.grid_scale)
        label = _label(args, run)
        check_memory(
            4.0 * 3 * args.n * math.prod(run.data_shape), f"--n {args.n} samples", "pass a smaller --n"
        )
        x = run.sample(
            args.n, args.sampler, args.steps, args.seed, args.batch_size, progress=not args.quiet,
            label=label, guidance=args.guidance,
        )  # fmt: skip
        written = [array_path]
        refuse_non_finite(x.numpy(), "samples")
        if d.main:
            write_array(array_path, x.numpy(), run.columns)
            if len(run.data_shape) == 3:  # images: a grid next to the array
                written.append(array_path.with_suffix(".png"))
                write_image_grid(written[-1], run, x, scale)
    sampler = args.sampler or run.config.sample.sampler
    if sampler == "fast":
        sampler = f"fast, {args.steps or run.config.sample.steps} score evaluations"
    sampler += _describe_label(args, run, label)
    say(f"wrote {args.n} samples ({sampler}) to {' and '.join(str(p) for p in written)}")
    return 0


def cmd_inpaint(args) -> int:
    """Fill the cells of ``--data`` that ``--mask`` marks 0 given those it marks 1, which come back as given."""
    args.nfe, args.resample, args.particles = inpaint_settings(args.nfe, args.resample, args.particles)
    if args.particles > 1 and args.resample != 1:
        raise UsageError(
            f"--particles {args.particles} replaces RePaint's resampling: drop --resample {args.resample}"
        )
    if args.nfe < args.resample + 1:
        raise UsageError(
            f"--nfe {args.nfe} is too small for --resample {args.resample}: each step costs --resample score "
            f"evaluations and the final denoising one more; pass --nfe >= {args.resample + 1}"
        )
    check_writable(args.out)
    with distributed(args.device or "auto") as (d, device):
        run = load_run(
            args.run, device=device, use_ema=not args.last, precision=args.precision, compile=args.compile
        )
        images = len(run.data_shape) == 3
        if images:
            check_writable(args.out.with_suffix(".png"))
        # float64, so that the observed cells come back exactly as the file gives them
        x, names = read_data(args.data, run.data_shape, args.header, torch.float64)
        run.check_columns(names, args.data)
        run.check_data(x)
        mask, mask_names = read_mask(args.mask, x)
        run.check_columns(mask_names, args.mask)
        if not bool(mask.any()):
            raise UsageError(
                f"mask {args.mask} marks every cell 0 (to fill): there is nothing to condition on; "
                "draw such rows with `scorefield sample`"
            )
        class_run = bool(run.config.model.num_classes) and run.clusters is None
        if args.null_label and not class_run:
            raise UsageError(
                "--null-label is the unconditional model of a class-conditional run; this run has none"
            )
        chosen = class_run and not args.null_label and run.component_moments is not None
        label = _label(args, run, x.shape[0], chosen)
        if args.null_label and label is not None:
            raise UsageError(
                "--null-label completes rows from p(x), with no class: drop --label and --labels"
            )
        filled = run.inpaint(
            x, mask, args.nfe, args.resample, args.seed, args.batch_size, progress=not args.quiet,
            label=label, guidance=args.guidance, particles=args.particles, choose=not args.null_label,
        )  # fmt: skip
        written = [args.out]
        refuse_non_finite(filled.numpy(), "completed rows")
        if d.main:
            write_array(args.out, filled.numpy(), run.columns)
            if images:
                written.append(args.out.with_suffix(".png"))
                write_image_grid(written[-1], run, filled)
    missing = ~mask.reshape(mask.shape[0], -1)
    used = (args.nfe - 1) // args.resample * args.resample + 1 if bool(missing.any()) else 0
    say(
        f"filled {int(missing.sum())} of {missing.numel()} cells in {int(missing.any(1).sum())} of "
        f"{missing.shape[0]} rows of {_table(args.data, args.header, names)} ({used} score evaluations per row, "
        + (f"{args.particles} particles" if args.particles > 1 else f"resample {args.resample}")
        + f"{_describe_label(args, run, label, chosen)}); wrote {' and '.join(str(p) for p in written)}"
    )
    return 0


def _log_likelihoods(args) -> tuple[torch.Tensor, object, str]:
    """Log-likelihoods of the rows of ``--data`` under the run, once the data and ``--out`` are checked
    (refused when one is not finite), the run, and the data file described."""
    if args.out is not None:
        check_writable(args.out)
    with distributed(args.device or "auto") as (_, device):
        run = load_run(args.run, device=device, precision=args.precision, compile=args.compile)
        x, names = read_data(args.data, run.data_shape, args.header)
        run.check_columns(names, args.data)
        run.check_data(x)
        logp = run.log_prob(x, args.divergence, args.probes, args.seed, args.batch_size, args.clusters)
    refuse_non_finite(logp.numpy(), "log-likelihoods")
    return logp, run, _table(args.data, args.header, names)


def cmd_likelihood(args) -> int:
    logp, run, table = _log_likelihoods(args)
    dims = int(np.prod(run.data_shape))
    mean = float(logp.mean())
    say(
        f"mean log-likelihood {mean:.4f} nats per example ({-mean / (dims * np.log(2)):.4f} bits/dim) "
        f"over {logp.shape[0]} rows of {table}"
    )
    if args.out is not None and is_main_process():
        write_array(args.out, {"log_likelihood": logp.numpy()})
    return 0


def cmd_anomaly(args) -> int:
    logp, _, table = _log_likelihoods(args)
    score = -logp.numpy()
    top = np.argsort(-score)[: args.top]
    say(
        f"anomaly score (-log p) mean {score.mean():.4f} over {score.shape[0]} rows of {table}; highest: "
        + ", ".join(f"row {i} ({score[i]:.3f})" for i in top)
    )
    if args.out is not None and is_main_process():
        write_array(args.out, {"row": np.arange(score.shape[0]), "anomaly_score": score})
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    results = run_demo(args.out, args.quick, progress=not args.quiet, seed=args.seed)
    say(
        f"wrote {args.out / 'report.html'} and {args.out / 'results.json'} ({results['wall_s']['total']:.0f} s)"
    )
    return 0


def cmd_tune(args) -> int:
    """Fit sample_fast's time grid for ``--nfe`` evaluations to the run and store it in the run directory."""
    if args.nfe < 2:
        raise UsageError(f"--nfe must be at least 2 score evaluations, got {args.nfe}")
    run = load_run(args.run, device=args.device)
    check_writable(run.run_dir / GRIDS_FILE)
    with run_lock(run.run_dir):  # it writes into the run directory: not while a train of it runs
        info = run.tune_grid(
            args.nfe, n=args.n, seed=args.seed, max_iter=args.iterations, n_starts=args.starts
        )
    say(
        f"tuned the grid for {args.nfe} score evaluations: RMS distance to the converged ODE "
        f"{info['rms_default']:.4g} -> {info['rms']:.4g} over {args.n} prior draws; stored in {info['path']} "
        f"(`scorefield sample --nfe {args.nfe}` uses it)"
    )
    return 0
