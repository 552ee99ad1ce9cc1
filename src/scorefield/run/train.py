"""Training a run: the run directory, its data, and the loop around ``fit.py``.

``train(config, run_dir)`` fits the score model that ``build`` makes of a ``Config`` to the data it
names: the data are standardised by a stored ``Standardizer`` (images: mapped to ``[-1, 1]`` by
``image_scaler``, then optionally flipped and dequantized afresh at every step, ``augment``); the
objective comes from the plain dict ``build.OBJECTIVES``. A class-conditional model
(``model.num_classes > 0``) trains on the data's labels, each replaced by the null label with
probability ``train.label_dropout`` (``drop_labels``), so that one network learns ``p(x | y)`` and
``p(x)`` for classifier-free guidance (docs/math.md#classifier-free-guidance); the class names are
stored with the checkpoints. With ``data.labels = clusters`` the labels are k-means clusters of the
training data in model units (``clusters.cluster_labels``), whose centroids and shares are stored too
(docs/math.md#cluster-conditional-models). The mean and covariance of the data the model learns are
stored as well, and one Gaussian per class or cluster, for ``sample_fast``'s Gaussian start
(``learned_moments``; docs/math.md#the-gaussian-start). ``fit.py`` takes the steps (AdamW with linear
warm-up, gradient clipping, an EMA of the weights used for sampling); this module adds what a run on disk needs:
``config.toml``, ``metrics.jsonl``, a tqdm bar, periodic checkpoints, resuming from the newest good
one (refused when the config's model or data differ), and SIGINT/SIGTERM, which write a checkpoint
and stop. One process at a time writes a run directory: ``train`` holds ``files.folder_lock`` on it
from its first check to its last write, and a second writer is refused. Sizes are checked before
anything is allocated (``build.check_training_memory``); a full disk stops the run with one sentence.
``train.precision`` and ``train.compile`` set how the network runs (bfloat16 autocast, ``torch.compile``:
``nets.accelerated``); the weights, the optimiser's moments, the EMA and the checkpoints stay float32.

Determinism: nothing random carries state from one step to the next. Step ``k`` reads the data
order from a permutation seeded by ``(seed, epoch)`` and draws its noise from a generator seeded by
``(seed, k)``, so a run killed at any point and resumed from a checkpoint ends bitwise equal to an
uninterrupted one. Under torchrun (``WORLD_SIZE > 1``) every process draws the same global batch
and the same noise for all of it, but evaluates the network on its own contiguous share of the rows
only (``distributed.local_rows``); gradients are averaged by ``DistributedDataParallel``. Example
``i`` of a step therefore sees the same data and noise whatever the number of processes, and N
processes match one. The process's global CPU generator (which dropout draws from) is seeded from
``train.seed`` for the run and restored afterwards, and the losses since the last metrics line are kept
in each checkpoint, so two identical runs write byte-identical checkpoint files and a resumed run
writes the metrics lines an uninterrupted one writes (except ``steps_per_s``, a wall-clock rate).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..datasets import IMAGE_LEVELS, TOY, image_scaler, random_hflip, read_labelled_data
from ..distributions import GaussianMixture
from ..files import FolderBusy, atomic_write, folder_lock, remove_orphans
from ..fit import EMA, LossWindow, Trainer, fit, warmup_schedule
from ..gaussian import component_moments, data_moments
from ..scalers import Standardizer
from ..utils import derive_seed, make_generator, rand_like
from .build import OBJECTIVES, build, check_memory, check_training_memory, initial_sigma_max
from .checkpoint import Checkpoint, CheckpointError, checkpoint_dir, latest_good, save_checkpoint
from .clusters import cluster_labels, cluster_state
from .config import Config, ConfigError, parse_config, to_toml, with_absolute_paths
from .distributed import Dist, distributed, local_rows

__all__ = [
    "EpochOrder",
    "RunError",
    "TrainResult",
    "TrainingError",
    "augment",
    "check_run_checkpoint",
    "drop_labels",
    "learning_rate",
    "prepare_data",
    "run_lock",
    "train",
]

RUN_FILES = ("config.toml", "metrics.jsonl", "checkpoints")
MAX_FEATURES = 2**24  # features per example a checkpoint may claim (a 4096 x 4096 image)
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW has a fused kernel
STATE_KEYS = ("model", "ema", "optimizer", "scaler", "rng", "loss_window", "moments")
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the checkpoints written so far are kept."""


