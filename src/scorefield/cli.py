"""The ``scorefield`` command: train, sample, likelihood, anomaly, plot, demo.

This is the only composition root: it reads files and flags, builds configs and runs, and writes
results. A mistake in the input (a bad flag, an unknown config key, a value of the wrong type,
sigma_min >= sigma_max, a missing file, NaN or Inf in the data, data of the wrong shape for a run,
a missing or corrupt checkpoint, an existing run directory) ends with one line on stderr,
``scorefield: error: ...``, and exit status 2; results are written only once complete, atomically,
so a failure never damages a good file. Under torchrun every subcommand splits its work over the
processes and only process 0 writes; there, spell ``--run`` as ``--run-dir`` and ``--n`` as
``--num-samples``, because torchrun's own parser claims abbreviations of its options
(``--run-path``, ``--nnodes``, ...) anywhere on the line.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, atomic_write
from .config import ConfigError, load_config
from .datasets import load_data, load_table
from .train import SAMPLERS, RunError, TrainingError, distributed, load_run, train

__all__ = ["main"]

PROG = "scorefield"
PLOTS = ("samples", "loss", "field", "denoise", "langevin")
ARRAY_SUFFIXES = (".npy", ".csv")
GRID_MAX = 256  # samples shown in the PNG grid that `sample` writes for image runs


class UsageError(Exception):
    """Bad input on the command line; reported as one line with exit status 2."""


USER_ERRORS = (UsageError, ConfigError, CheckpointError, RunError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _say(message: str, stream=None) -> None:
    if _is_main_process():
        print(message, file=stream or sys.stdout, flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _output_path(suffixes: tuple[str, ...]):
    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r} must end in {' or '.join(suffixes)}")
        return path

    return parse


# --------------------------------------------------------------------------------------------------
# reading and writing arrays


def _read_data(path: Path, data_shape: tuple[int, ...]) -> torch.Tensor:
    """A data file as ``[N, *data_shape]`` (a flat row is reshaped to an image of the run's shape)."""
    try:
        x = load_table(path)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    numel = int(np.prod(data_shape))
    if len(data_shape) > 1 and x.shape[1] == numel:
        x = x.reshape(-1, *data_shape)
    return x


def _write_array(path: Path, columns: dict[str, np.ndarray] | np.ndarray) -> None:
    """``.npy``: the array; ``.csv``: a header line and one row per example. Written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        array = np.stack(list(columns.values()), axis=1) if isinstance(columns, dict) else columns
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        atomic_write(path, buffer.getvalue())
        return
    if isinstance(columns, dict):
        header, rows = list(columns), np.stack(list(columns.values()), axis=1)
    else:
        rows = columns.reshape(columns.shape[0], -1)
        header = [f"x{i}" for i in range(rows.shape[1])]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows.tolist())
    atomic_write(path, text.getvalue().encode())


# --------------------------------------------------------------------------------------------------
# subcommands


def _cmd_train(args) -> int:
    config_file = args.config  # else: the run's own config when resuming, the defaults when not
    if config_file is None and args.resume and (args.out / "config.toml").is_file():
        config_file = args.out / "config.toml"
    config = load_config(config_file, args.set)
    result = train(config, args.out, resume=args.resume, force=args.force, progress=not args.quiet)
    if result.interrupted:
        name = signal.Signals(result.interrupted).name
        _say(
            f"{PROG}: stopped by {name} at step {result.step}; checkpoint {result.checkpoint}; "
            "continue with --resume",
            sys.stderr,
        )
        return 128 + result.interrupted
    _say(f"trained {args.out} to step {result.step}; checkpoint {result.checkpoint}")
    return 0


def _write_image_grid(path: Path, run, x: torch.Tensor) -> None:
    """The first ``GRID_MAX`` samples, in the model's ``[-1, 1]`` range, tiled in a square PNG, atomically."""
    from .viz import image_grid

    shown = x[:GRID_MAX]
    grid = image_grid(
        run.scaler.transform(shown), nrow=math.ceil(math.sqrt(shown.shape[0])), value_range=(-1.0, 1.0)
    )
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def _cmd_sample(args) -> int:
    images = args.out.suffix.lower() == ".png"
    with distributed(args.device or "auto") as (d, device):
        run = load_run(args.run, device=device, use_ema=not args.last)
        if images and len(run.data_shape) != 3:
            raise UsageError(
                f"--out {args.out} asks for an image grid; the run's data have shape {run.data_shape}"
            )
        x = run.sample(args.n, args.sampler, args.steps, args.seed, args.batch_size, progress=not args.quiet)
        array_path = args.out.with_suffix(".npy") if images else args.out
        written = [array_path]
        if d.main:
            _write_array(array_path, x.numpy())
            if len(run.data_shape) == 3:  # images: a grid next to the array
                written.append(array_path.with_suffix(".png"))
                _write_image_grid(written[-1], run, x)
    sampler = args.sampler or run.config.sample.sampler
    _say(f"wrote {args.n} samples ({sampler}) to {' and '.join(str(p) for p in written)}")
    return 0


def _log_likelihoods(args) -> tuple[torch.Tensor, object]:
    with distributed(args.device or "auto") as (_, device):
        run = load_run(args.run, device=device)
        x = _read_data(args.data, run.data_shape)
        run.check_data(x)
        return run.log_prob(x, args.divergence, args.probes, args.seed, args.batch_size), run


def _cmd_likelihood(args) -> int:
    logp, run = _log_likelihoods(args)
    dims = int(np.prod(run.data_shape))
    mean = float(logp.mean())
    _say(
        f"mean log-likelihood {mean:.4f} nats per example ({-mean / (dims * np.log(2)):.4f} bits/dim) "
        f"over {logp.shape[0]} rows of {args.data}"
    )
    if args.out is not None and _is_main_process():
        _write_array(args.out, {"log_likelihood": logp.numpy()})
    return 0


def _cmd_anomaly(args) -> int:
    logp, _ = _log_likelihoods(args)
    score = -logp.numpy()
    top = np.argsort(-score)[: args.top]
    _say(
        f"anomaly score (-log p) mean {score.mean():.4f} over {score.shape[0]} rows; highest: "
        + ", ".join(f"row {i} ({score[i]:.3f})" for i in top)
    )
    if args.out is not None and _is_main_process():
        _write_array(args.out, {"row": np.arange(score.shape[0]), "anomaly_score": score})
    return 0


def _cmd_plot(args) -> int:
    from . import viz

    run = load_run(args.run, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_data(run.config.data)
    written = []
    for what in args.what:
        path = args.out / (f"{what}.gif" if what == "langevin" else f"{what}.png")
        if what == "loss":
            metrics = run.run_dir / "metrics.jsonl"
            if not metrics.is_file():
                raise UsageError(f"{metrics} does not exist; the run has logged no metrics")
            figure = viz.plot_loss_curve(metrics)
        elif what == "samples":
            samples = run.sample(args.n, args.sampler, args.steps, args.seed)
            figure = viz.plot_samples(samples, data[: args.n])
        elif what in ("field", "denoise", "langevin"):
            figure = _plot_2d(viz, run, data, what, path, args)
        if figure is not None:
            figure.savefig(path, dpi=110, bbox_inches="tight")
        written.append(str(path))
    _say("wrote " + ", ".join(written))
    return 0


def _plot_2d(viz, run, data: torch.Tensor, what: str, path: Path, args):
    """The score field and the sampling path in the plane of 2-D data (data units); the denoising strip,
    in the model's standardised (or [-1, 1] image) space, for points and images alike."""
    if run.data_shape != (2,) and what != "denoise":
        raise UsageError(f"--what {what} needs 2-D data; the run's data have shape {run.data_shape}")
    setup, scaler = run.setup, run.scaler
    std = scaler.std.to(run.device)

    def to_z(x: torch.Tensor) -> torch.Tensor:
        return scaler.transform(x.cpu()).to(run.device)

    eps = run.config.sample.eps
    if what == "field":

        def score_x(x: torch.Tensor) -> torch.Tensor:  # s_x(x) = s_z(z) / std at the smallest time
            t = torch.full((x.shape[0],), eps, device=run.device)
            return (setup.score_t(to_z(x), t) / std).cpu()

        return viz.plot_score_field(score_x, data=data[: args.n])
    generator = torch.Generator().manual_seed(args.seed)
    if what == "denoise":  # in the standardised plane the model works in
        if setup.noise_conditional:
            raise UsageError("--what denoise needs a model trained with an SDE (ve, vp, subvp)")
        x0 = to_z(data[: args.n])
        return viz.plot_denoising_strip(
            x0, [0.05, 0.2, 0.5, 0.8], setup.model.denoise, sde=setup.sde, generator=generator
        )
    z = torch.randn((args.n, 2), generator=generator).to(run.device)
    s, steps = run.config.sample, args.steps or run.config.sample.steps
    if setup.sigmas is not None:
        sigmas = setup.sigmas
        viz.annealed_langevin_animation(
            setup.score_sigma, float(sigmas[0]) * z, path, sigmas, s.step_lr, steps, generator=generator
        )
    else:
        viz.reverse_sde_animation(
            setup.score_t,
            setup.sde,
            setup.sde.prior_std * z,
            path,
            n_steps=steps,
            generator=generator,
            eps=s.eps,
        )
    return None


def _cmd_demo(args) -> int:
    from .report import run_demo

    results = run_demo(args.out, args.quick, progress=not args.quiet, seed=args.seed)
    _say(
        f"wrote {args.out / 'report.html'} and {args.out / 'results.json'} ({results['wall_s']['total']:.0f} s)"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# the parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        type=Path,
        required=True,
        help="run directory written by `scorefield train`",
    )
    p.add_argument("--device", default=None, help='"cpu", "cuda[:k]"; default: CUDA when present')
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Score-based generative modelling: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a score model from a TOML config")
    p.add_argument("--config", type=Path, help="TOML config (presets in configs/); default: the defaults")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=500"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    p.add_argument("--force", action="store_true", help="start over, deleting the run directory's run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    _add_run_args(p)
    p.add_argument(
        "--n", "--num-samples", dest="n", type=_positive_int, required=True, help="number of samples"
    )
    p.add_argument("--sampler", choices=tuple(SAMPLERS), help="default: the run's sample.sampler")
    p.add_argument("--steps", type=_positive_int, help="sampler steps (per level for ald)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, help="samples per sampler call")
    p.add_argument("--last", action="store_true", help="use the last weights instead of the EMA")
    p.add_argument(
        "--out",
        type=_output_path((*ARRAY_SUFFIXES, ".png")),
        required=True,
        help="FILE.npy or FILE.csv; image runs also write a grid FILE.png (with --out FILE.png: and FILE.npy)",
    )
    p.set_defaults(handler=_cmd_sample)

    for name, help_text, handler in (
        ("likelihood", "exact log-likelihoods of data rows (nats, data units)", _cmd_likelihood),
        ("anomaly", "anomaly scores -log p of data rows", _cmd_anomaly),
    ):
        p = sub.add_parser(name, help=help_text)
        _add_run_args(p)
        p.add_argument("--data", type=Path, required=True, help="FILE.npy or FILE.csv, one example per row")
        p.add_argument("--divergence", choices=("exact", "hutchinson"), default="exact")
        p.add_argument("--probes", type=_positive_int, default=1, help="Hutchinson probes per example")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch-size", type=_positive_int, default=1000, help="rows per ODE solve")
        p.add_argument("--out", type=_output_path(ARRAY_SUFFIXES), help="per-row results, .npy or .csv")
        if name == "anomaly":
            p.add_argument(
                "--top", type=_positive_int, default=5, help="how many of the highest scores to print"
            )
        p.set_defaults(handler=handler)

    p = sub.add_parser("plot", help="figures of a trained run")
    _add_run_args(p)
    p.add_argument("--what", nargs="+", choices=PLOTS, default=["samples", "loss"])
    p.add_argument("--n", type=_positive_int, default=2000, help="points or particles per figure")
    p.add_argument("--sampler", choices=tuple(SAMPLERS))
    p.add_argument("--steps", type=_positive_int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for the figures")
    p.set_defaults(handler=_cmd_plot)

    p = sub.add_parser("demo", help="the tutorials' story end to end: report.html, figures, numbers")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--quick", action="store_true", help="a smaller, faster version (under a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"{PROG}: warning: {message}", sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the ``scorefield`` command line; returns the exit status."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            args = _parser().parse_args(argv)
            return args.handler(args)
        except USER_ERRORS as error:
            _say(f"{PROG}: error: {error}", sys.stderr)
            return 2
        except TrainingError as error:
            _say(f"{PROG}: error: {error}", sys.stderr)
            return 1
        except KeyboardInterrupt:
            _say(f"{PROG}: interrupted", sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
