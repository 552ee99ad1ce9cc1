"""The ``scorefield`` command: train, sample, inpaint, likelihood, anomaly, tune, plot, demo.

This is the only composition root: it reads files and flags, builds configs and runs, and writes
results. A mistake in the input (a bad flag, an unknown config key, a value of the wrong type,
sigma_min >= sigma_max, a missing file, NaN or Inf in the data, data of the wrong shape for a run or
under other column names, a missing or corrupt checkpoint, an existing run directory, an output that
cannot be written) ends with one line on stderr, ``scorefield: error: ...``, and exit status 2. Inputs
and outputs are checked before any work (``train`` creates or clears its run directory only once the
config and the data have passed); results are written only once complete, atomically, so a failure
never damages a good file. ``scorefield`` alone prints the help; ``--version`` the version. Under
torchrun every subcommand splits its work over the processes and only process 0 writes; there, spell
``--run`` as ``--run-dir`` and ``--n`` as ``--num-samples``, because torchrun's own parser claims
abbreviations of its options (``--run-path``, ``--nnodes``, ...) anywhere on the line.

This module holds the parser and ``main`` (which turns every user error into that one line);
``--threads`` (every subcommand) sets PyTorch's CPU threads, by default ``OMP_NUM_THREADS`` or the
physical cores (hyper-threads slow PyTorch's kernels down rather than up). A full disk ends as one line
too, with exit status 2. ``commands`` the subcommands train, sample, inpaint, likelihood, anomaly, tune and demo; ``plots`` the plot command
and the image grids; ``io`` flag values, output checks, and the writing of arrays and figures.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import os
import sys
import warnings
from pathlib import Path

import torch

from ..run.checkpoint import CheckpointError
from ..run.config import ConfigError
from ..run.finished import SAMPLERS
from ..run.train import RunError, TrainingError
from .commands import cmd_anomaly, cmd_demo, cmd_inpaint, cmd_likelihood, cmd_sample, cmd_train, cmd_tune
from .io import ARRAY_SUFFIXES, PROG, UsageError, device_flag, output_path, positive_int, say
from .plots import PLOTS, cmd_plot

__all__ = ["PLOTS", "main"]

USER_ERRORS = (UsageError, ConfigError, CheckpointError, RunError)


class _Exit(Exception):
    """argparse is done before any command ran (``--help``, ``--version``); ``main`` returns ``status``."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None):  # main() returns instead of exiting
        if message:
            say(message.rstrip(), sys.stderr)
        raise _Exit(status)


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return importlib.metadata.version(PROG)
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules[__package__], "__version__", "unknown")


def physical_cores() -> int:
    """The physical CPU cores this process may run on (hyper-threads of one core counted once), from
    Linux's CPU topology; the logical CPUs where that is not readable."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def default_threads() -> int:
    """``--threads`` unless given: ``OMP_NUM_THREADS`` if set to a positive integer, else the physical cores."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        value = 0
    return value if value > 0 else physical_cores()


