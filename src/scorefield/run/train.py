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
and stop.
``train.precision`` and ``train.compile`` set how the network runs (bfloat16 autocast, ``torch.compile``:
``nets.accelerated``); the weights, the optimiser's moments, the EMA and the checkpoints stay float32.

Determinism: nothing random carries state from one step to the next. Step ``k`` reads the data
order from a permutation seeded by ``(seed, epoch)`` and draws its noise from a generator seeded by
``(seed, k)``, so a run killed at any point and resumed from a checkpoint ends bitwise equal to an
uninterrupted one. Under torchrun (``WORLD_SIZE > 1``) every process draws the same global batch
and the same noise for all of it, but evaluates the network on its own contiguous share of the rows
only (``distributed.local_rows``); gradients are averaged by ``DistributedDataParallel``. Example
``i`` of a step therefore sees the same data and noise whatever the number of processes, and N
processes match one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..datasets import IMAGE_LEVELS, image_scaler, random_hflip, read_labelled_data
from ..files import atomic_write
from ..fit import EMA, LossWindow, Trainer, fit, warmup_schedule
from ..gaussian import component_moments, data_moments
from ..scalers import Standardizer
from ..utils import make_generator, rand_like
from .build import OBJECTIVES, build, derive_seed, initial_sigma_max
from .checkpoint import Checkpoint, latest_good, save_checkpoint
from .clusters import cluster_labels, cluster_state
from .config import Config, ConfigError, parse_config, to_toml, with_absolute_paths
from .distributed import Dist, distributed, local_rows

__all__ = [
    "EpochOrder",
    "RunError",
    "TrainResult",
    "TrainingError",
    "augment",
    "drop_labels",
    "learning_rate",
    "prepare_data",
    "train",
]

RUN_FILES = ("config.toml", "metrics.jsonl", "checkpoints")


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
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not (resume or force):
        raise RunError(
            f"run directory {run_dir} already holds a run; "
            "pass --resume to continue it or --force to start over"
        )
    return existing


def _prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Create ``run_dir``; with ``force`` (and not ``resume``) delete an earlier run's files first.
    Called only once everything the run needs has been checked."""
    existing = _existing_run_files(run_dir, resume, force)
    if force and not resume:
        for name in existing:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def _same_setting(section: str, key: str, old: Any, new: Any) -> bool:
    """Whether a stored config value equals a new one; paths are compared once resolved (a run written
    before paths were stored absolute holds ``data.path`` as typed, relative to the working directory)."""
    if (section, key) == ("data", "path") and old is not None and new is not None:
        return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
    return old == new


def _check_same_run(config: Config, stored: dict[str, Any], run_dir: Path) -> None:
    """Resuming may change train.* and sample.*, never what defines the model and its data (a key
    added since the run was written counts as its default)."""
    old = parse_config(stored["config"], stored=True).model_dump()
    new = config.model_dump()
    for section in ("data", "model", "sde", "objective"):
        for key, value in new[section].items():
            if not _same_setting(section, key, old[section].get(key), value):
                raise ConfigError(
                    f"{section}.{key} is {value!r} but the run in {run_dir} was trained with "
                    f"{old[section].get(key)!r}; resume with the run's value or start over with --force"
                )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after ``step`` by a run that died before its next checkpoint."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
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
    class names (a checkpoint written before names were stored has none to compare)."""
    if stored["data_fingerprint"] != fingerprint:
        raise RunError(f"the training data differ from those the run in {run_dir} was trained on")
    if tuple(stored.get("classes", ())) != tuple(classes):
        raise RunError(f"the training data's class names differ from those of the run in {run_dir}")
    old = stored.get("columns")
    if old is not None and tuple(old) != columns:
        raise RunError(
            f"the training data have columns ({', '.join(columns)}) but the run in {run_dir} was trained "
            f"on ({', '.join(old)}); resume with the run's data or start over with --force"
        )


def _read_training_data(
    config: Config,
) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor | None, tuple[str, ...]]:
    """The raw training data, their column names and, for ``model.num_classes > 0``, their labels and
    class names (else ``None, ()``); errors as ``ConfigError``."""
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
        moments = {key: value.plus_uniform(width) for key, value in moments.items()}
    return {key: value._asdict() for key, value in moments.items()}


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


def train(
    config: Config, run_dir: str | Path, resume: bool = False, force: bool = False, progress: bool = True
) -> TrainResult:
    """Train the model of ``config`` into ``run_dir`` (see the module docstring).

    ``resume`` continues from the newest checkpoint that verifies (starting afresh if there is
    none); ``force`` deletes an earlier run's files first. ``data.path`` is stored absolute. Everything
    (config, data, an existing run) is checked before ``run_dir`` is created or changed, so a run that
    cannot start leaves it as it was. Raises ``RunError`` / ``ConfigError`` for misuse,
    ``TrainingError`` when the loss stops being finite.
    """
    run_dir = Path(run_dir)
    config = with_absolute_paths(config)
    with distributed(config.train.device) as (d, device):
        return _train(config, run_dir, resume, force, progress, d, device)