class RunError(ValueError):
    """A run directory or its data cannot be used as asked (the message says what to do)."""


# --------------------------------------------------------------------------------------------------
# state that changes during training


class EpochOrder:
    """Data order without replacement: epoch ``e`` is a permutation seeded by ``(seed, e)``.

    Step ``k`` takes examples ``k B .. k B + B - 1`` of the concatenated epochs. The permutations
    are pure functions of (seed, epoch); the cache only saves recomputing them.
    """

    def __init__(self, n: int, batch: int, seed: int, device: torch.device):
        self.n, self.batch, self.seed, self.device = n, batch, seed, device
        self.cache: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self.cache:
            if len(self.cache) > 4:
                self.cache.pop(min(self.cache))
            g = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            self.cache[epoch] = torch.randperm(self.n, generator=g).to(self.device)
        return self.cache[epoch]

    def __call__(self, step: int) -> torch.Tensor:
        first = step * self.batch
        epoch, pos = divmod(first, self.n)
        if pos + self.batch <= self.n:
            return self.permutation(epoch)[pos : pos + self.batch]
        parts, remaining = [], self.batch
        while remaining:
            take = min(remaining, self.n - pos)
            parts.append(self.permutation(epoch)[pos : pos + take])
            remaining, epoch, pos = remaining - take, epoch + 1, 0
        return torch.cat(parts)


def learning_rate(config: Config, step: int) -> float:
    """The learning rate of step ``k`` (from 0): ``warmup_schedule``'s linear warm-up, then constant."""
    t = config.train
    return t.lr * min(1.0, (step + 1) / t.warmup) if t.warmup else t.lr


class _StopSignal:
    """SIGINT / SIGTERM set a flag that the loop reads between steps (main thread only)."""

    def __init__(self):
        self.signum = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------------------------------------
# the run directory


def _existing_run_files(run_dir: Path, resume: bool, force: bool) -> list[str]:
    """The run files already in ``run_dir``; ``RunError`` if there are some and neither flag allows it."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise RunError(
            f"run directory {run_dir} is a symbolic link to {os.readlink(run_dir)}, which does not exist"
        )
    existing = [name for name in RUN_FILES if os.path.lexists(run_dir / name)]
    if existing and not (resume or force):
        raise RunError(
            f"run directory {run_dir} already holds a run; "
            "pass --resume to continue it or --force to start over"
        )
    return existing


def run_lock(run_dir: Path) -> ExitStack:
    """``files.folder_lock`` on ``run_dir`` as a context, a ``RunError`` saying what to do when another
    process holds it."""
    stack = ExitStack()
    try:
        stack.enter_context(folder_lock(run_dir))
    except FolderBusy:
        raise RunError(
            f"run directory {run_dir} is being written by another process (a train or tune of it is "
            "running); wait for it to finish or stop it"
        ) from None
    return stack


def _prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Create ``run_dir``; with ``force`` (and not ``resume``) delete an earlier run's files first.
    Called only once everything the run needs has been checked, with the run's lock held (or before
    ``run_dir`` exists). Everything is checked before anything is deleted, and a symbolic link among the
    run's files is refused rather than followed out of the run directory."""
    existing = _existing_run_files(run_dir, resume, force)
    if force and not resume:
        links = [run_dir / name for name in existing if (run_dir / name).is_symlink()]
        if links:
            raise RunError(
                f"--force deletes a run's own files, but {links[0]} is a symbolic link (to "
                f"{os.readlink(links[0])}); remove or replace it yourself"
            )
        for name in existing:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, checkpoint_dir(run_dir)):
        remove_orphans(folder)  # temporaries of a process killed while writing: nobody else writes here


def _check_same_run(config: Config, stored: dict[str, Any], run_dir: Path) -> None:
    """Resuming may change train.* and sample.*, never what defines the model and its data."""
    old = parse_config(stored["config"]).model_dump()
    new = config.model_dump()
    for section in ("data", "model", "sde", "objective"):
        for key, value in new[section].items():
            if old[section][key] != value:
                raise ConfigError(
                    f"{section}.{key} is {value!r} but the run in {run_dir} was trained with "
                    f"{old[section][key]!r}; resume with the run's value or start over with --force"
                )


