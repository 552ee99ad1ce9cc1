"""The ``scorefield`` command: train, sample, likelihood, anomaly, plot, demo.

This is the only composition root: it reads files and flags, builds configs and runs, and writes
results. A mistake in the input (a bad flag, an unknown config key, a value of the wrong type,
sigma_min >= sigma_max, a missing file, NaN or Inf in the data, data of the wrong shape for a run or
under other column names, a missing or corrupt checkpoint, an existing run directory, an output that
cannot be written) ends with one line on stderr, ``scorefield: error: ...``, and exit status 2. Inputs
and outputs are checked before any work (``train`` creates or clears its run directory only once the
config and the data have passed); results are written only once complete, atomically, so a failure
never damages a good file. ``scorefield`` alone prints the help; ``--version`` the version. Under torchrun every subcommand splits its work over the
processes and only process 0 writes; there, spell ``--run`` as ``--run-dir`` and ``--n`` as
``--num-samples``, because torchrun's own parser claims abbreviations of its options
(``--run-path``, ``--nnodes``, ...) anywhere on the line.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import math
import os
import re
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, atomic_write
from .config import ConfigError, load_config
from .datasets import default_columns, load_data, read_table
from .train import SAMPLERS, RunError, TrainingError, distributed, load_run, train

__all__ = ["main"]

PROG = "scorefield"
PLOTS = ("samples", "loss", "field", "denoise", "langevin")
ARRAY_SUFFIXES = (".npy", ".csv")
GRID_MAX = 256  # samples shown in the PNG grid that `sample` writes for image runs
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class UsageError(Exception):
    """Bad input on the command line; reported as one line with exit status 2."""


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
            _say(message.rstrip(), sys.stderr)
        raise _Exit(status)


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return importlib.metadata.version(PROG)
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules[__package__], "__version__", "unknown")


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


def _device(name: str) -> str:
    """``name`` if it names a device of this machine: "auto", "cpu", "cuda" or "cuda:k" (else UsageError)."""
    if not DEVICE.fullmatch(name):
        raise UsageError(f'device {name!r} is unknown; use "cpu", "cuda" or "cuda:k"')
    if name.startswith("cuda"):
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise UsageError(
                f"device {name} is not available: this machine has {count} CUDA device(s); use cpu"
            )
    return name


def _check_writable(path: Path, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file (``folder``: a folder) whose
    path is taken by the other kind, a path below a file, or a location that accepts no new files.

    Missing folders on the way are fine (they are created when the output is written); the test is
    to create and delete a temporary file in the nearest folder that exists.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise UsageError(f"cannot write {path}: it is a {'file' if folder else 'folder'}; name another path")
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot write {path}: {ancestor} is a file, not a folder; name another path")
    try:
        handle, probe = tempfile.mkstemp(dir=ancestor, prefix=f".{PROG}-probe-")
    except OSError as error:
        raise UsageError(
            f"cannot write {path}: {ancestor} accepts no new files ({error.strerror}); name another path"
        ) from None
    os.close(handle)
    os.unlink(probe)


def _output_path(suffixes: tuple[str, ...]):
    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r} must end in {' or '.join(suffixes)}")
        return path

    return parse


# --------------------------------------------------------------------------------------------------
# reading and writing arrays


def _read_data(path: Path, data_shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """A data file as ``[N, *data_shape]`` (a flat row is reshaped to an image of the run's shape) and
    its column names (a CSV's header, else None)."""
    try:
        x, names = read_table(path)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    numel = int(np.prod(data_shape))
    if len(data_shape) > 1 and x.shape[1] == numel:
        x = x.reshape(-1, *data_shape)
    return x, names


def _write_array(
    path: Path, columns: dict[str, np.ndarray] | np.ndarray, names: tuple[str, ...] | None = None
) -> None:
    """``.npy``: the array (a dict's columns side by side); ``.csv``: a header line (the dict's keys, else
    ``names``, else ``x0, x1, ...``) and one row per example, integer columns written as integers.
    Written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        array = np.stack(list(columns.values()), axis=1) if isinstance(columns, dict) else columns
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        atomic_write(path, buffer.getvalue())
        return
    if isinstance(columns, dict):
        header, values = list(columns), list(columns.values())
    else:
        rows = columns.reshape(columns.shape[0], -1)
        header, values = list(names or default_columns(rows.shape[1])), list(rows.T)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*(np.asarray(v).tolist() for v in values), strict=True))
    atomic_write(path, text.getvalue().encode())


# --------------------------------------------------------------------------------------------------
# subcommands


def _cmd_train(args) -> int:
    config_file = args.config  # else: the run's own config when resuming, the defaults when not
    if config_file is None and args.resume and (args.out / "config.toml").is_file():
        config_file = args.out / "config.toml"
    overrides = [*args.set, f'train.device="{args.device}"'] if args.device else args.set
    config = load_config(config_file, overrides)
    _device(config.train.device)
    _check_writable(args.out, folder=True)
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


def _image_range(run) -> tuple[float, float]:
    """The pixel values that an image run's figures draw black and white: the ends of the model's
    ``[-1, 1]`` in the data's units (``0 .. levels`` for data of ``levels`` grey levels)."""
    ends = run.scaler.inverse_transform(
        torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1).expand(2, *run.data_shape)
    )
    return float(ends[0].min()), float(ends[1].max())


def _grid_columns(n: int) -> int:
    """Images per row of the square PNG grid of ``n`` samples."""
    return max(1, math.ceil(math.sqrt(n)))


def _grid_scale(run, n: int, requested: int | None) -> int | None:
    """How many times `sample` enlarges each image of its PNG grid of ``n`` samples: ``--grid-scale``,
    else enough for ``viz.GRID_MIN_SIDE`` pixels per side (8 for 8x8 digits); None for a table run.
    Checked before any sampling: the option on a table run, or a grid too large to write, is refused."""
    from . import viz

    if len(run.data_shape) != 3:
        if requested is not None:
            raise UsageError(
                f"--grid-scale sizes the PNG grid of an image run; the run's data have shape {run.data_shape}"
            )
        return None
    _, height, width = run.data_shape
    scale = requested or viz.grid_scale(height, width)
    shown = min(n, GRID_MAX)
    try:
        viz.image_grid_size(shown, height, width, nrow=_grid_columns(shown), scale=scale)
    except ValueError as error:
        advice = "; pass a smaller --grid-scale" if requested else "; sample fewer with --n"
        raise UsageError(f"--grid-scale {scale}: {error}{advice}") from None
    return scale


def _write_image_grid(path: Path, run, x: torch.Tensor, scale: int | None = None) -> None:
    """The first ``GRID_MAX`` samples tiled in a square PNG, atomically: pixels in the data's units from
    black to white over ``_image_range``, each image enlarged ``scale`` times by nearest neighbour
    (default: ``_grid_scale``'s), a thin grey border between them."""
    from .viz import image_grid

    shown = x[:GRID_MAX]
    grid = image_grid(
        shown,
        nrow=_grid_columns(shown.shape[0]),
        value_range=_image_range(run),
        scale=scale or _grid_scale(run, shown.shape[0], None),
    )
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def _cmd_sample(args) -> int:
    images = args.out.suffix.lower() == ".png"
    array_path = args.out.with_suffix(".npy") if images else args.out
    _check_writable(array_path)
    with distributed(args.device or "auto") as (d, device):
        run = load_run(args.run, device=device, use_ema=not args.last)
        if images and len(run.data_shape) != 3:
            raise UsageError(
                f"--out {args.out} asks for an image grid; the run's data have shape {run.data_shape}"
            )
        if len(run.data_shape) == 3:
            _check_writable(array_path.with_suffix(".png"))
        grid_scale = _grid_scale(run, args.n, args.grid_scale)
        x = run.sample(args.n, args.sampler, args.steps, args.seed, args.batch_size, progress=not args.quiet)
        written = [array_path]
        if d.main:
            _write_array(array_path, x.numpy(), run.columns)
            if len(run.data_shape) == 3:  # images: a grid next to the array
                written.append(array_path.with_suffix(".png"))
                _write_image_grid(written[-1], run, x, grid_scale)
    sampler = args.sampler or run.config.sample.sampler
    _say(f"wrote {args.n} samples ({sampler}) to {' and '.join(str(p) for p in written)}")
    return 0


def _log_likelihoods(args) -> tuple[torch.Tensor, object]:
    """Log-likelihoods of the rows of ``--data`` under the run, once the data and ``--out`` are checked."""
    if args.out is not None:
        _check_writable(args.out)
    with distributed(args.device or "auto") as (_, device):
        run = load_run(args.run, device=device)
        x, names = _read_data(args.data, run.data_shape)
        run.check_columns(names, args.data)
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


PLANE_ONLY = {  # the figures that exist only in the plane of 2-column data, and what they draw there
    "field": "draws the score as arrows in a plane",
    "langevin": "animates the sampler's particles in a plane",
}
DENOISE_TIMES = (0.05, 0.2, 0.5, 0.8)  # the times of `plot --what denoise`


def _check_plots(run, what: list[str]) -> None:
    """Refuse, before any work, a figure that the run cannot have: one line saying what the figure
    needs, what the run has, and what can be drawn instead."""
    shape = run.data_shape
    for name in what:
        if name in PLANE_ONLY and shape != (2,):
            if len(shape) == 1:
                shown = run.columns if shape[0] <= 8 else (*run.columns[:6], "...", run.columns[-1])
                has = f"the run has {shape[0]} ({', '.join(shown)})"
                instead = "--what samples draws every pair" if shape[0] > 2 else "--what samples draws it"
            else:
                has = f"the run's data are images of shape {shape}"
                instead = "--what samples and denoise draw them"
            raise UsageError(f"--what {name} {PLANE_ONLY[name]} and needs 2 columns; {has}; {instead}")
        if name == "loss" and not (run.run_dir / "metrics.jsonl").is_file():
            raise UsageError(f"{run.run_dir / 'metrics.jsonl'} does not exist; the run has logged no metrics")
        if name == "denoise" and run.setup.noise_conditional:
            raise UsageError(
                "--what denoise needs a model trained with an SDE (ve, vp, subvp); this run is ncsn"
            )


def _some_rows(data: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` rows of ``data`` drawn without replacement by ``seed`` (all of them if there are no more):
    the first rows of a sorted table would be a biased picture of it."""
    if data.shape[0] <= n:
        return data
    return data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def _write_figure(path: Path, draw) -> None:
    """A figure written atomically: ``draw(tmp)`` writes it to a temporary file of the same suffix
    (matplotlib and Pillow pick the format by it), whose bytes then replace ``path`` whole."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        draw(tmp)
        atomic_write(path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def _cmd_plot(args) -> int:
    """Figures of a run, all in the data's units (tables: the columns' own units, named on the axes;
    images: pixel values, black to white over ``_image_range``): samples against data (a pair plot of
    every column beyond 2), the loss curve, the score field and the sampler's animation (2 columns
    only), and the denoising strip."""
    from . import viz

    _check_writable(args.out, folder=True)
    run = load_run(args.run, device=args.device)
    _check_plots(run, args.what)
    data = _some_rows(load_data(run.config.data), args.n, args.seed)
    value_range = _image_range(run) if len(run.data_shape) == 3 else None
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for what in args.what:
        path = args.out / (f"{what}.gif" if what == "langevin" else f"{what}.png")
        if what == "langevin":
            _write_figure(path, lambda tmp: _animate_sampling(viz, run, data, tmp, args))
        else:
            if what == "loss":
                figure = viz.plot_loss_curve(run.run_dir / "metrics.jsonl")
            elif what == "samples":
                samples = run.sample(args.n, args.sampler, args.steps, args.seed)
                figure = viz.plot_samples(samples, data, value_range=value_range, columns=run.columns)
            elif what == "field":
                figure = _plot_field(viz, run, data)
            else:
                figure = _plot_denoise(viz, run, data, value_range, args.seed)
            _write_figure(path, lambda tmp, figure=figure: figure.savefig(tmp, dpi=110, bbox_inches="tight"))
        written.append(str(path))
    _say("wrote " + ", ".join(written))
    return 0


def _in_data(run):
    """The map from the model's space (a batch on the run's device) back to the data's units."""
    return lambda z: run.scaler.inverse_transform(z.cpu())


def _plot_field(viz, run, data: torch.Tensor):
    """The learned score at the smallest time over 2-column data, in the data's units. Each axis is
    scaled to its column, so the arrow at ``x`` is ``std² ∇log p(x)`` per column (``std · s_z``, the
    score of the model's standardised plane): it points where the standardised score points, on
    axes of any units, where the raw ``∇log p`` would lie flat along the column of smaller spread."""
    setup, scaler, eps = run.setup, run.scaler, run.config.sample.eps
    std = scaler.std.to(run.device)

    def field(x: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), eps, device=run.device)
        return (setup.score_t(scaler.transform(x.cpu()).to(run.device), t) * std).cpu()

    figure = viz.plot_score_field(field, data=data, columns=run.columns)
    figure.axes[0].set_title(
        f"learned score at t = {eps:g}\narrows: std² ∇log p (std of each column)", fontsize="medium"
    )
    return figure


def _plot_denoise(viz, run, data: torch.Tensor, value_range: tuple[float, float] | None, seed: int):
    """Clean data, noised to ``DENOISE_TIMES`` and denoised in one Tweedie step by the model (in its
    standardised space), all drawn in the data's units."""
    return viz.plot_denoising_strip(
        run.scaler.transform(data).to(run.device),
        DENOISE_TIMES,
        run.setup.model.denoise,
        sde=run.setup.sde,
        value_range=value_range,
        generator=torch.Generator().manual_seed(seed),
        to_data=_in_data(run),
        columns=run.columns,
    )


def _animate_sampling(viz, run, data: torch.Tensor, path: Path, args) -> None:
    """A GIF of ``args.n`` particles on 2-column data, in the data's units over the ``data``, carried
    from the prior by the run's sampler: annealed Langevin over its noise levels, else the reverse SDE."""
    setup, s = run.setup, run.config.sample
    generator = torch.Generator().manual_seed(args.seed)
    z = torch.randn((args.n, 2), generator=generator).to(run.device)
    steps = args.steps or s.steps
    drawing = {"generator": generator, "to_data": _in_data(run), "columns": run.columns, "data": data}
    if setup.sigmas is not None:
        sigmas = setup.sigmas
        viz.annealed_langevin_animation(
            setup.score_sigma, float(sigmas[0]) * z, path, sigmas, s.step_lr, steps, **drawing
        )
    else:
        viz.reverse_sde_animation(
            setup.score_t, setup.sde, setup.sde.prior_std * z, path, n_steps=steps, eps=s.eps, **drawing
        )


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
    p.add_argument("--device", type=_device, help='"cpu", "cuda[:k]"; default: CUDA when present')
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Score-based generative modelling: train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a score model from a TOML config")
    p.add_argument("--config", type=Path, help="TOML config (presets in configs/); default: the defaults")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=500"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    p.add_argument("--force", action="store_true", help="start over, deleting the run directory's run")
    p.add_argument("--device", type=_device, help='"cpu", "cuda[:k]"; overrides train.device')
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
    p.add_argument(
        "--grid-scale",
        type=_positive_int,
        metavar="K",
        help="image runs: enlarge each image of the PNG grid K times (nearest neighbour); "
        "default: to at least 64 pixels per side",
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
    p.add_argument(
        "--what",
        nargs="+",
        choices=PLOTS,
        default=["samples", "loss"],
        help="samples: samples against data (tables: a pair plot of every column); loss: training curve; "
        "field: the score as arrows; langevin: a GIF of the sampler (field and langevin: 2-column tables "
        "only); denoise: data noised and denoised at 4 times. Data units and column names throughout",
    )
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
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            parser = _parser()
            if not argv:  # bare `scorefield`: the help, as with --help
                parser.print_help()
                return 0
            args = parser.parse_args(argv)
            return args.handler(args)
        except _Exit as done:
            return done.status
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