def _train(
    config: Config, run_dir: Path, resume: bool, force: bool, progress: bool, d: Dist, device
) -> TrainResult:
    t = config.train
    if t.batch_size % d.world:
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be divisible by the number of processes ({d.world})"
        )
    if d.world > 1 and config.objective.kind == "ism" and config.objective.trace == "exact":
        raise ConfigError("ism with trace = exact runs on one process; use trace = hutchinson with torchrun")
    _existing_run_files(run_dir, resume, force)  # refuse an existing run early; nothing is touched yet
    ckpt = latest_good(run_dir) if resume else None

    raw, columns, labels, classes, fingerprint, scaler, sigma_max = _training_data(config, ckpt, run_dir)
    data = scaler.transform(raw).to(device)
    labels = None if labels is None else labels.to(device)
    setup = build(config, tuple(raw.shape[1:]), sigma_max, device, t.precision, t.compile)
    trainer = _trainer(setup.model, config, ckpt)
    start = trainer.step_count
    if d.main:  # every check has passed: only now is the run directory created or cleared
        _prepare_run_dir(run_dir, resume, force)
    d.barrier()
    if d.main:
        atomic_write(run_dir / "config.toml", to_toml(config).encode())
        _truncate_metrics(run_dir / "metrics.jsonl", start)

    meta = {
        "config": config.model_dump(),
        "data_shape": list(raw.shape[1:]),
        "data_fingerprint": fingerprint,
        "columns": list(columns),
        "sigma_max": sigma_max,
        "world_size": d.world,
        **({"classes": list(classes)} if labels is not None else {}),
    }

    clustered = config.data.labels == "clusters" and labels is not None
    kept = learned_moments(config, data, labels)  # sample_fast's Gaussian start (gaussian.py)
    if clustered:
        kept["clusters"] = cluster_state(data, labels, config.model.num_classes)
    elif labels is not None:  # the prior of the class a partly observed row is inpainted from
        kept["class_weights"] = torch.bincount(
            labels.cpu(), minlength=config.model.num_classes
        ).double() / len(labels)

    def save(step: int) -> Path | None:
        if not d.main:
            return None
        model, ema = trainer.model, trainer.ema
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(model),
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"torch_cpu": torch.get_rng_state()},
            **kept,
        }
        return save_checkpoint(run_dir, step, state, meta | {"step": step}, keep_last=t.keep_last)

    if start >= t.steps:
        return TrainResult(start, ckpt.path if ckpt else None)

    batch = t.batch_size
    lo, hi = d.rows(batch)
    score_fn = local_rows(d.wrap(setup.model, device), lo, hi, batch) if d.world > 1 else setup.model
    objective = OBJECTIVES[config.objective.kind]
    order = EpochOrder(data.shape[0], batch, t.seed, device)
    generator = make_generator(0, device)

    def loss_fn(step: int) -> torch.Tensor:
        generator.manual_seed(derive_seed(t.seed, "noise", step))
        rows = order(step)
        x = augment(config, data[rows], generator)
        if labels is None:
            return objective(score_fn, x, setup, generator)[lo:hi].mean()
        y = drop_labels(labels[rows], t.label_dropout, config.model.num_classes, generator)
        return objective(score_fn, x, setup, generator, y=y)[lo:hi].mean()

    window = LossWindow(start, d.reduce(dist.ReduceOp.MIN), d.reduce(dist.ReduceOp.SUM), d.world)
    last = {"saved": start, "path": ckpt.path if ckpt else None, "signal": 0, "tick": time.perf_counter()}
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
                "steps_per_s": (done - window.start) / max(now - last["tick"], 1e-9),
            }
            last["tick"] = now
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
        with _StopSignal() as stop:
            done = fit(trainer, loss_fn, t.steps, after_step, progress=progress and d.main, desc="train")
    finally:
        if metrics is not None:
            metrics.close()
    d.barrier()
    return TrainResult(done, last["path"], interrupted=last["signal"])


def _training_data(config: Config, ckpt: Checkpoint | None, run_dir: Path) -> tuple:
    """The raw training data, their columns, labels (or None) and class names, their fingerprint, the
    scaler and the resolved sigma_max: fitted afresh, or when resuming the checkpoint's, once the config
    and data are the run's own."""
    raw, columns, labels, classes = _read_training_data(config)
    scaler, fingerprint = _fit_scaler(config, raw), _fingerprint(raw, labels)
    if ckpt is None:
        sigma_max = initial_sigma_max(config, scaler.transform(raw))
        return raw, columns, labels, classes, fingerprint, scaler, sigma_max
    _check_same_run(config, ckpt.meta, run_dir)
    _check_same_data(ckpt.meta, fingerprint, columns, run_dir, classes)
    scaler = Standardizer.from_state_dict(ckpt.state["scaler"])
    return raw, columns, labels, classes, fingerprint, scaler, ckpt.meta["sigma_max"]


def _trainer(model: torch.nn.Module, config: Config, ckpt: Checkpoint | None) -> Trainer:
    """AdamW with warm-up, clipping and an EMA of ``model``; resumed (weights, moments, EMA, the CPU
    RNG, the step) from ``ckpt`` if given."""
    t = config.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    ema = EMA(model, t.ema_decay)
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt.state["model"])
        optimizer.load_state_dict(ckpt.state["optimizer"])
        ema.load_state_dict(ckpt.state["ema"])
        torch.set_rng_state(ckpt.state["rng"]["torch_cpu"])
        start = ckpt.step
    schedule = warmup_schedule(optimizer, t.warmup, last_step=start - 1)
    return Trainer(model, optimizer, schedule, grad_clip=t.grad_clip, ema=ema, step=start)