def _subcommand(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser with the options every subcommand has (``--threads``)."""
    p = sub.add_parser(name, **kwargs)
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads PyTorch computes with (torch.set_num_threads); default: OMP_NUM_THREADS if set, "
        "else the machine's physical cores",
    )
    return p


def _add_header(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"whether the first line of {what} (a CSV) names the columns; default: when it is not all numbers",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        type=Path,
        required=True,
        help="run directory written by `scorefield train`",
    )
    p.add_argument("--device", type=device_flag, help='"cpu", "cuda[:k]"; default: CUDA when present')
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    """--precision and --compile: how the network runs (the sampler's and the ODE's arithmetic stay float32)."""
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the network's arithmetic: bf16 autocast is faster on CPUs with AMX or AVX-512-BF16 and on "
        "recent GPUs, and rounds the network's output to about 3 significant digits; default fp32",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network: faster evaluations after a warm-up of seconds to minutes",
    )


def _add_label_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--label",
        help=f"class-conditional runs: {what} this class, by name (a CSV's label, a digit) or by index 0..K-1",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        metavar="W",
        help="classifier-free guidance weight with --label: (1+W) s(x|y) - W s(x), two network "
        "evaluations per score evaluation; default 0 (the conditional model alone)",
    )


def _add_inpaint(sub) -> None:
    p = _subcommand(
        sub,
        "inpaint",
        help="fill the cells of data rows that a mask marks 0, given the cells it marks 1",
        description="Fill the missing cells of data rows by conditional sampling from a trained run (the "
        "sequential Monte Carlo by default, or the replacement method with RePaint's resampling). MASK has the data's shape, or one row for every "
        "row: 1 (or True) marks an observed cell, returned exactly as given; 0 (or False) a cell to fill, "
        "whose value in --data is not read (write any number there). Rows without an observed cell are "
        "drawn from the model; a mask of all 0 is refused. Without --label, a class-conditional run "
        "completes each row as the class it most probably belongs to given its observed cells (weighed by "
        "--guidance), and a run conditioned on clusters from its most probable cluster.",
    )
    _add_run_args(p)
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="FILE.npy or FILE.csv, one example per row (image runs: flat rows, or images in a .npy)",
    )
    _add_header(p, "--data")
    p.add_argument(
        "--mask",
        type=Path,
        required=True,
        help="FILE.npy or FILE.csv shaped like --data (or one row for all rows): 1 = observed, 0 = to fill",
    )
    p.add_argument(
        "--nfe",
        type=positive_int,
        default=None,
        help="score evaluations per row; default 51 with --particles 16 (the default: about 800 network "
        "evaluations per row), 800 with --resample (RePaint): (nfe - 1) // resample steps of resample "
        "evaluations each, and one for the final denoising",
    )
    p.add_argument(
        "--resample",
        type=positive_int,
        default=None,
        help="the replacement method with RePaint's resampling instead of sequential Monte Carlo: each "
        "step taken this many times (1 = plain replacement); default 4 when --particles is 1",
    )
    p.add_argument(
        "--particles",
        type=positive_int,
        default=None,
        help="sequential Monte Carlo with this many particles per row (each score evaluation costs this "
        "many network evaluations); default 8, or 1 (RePaint) when --resample is given",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="rows per sampler call; default: the run's sample.batch_size divided by --particles",
    )
    p.add_argument("--last", action="store_true", help="use the last weights instead of the EMA")
    _add_label_args(p, "complete the rows as members of")
    _add_speed_args(p)
    p.add_argument(
        "--labels",
        type=Path,
        help="class-conditional runs, instead of --label: FILE.txt or FILE.csv (one label per line) or "
        "FILE.npy with one label per row of --data, each row completed as its own class (with --guidance)",
    )
    p.add_argument(
        "--null-label",
        action="store_true",
        help="class-conditional runs without --label: fill the rows from the unconditional model (the null "
        "label: p(x), no class chosen) instead of each row's most probable class given its observed cells",
    )
    p.add_argument(
        "--out",
        type=output_path(ARRAY_SUFFIXES),
        required=True,
        help="FILE.npy or FILE.csv: the completed rows in data units; image runs also write a grid FILE.png",
    )
    p.set_defaults(handler=cmd_inpaint)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Score-based generative modelling: train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _subcommand(sub, "train", help="train a score model from a TOML config")
    p.add_argument("--config", type=Path, help="TOML config (presets in configs/); default: the defaults")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=500"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    p.add_argument("--force", action="store_true", help="start over, deleting the run directory's run")
    p.add_argument("--device", type=device_flag, help='"cpu", "cuda[:k]"; overrides train.device')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_header(p, "data.path")
    p.set_defaults(handler=cmd_train)

    p = _subcommand(sub, "sample", help="draw samples from a trained run")
    _add_run_args(p)
    p.add_argument(
        "--n", "--num-samples", dest="n", type=positive_int, required=True, help="number of samples"
    )
    p.add_argument("--sampler", choices=tuple(SAMPLERS), help="default: the run's sample.sampler")
    p.add_argument("--steps", type=positive_int, help="sampler steps (per level for ald)")
    p.add_argument(
        "--nfe",
        type=positive_int,
        help="a budget of score evaluations: sample_fast (UniPC on its tuned grid), at least 2",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, help="samples per sampler call")
    p.add_argument("--last", action="store_true", help="use the last weights instead of the EMA")
    _add_label_args(p, "sample")
    _add_speed_args(p)
    p.add_argument(
        "--out",
        type=output_path((*ARRAY_SUFFIXES, ".png")),
        required=True,
        help="FILE.npy or FILE.csv; image runs also write a grid FILE.png (with --out FILE.png: and FILE.npy)",
    )
    p.add_argument(
        "--grid-scale",
        type=positive_int,
        metavar="K",
        help="image runs: enlarge each image of the PNG grid K times (nearest neighbour); "
        "default: to at least 64 pixels per side",
    )
    p.set_defaults(handler=cmd_sample)
    _add_inpaint(sub)

    for name, help_text, handler in (
        ("likelihood", "exact log-likelihoods of data rows (nats, data units)", cmd_likelihood),
        ("anomaly", "anomaly scores -log p of data rows", cmd_anomaly),
    ):
        p = _subcommand(sub, name, help=help_text)
        _add_run_args(p)
        p.add_argument("--data", type=Path, required=True, help="FILE.npy or FILE.csv, one example per row")
        _add_header(p, "--data")
        p.add_argument("--divergence", choices=("exact", "hutchinson"), default="exact")
        p.add_argument("--probes", type=positive_int, default=1, help="Hutchinson probes per example")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch-size", type=positive_int, default=1000, help="rows per ODE solve")
        p.add_argument(
            "--clusters",
            type=positive_int,
            default=1,
            help="runs conditioned on clusters (data.labels = clusters): sum the mixture over the N nearest "
            "clusters, one ODE solve each (1: a lower bound; model.num_classes: exact)",
        )
        p.add_argument("--out", type=output_path(ARRAY_SUFFIXES), help="per-row results, .npy or .csv")
        _add_speed_args(p)
        if name == "anomaly":
            p.add_argument(
                "--top", type=positive_int, default=5, help="how many of the highest scores to print"
            )
        p.set_defaults(handler=handler)

    p = _subcommand(sub, "tune", help="fit sample_fast's time grid for a budget to a trained run")
    _add_run_args(p)
    p.add_argument("--nfe", type=positive_int, required=True, help="the budget of score evaluations")
    p.add_argument("--n", type=positive_int, default=256, help="prior draws the grid is fitted on")
    p.add_argument(
        "--iterations", type=positive_int, default=200, help="Nelder-Mead iterations from each start"
    )
    p.add_argument(
        "--starts", type=positive_int, default=3, help="Nelder-Mead runs, from the best starting grids"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_tune)

    p = _subcommand(sub, "plot", help="figures of a trained run")
    _add_run_args(p)
    p.add_argument(
        "--what",
        nargs="+",
        choices=PLOTS,
        default=["samples", "loss"],
        help="samples: samples against data (tables: a pair plot of every column); loss: training curve; "
        "field: the score as arrows; langevin: a GIF of the sampler (field and langevin: 2-column tables "
        "only); denoise: data noised and denoised at 4 times. Data units and column names throughout",
    )
    p.add_argument("--n", type=positive_int, default=2000, help="points or particles per figure")
    p.add_argument("--sampler", choices=tuple(SAMPLERS))
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for the figures")
    p.set_defaults(handler=cmd_plot)

    p = _subcommand(sub, "demo", help="the tutorials' story end to end: report.html, figures, numbers")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--quick", action="store_true", help="a smaller, faster version (under a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    say(f"{PROG}: warning: {message}", sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the ``scorefield`` command line; returns the exit status."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            parser = _parser()
            if not argv:  # bare `scorefield`: the help, as with --help
                parser.print_help()
                return 0
            args = parser.parse_args(argv)
            torch.set_num_threads(args.threads or default_threads())
            return args.handler(args)
        except _Exit as done:
            return done.status
        except USER_ERRORS as error:
            say(f"{PROG}: error: {error}", sys.stderr)
            return 2
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            say(
                f"{PROG}: error: no room left to write {error.filename or 'the output'} ({error.strerror}); free some space",
                sys.stderr,
            )
            return 2
        except TrainingError as error:
            say(f"{PROG}: error: {error}", sys.stderr)
            return 1
        except KeyboardInterrupt:
            say(f"{PROG}: interrupted", sys.stderr)
            return 130