def check_run_checkpoint(ckpt: Checkpoint) -> None:
    """``CheckpointError`` unless ``ckpt`` holds what ``train`` stores: every state entry, a config that
    parses, and metadata of the right types, ``data_shape`` bounded by ``MAX_FEATURES`` (a file may not
    ask ``load_run`` to allocate more). ``latest_good`` then falls back to an older checkpoint."""
    meta, where = ckpt.meta, ckpt.path.with_suffix(".json")
    missing = [key for key in STATE_KEYS if key not in ckpt.state]
    if missing:
        raise CheckpointError(f"{where} lacks {', '.join(missing)}: it is not a checkpoint of a trained run")
    types = {"config": dict, "data_shape": list, "data_fingerprint": str, "columns": list, "classes": list}
    for key, kind in types.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{where}: its metadata {key!r} is missing or not a {kind.__name__}")
    shape = meta["data_shape"]
    if not (
        1 <= len(shape) <= 3
        and all(type(n) is int and n > 0 for n in shape)
        and math.prod(shape) <= MAX_FEATURES
    ):
        raise CheckpointError(
            f"{where}: its data_shape {shape!r} is not 1 to 3 positive sizes of at most {MAX_FEATURES} features"
        )
    if not all(isinstance(c, str) for c in meta["columns"] + meta["classes"]):
        raise CheckpointError(f"{where}: its columns and classes are not lists of names")
    sigma_max = meta.get("sigma_max")
    if sigma_max is not None and not (
        isinstance(sigma_max, float) and math.isfinite(sigma_max) and sigma_max > 0
    ):
        raise CheckpointError(f"{where}: its sigma_max {sigma_max!r} is not a positive number")
    try:
        parse_config(meta["config"])
    except ConfigError as error:
        raise CheckpointError(f"{where}: its config is invalid ({error})") from None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after ``step`` by a run that died before its next checkpoint, and a
    line cut short by a crash (it does not parse)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    if len(kept) != len(lines) or not path.read_text(errors="replace").endswith("\n"):
        atomic_write(path, "".join(line + "\n" for line in kept).encode())


def _fingerprint(x: torch.Tensor, labels: torch.Tensor | None = None) -> str:
    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    if labels is not None:
        digest.update(labels.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_same_data(
    stored: dict[str, Any], fingerprint: str, columns: tuple[str, ...], run_dir: Path, classes=()
) -> None:
    """Resuming needs the very data (and labels) the run was trained on, under the same column and
    class names."""
    if stored["data_fingerprint"] != fingerprint:
        raise RunError(f"the training data differ from those the run in {run_dir} was trained on")
    if tuple(stored["classes"]) != tuple(classes):
        raise RunError(f"the training data's class names differ from those of the run in {run_dir}")
    old = tuple(stored["columns"])
    if old != columns:
        raise RunError(
            f"the training data have columns ({', '.join(columns)}) but the run in {run_dir} was trained "
            f"on ({', '.join(old)}); resume with the run's data or start over with --force"
        )


def _read_training_data(
    config: Config,
) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor | None, tuple[str, ...]]:
    """The raw training data, their column names and, for ``model.num_classes > 0``, their labels and
    class names (else ``None, ()``); errors as ``ConfigError``."""
    if config.data.path is None and config.data.name in TOY:  # drawn, so its size is the config's
        check_memory(
            4.0 * 3 * 2 * config.data.n, f"data.n = {config.data.n} toy examples", "choose a smaller data.n"
        )
    try:
        x, columns, labels, classes = read_labelled_data(config.data)
    except (OSError, ValueError) as error:
        key = "data.path" if config.data.path is not None else "data.name"
        raise ConfigError(f"{key}: {error}") from None
    if x.shape[0] < 2:
        raise ConfigError(f"the training data hold {x.shape[0]} example(s); at least 2 are needed")
    k = config.model.num_classes
    if not k:
        return x, columns, None, ()
    if config.data.labels == "clusters":
        z = _fit_scaler(config, x).transform(x)
        return x, columns, cluster_labels(z, k, config.train.seed), tuple(str(c) for c in range(k))
    if len(classes) != k:
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise ConfigError(
            f"model.num_classes = {k} but column {config.data.label_column!r} of {config.data.path} holds "
            f"{len(classes)} classes ({shown}); set model.num_classes = {len(classes)}"
        )
    return x, columns, labels, classes


def _fit_scaler(config: Config, x: torch.Tensor) -> Standardizer:
    if config.data.images:
        return image_scaler(tuple(x.shape[1:]), IMAGE_LEVELS[config.data.name])
    return Standardizer().fit(x)


def prepare_data(config: Config) -> tuple[torch.Tensor, Standardizer, str]:
    """The raw training data, a scaler fitted to them and their fingerprint (errors as ``ConfigError``)."""
    x, _, labels, _ = _read_training_data(config)
    return x, _fit_scaler(config, x), _fingerprint(x, labels)


def augment(config: Config, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A training batch of scaled images, flipped (``data.hflip``) and dequantized (``data.dequantize``:
    uniform noise across one pixel bin, ``2 / levels`` wide in ``[-1, 1]``), both drawn from ``generator``."""
    if config.data.hflip:
        z = random_hflip(z, generator)
    if config.data.dequantize:
        z = z + (2 / IMAGE_LEVELS[config.data.name]) * rand_like(z, generator)
    return z


def learned_moments(config: Config, data: torch.Tensor, labels: torch.Tensor | None) -> dict[str, dict]:
    """What a run keeps for ``sample_fast``'s Gaussian start: the mean and covariance (model units) of the
    data the model learns, as ``augment`` draws them (with their mirror images under ``data.hflip``,
    spread over each pixel's bin under ``data.dequantize``), and for a conditional run one Gaussian per
    class or cluster (``gaussian.component_moments``)."""
    if config.data.hflip:
        data = torch.cat([data, data.flip(-1)])
        labels = None if labels is None else torch.cat([labels, labels])
    moments = {"moments": data_moments(data)}
    if labels is not None:
        moments["component_moments"] = component_moments(data, labels, config.model.num_classes)
    if config.data.dequantize:
        width = 2 / IMAGE_LEVELS[config.data.name]
        moments = {key: _plus_uniform(value, width) for key, value in moments.items()}
    return {key: value.state_dict() for key, value in moments.items()}


def _plus_uniform(gaussians: GaussianMixture, width: float) -> GaussianMixture:
    """The moments of ``x + width u`` with ``u ~ U[0, 1)`` in every coordinate, independent of ``x``
    (dequantisation): each mean moves by ``width / 2``, each variance grows by ``width² / 12``."""
    spread = gaussians.smooth(width / math.sqrt(12))
    return type(gaussians).from_eigen(
        spread.means + width / 2, spread.log_weights, spread.variances, spread.rotations
    )


def drop_labels(y: torch.Tensor, p: float, null: int, generator: torch.Generator) -> torch.Tensor:
    """``y`` with each label replaced by the null label ``null`` with probability ``p`` (label dropout,
    Ho & Salimans 2022), drawn from ``generator``."""
    dropped = torch.rand(y.shape, generator=generator, device=y.device) < p
    return torch.where(dropped, torch.full_like(y, null), y)


# --------------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    """What ``train`` did: the steps done, the last checkpoint, and the signal that stopped it early."""

    step: int  # steps done
    checkpoint: Path | None  # the last checkpoint written (None if nothing was to be done)
    interrupted: int = 0  # the signal number that stopped the run early, else 0
    examples: int = 0  # the training examples read


def train(
    config: Config, run_dir: str | Path, resume: bool = False, force: bool = False, progress: bool = True
) -> TrainResult:
    """Train the model of ``config`` into ``run_dir`` (see the module docstring).

    ``resume`` continues from the newest checkpoint that verifies (starting afresh if there is
    none); ``force`` deletes an earlier run's files first. ``data.path`` is stored absolute. Everything
    (config, data, sizes, an existing run, the run directory's lock) is checked before ``run_dir`` is
    created or changed, so a run that cannot start leaves it as it was. Raises ``RunError`` /
    ``ConfigError`` for misuse, another process writing ``run_dir`` and a full disk, ``TrainingError``
    when the loss stops being finite.
    """
    run_dir = Path(run_dir)
    config = with_absolute_paths(config)
    with distributed(config.train.device) as (d, device), ExitStack() as lock:
        try:
            return _train(config, run_dir, resume, force, progress, d, device, lock)
        except OSError as error:
            if error.errno not in FULL_DISK:
                raise
            raise RunError(_full_disk(config, run_dir, error)) from None


def _full_disk(config: Config, run_dir: Path, error: OSError) -> str:
    """The sentence for a disk that filled up during training: how much room training needs."""
    sizes = [p.stat().st_size for p in checkpoint_dir(run_dir).glob("step-*.safetensors")]
    each = f" of about {max(sizes) / 2**20:.3g} MiB each" if sizes else ""
    k = config.train.keep_last
    return (
        f"no room left to write {error.filename or run_dir} ({error.strerror}): training needs room for "
        f"train.keep_last + 1 = {k + 1} checkpoints{each}; free some space and continue with --resume"
    )


def _train(
    config: Config, run_dir: Path, resume: bool, force: bool, progress: bool, d: Dist, device, lock: ExitStack
) -> TrainResult:
    t = config.train
    if t.batch_size % d.world:
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be divisible by the number of processes ({d.world})"
        )
    if d.world > 1 and config.objective.kind == "ism" and config.objective.trace == "exact":
        raise ConfigError("ism with trace = exact runs on one process; use trace = hutchinson with torchrun")
    _existing_run_files(run_dir, resume, force)  # refuse an existing run early; nothing is touched yet
    locked = d.main and run_dir.is_dir()
    if locked:  # one writer per run directory, from the first read of its checkpoints to the last write
        lock.enter_context(run_lock(run_dir))
    ckpt = latest_good(run_dir, check_run_checkpoint) if resume else None

    raw, columns, labels, classes, fingerprint, scaler, sigma_max = _training_data(config, ckpt, run_dir)
    check_training_memory(config, tuple(raw.shape[1:]), raw.shape[0])
    data = scaler.transform(raw).to(device)
    labels = None if labels is None else labels.to(device)
    diffusion = build(config, tuple(raw.shape[1:]), sigma_max, device, t.precision, t.compile)
    trainer = _trainer(diffusion.model, config, ckpt)
    start = trainer.step_count
    if d.main:  # every check has passed: only now is the run directory created or cleared
        _prepare_run_dir(run_dir, resume, force)
        if not locked:
            lock.enter_context(run_lock(run_dir))
            if any(os.path.lexists(run_dir / name) for name in RUN_FILES):
                raise RunError(f"another process started a run in {run_dir} meanwhile; it is left as it is")
    d.barrier()
    if d.main:
        atomic_write(run_dir / "config.toml", to_toml(config).encode())
        _truncate_metrics(run_dir / "metrics.jsonl", start)

    meta = {
        "config": config.model_dump(),
        "data_shape": list(raw.shape[1:]),
        "data_fingerprint": fingerprint,
        "columns": list(columns),
        "classes": list(classes),
        "sigma_max": sigma_max,
        "world_size": d.world,
    }

    clustered = config.data.labels == "clusters" and labels is not None
    kept = learned_moments(config, data, labels)  # sample_fast's Gaussian start (gaussian.py)
    if clustered:
        kept["clusters"] = cluster_state(data, labels, config.model.num_classes)
    elif labels is not None:  # the prior of the class a partly observed row is inpainted from
        kept["class_weights"] = torch.bincount(
            labels.cpu(), minlength=config.model.num_classes
        ).double() / len(labels)

    batch = t.batch_size
    lo, hi = d.rows(batch)
    score_fn = local_rows(d.wrap(diffusion.model, device), lo, hi, batch) if d.world > 1 else diffusion.model
    objective = OBJECTIVES[config.objective.kind]
    order = EpochOrder(data.shape[0], batch, t.seed, device)
    generator = make_generator(0, device)
    reduce_sum = d.reduce(dist.ReduceOp.SUM)
    window = LossWindow(start, d.reduce(dist.ReduceOp.MIN), reduce_sum, d.world)
    if ckpt is not None:  # the losses since the last metrics line, so that the next line averages all
        window.start = ckpt.state["loss_window"]["start"]
        window.losses = list(ckpt.state["loss_window"]["losses"].to(device))

    def save(step: int) -> Path | None:
        losses = torch.stack(window.losses).float() if window.losses else torch.zeros(0, device=device)
        if reduce_sum is not None and d.world > 1:  # each step's loss over all processes
            reduce_sum(losses)
            losses = losses / d.world
        if not d.main:
            return None
        model, ema = trainer.model, trainer.ema
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(model),
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"torch_cpu": torch.get_rng_state()},
            "loss_window": {"start": window.start, "losses": losses},
            **kept,
        }
        return save_checkpoint(run_dir, step, state, meta | {"step": step}, keep_last=t.keep_last)

    if start >= t.steps:
        return TrainResult(start, ckpt.path if ckpt else None, examples=raw.shape[0])

    def loss_fn(step: int) -> torch.Tensor:
        generator.manual_seed(derive_seed(t.seed, "noise", step))
        rows = order(step)
        x = augment(config, data[rows], generator)
        if labels is None:
            return objective(score_fn, x, diffusion, generator)[lo:hi].mean()
        y = drop_labels(labels[rows], t.label_dropout, config.model.num_classes, generator)
        return objective(score_fn, x, diffusion, generator, y=y)[lo:hi].mean()

    last = {"saved": start, "path": ckpt.path if ckpt else None, "signal": 0}
    tick = {"step": start, "time": time.perf_counter()}
    metrics = open(run_dir / "metrics.jsonl", "a") if d.main else None

    def check_finite() -> None:
        bad = window.first_non_finite()
        if bad is not None:
            raise TrainingError(
                f"the loss is not finite at step {bad}; stopped without saving, the last good "
                f"checkpoint is step {last['saved']}; lower train.lr or set train.grad_clip"
            )

    def after_step(done: int, loss: torch.Tensor, bar) -> bool:
        window.add(loss)
        if done % t.log_every == 0 or done == t.steps:
            check_finite()
            now = time.perf_counter()
            record = {
                "step": done,
                "loss": window.mean(),
                "lr": learning_rate(config, done - 1),
                "grad_norm": float(trainer.grad_norm() if t.grad_clip == 0 else trainer.last_grad_norm),
                "steps_per_s": (done - tick["step"]) / max(now - tick["time"], 1e-9),
            }
            tick.update(step=done, time=now)
            window.reset(done)
            if metrics is not None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
        signum = d.max_int(stop.signum, device)  # a signal to any process stops them all
        if done % t.ckpt_every == 0 or done == t.steps or signum:
            check_finite()
            last["path"], last["saved"] = save(done), done
        last["signal"] = signum
        return bool(signum)

    try:
        # the global CPU generator (dropout's) is the run's own: seeded, stored, restored on resume
        with _StopSignal() as stop, torch.random.fork_rng(devices=[]):
            if ckpt is None:
                torch.manual_seed(derive_seed(t.seed, "global", 0))
            else:
                torch.set_rng_state(ckpt.state["rng"]["torch_cpu"])
            done = fit(trainer, loss_fn, t.steps, after_step, progress=progress and d.main, desc="train")
    finally:
        if metrics is not None:
            metrics.close()
    d.barrier()
    return TrainResult(done, last["path"], interrupted=last["signal"], examples=raw.shape[0])


def _training_data(config: Config, ckpt: Checkpoint | None, run_dir: Path) -> tuple:
    """The raw training data, their columns, labels (or None) and class names, their fingerprint, the
    scaler and the resolved sigma_max: fitted afresh, or when resuming the checkpoint's, once the config
    and data are the run's own."""
    raw, columns, labels, classes = _read_training_data(config)
    if config.train.batch_size > raw.shape[0]:
        raise ConfigError(
            f"train.batch_size = {config.train.batch_size} exceeds the {raw.shape[0]} training examples; "
            f"set train.batch_size to at most {raw.shape[0]}"
        )
    scaler, fingerprint = _fit_scaler(config, raw), _fingerprint(raw, labels)
    if ckpt is None:
        sigma_max = initial_sigma_max(config, scaler.transform(raw))
        return raw, columns, labels, classes, fingerprint, scaler, sigma_max
    _check_same_run(config, ckpt.meta, run_dir)
    _check_same_data(ckpt.meta, fingerprint, columns, run_dir, classes)
    scaler = Standardizer.from_state_dict(ckpt.state["scaler"])
    return raw, columns, labels, classes, fingerprint, scaler, ckpt.meta["sigma_max"]


def _trainer(model: torch.nn.Module, config: Config, ckpt: Checkpoint | None) -> Trainer:
    """AdamW with warm-up, clipping and an EMA of ``model``; resumed (weights, moments, EMA, the step)
    from ``ckpt`` if given."""
    t = config.train
    # the fused kernel: one pass over all parameters instead of a dozen ops per tensor; 1.07x the steps/s
    # of the digits preset in eager fp32 on a CPU and 1.14x compiled in bf16 (bench_throughput)
    fused = next(model.parameters()).device.type in FUSED_ADAMW_DEVICES
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)
    ema = EMA(model, t.ema_decay)
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt.state["model"])
        optimizer.load_state_dict(ckpt.state["optimizer"])
        ema.load_state_dict(ckpt.state["ema"])
        start = ckpt.step
    schedule = warmup_schedule(optimizer, t.warmup, last_step=start - 1)
    return Trainer(model, optimizer, schedule, grad_clip=t.grad_clip, ema=ema, step=start)
