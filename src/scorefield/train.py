"""The training loop, and runs read back from their checkpoints.

``train(config, run_dir)`` fits a score model to the data a ``Config`` names: the data are
standardised by a stored ``Standardizer`` (images: mapped to ``[-1, 1]`` by ``image_scaler``, then
optionally flipped and dequantized afresh at every step); the model is an MLP or a U-Net wrapped by
``ScoreModel`` (SDE kinds) or ``NoiseConditionalScore`` (``ncsn``); the objective comes from the
plain dict ``OBJECTIVES``.
AdamW with linear warm-up, gradient clipping and an EMA of the weights (used for sampling);
``metrics.jsonl``, a tqdm bar, periodic checkpoints; SIGINT/SIGTERM write a checkpoint and stop.

Determinism: nothing random carries state from one step to the next. Step ``k`` reads the data
order from a permutation seeded by ``(seed, epoch)`` and draws its noise from a generator seeded by
``(seed, k)``, so a run killed at any point and resumed from a checkpoint ends bitwise equal to an
uninterrupted one. Under torchrun (``WORLD_SIZE > 1``) every process draws the same global batch
and the same noise for all of it, but evaluates the network on its own contiguous share of the rows
only; gradients are averaged by ``DistributedDataParallel``. Example ``i`` of a step therefore sees
the same data and noise whatever the number of processes, and N processes match one.

``load_run(run_dir)`` rebuilds model (EMA weights), SDE, scaler and config from the newest good
checkpoint alone, and samples or evaluates log-likelihoods in data units.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from . import losses
from .checkpoint import CheckpointError, atomic_write, latest_good, save_checkpoint
from .config import Config, ConfigError, parse_config, to_toml, with_absolute_paths
from .datasets import IMAGE_LEVELS, default_columns, image_scaler, random_hflip, read_data
from .fit import EMA, LossWindow, Trainer, fit, warmup_schedule
from .keyed import KeyedNoise
from .langevin import annealed_langevin
from .likelihood import log_likelihood
from .nets.mlp import MLP
from .nets.unet import UNet
from .noise import geometric_sigmas, resolve_sigma_max
from .samplers import sample_dpm, sample_ode, sample_pc
from .scalers import Standardizer
from .score import NoiseConditionalScore, ScoreModel
from .sde import SDE, VESDE, VPSDE, SubVPSDE
from .utils import default_device, make_generator, rand_like

__all__ = [
    "OBJECTIVES",
    "Run",
    "RunError",
    "Setup",
    "TrainResult",
    "TrainingError",
    "augment",
    "build",
    "build_net",
    "load_run",
    "train",
]

RUN_FILES = ("config.toml", "metrics.jsonl", "checkpoints")
SDES: dict[str, Callable[..., SDE]] = {
    "ve": lambda c, sigma_max: VESDE(c.sigma_min, sigma_max),
    "vp": lambda c, sigma_max: VPSDE(c.beta_min, c.beta_max),
    "subvp": lambda c, sigma_max: SubVPSDE(c.beta_min, c.beta_max),
    # the noise ladder read as a VE SDE spanning it: samplers and likelihoods of SDEs apply
    "ncsn": lambda c, sigma_max: VESDE(c.sigma_min, sigma_max),
}
SINGLE_LEVEL = ("dsm", "ssm", "ism")  # noise-conditional objectives trained at one noise level


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the checkpoints written so far are kept."""


class RunError(ValueError):
    """A run directory or its data cannot be used as asked (the message says what to do)."""


def derive_seed(seed: int, purpose: str, index: int) -> int:
    """A 63-bit seed for the ``index``-th draw of ``purpose``: independent streams from one seed."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --------------------------------------------------------------------------------------------------
# what a config builds


@dataclass
class Setup:
    """The objects a config describes: the SDE (for ``ncsn``, a VE SDE spanning the ladder), the
    noise levels (``ncsn``: the ladder, largest first; single-level objectives: that one level;
    SDE kinds: None) and the score model ``model(x, t)`` (SDE kinds) or ``model(x, sigma)`` (``ncsn``)."""

    config: Config
    data_shape: tuple[int, ...]
    sigma_max: float | None  # the resolved sde.sigma_max (ve, ncsn)
    sde: SDE
    sigmas: torch.Tensor | None
    model: nn.Module

    @property
    def noise_conditional(self) -> bool:
        return self.config.sde.kind == "ncsn"

    @property
    def single_level(self) -> bool:
        return self.config.objective.kind in SINGLE_LEVEL

    def score_t(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``∇log p_t(x)`` for samplers and likelihoods (``ncsn``: at ``sigma = std(t)`` of the VE view)."""
        if self.noise_conditional:
            return self.model(x, self.sde.marginal(t)[1].to(x.dtype))
        return self.model(x, t)

    def score_sigma(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``∇log p_sigma(x)`` for annealed Langevin (VE: at the time ``t`` whose std is ``sigma``)."""
        if self.noise_conditional:
            return self.model(x, sigma)
        return self.model(x, self.sde.t_from_std(sigma).to(x.dtype))


def noise_levels(config: Config, sigma_max: float | None) -> torch.Tensor | None:
    """The ladder (largest first) of ncsn and of annealed Langevin on VE; one level for dsm/ssm/ism."""
    c = config.sde
    if config.objective.kind in SINGLE_LEVEL:
        return torch.tensor([config.objective.sigma or c.sigma_min])
    if c.kind in ("ncsn", "ve"):
        return geometric_sigmas(sigma_max, c.sigma_min, c.n_levels)
    return None


def build_net(config: Config, data_shape: tuple[int, ...]) -> nn.Module:
    """The network ``F(x, c)`` of ``model.kind``: an MLP on the flattened data, or a U-Net on ``[C, H, W]``."""
    m = config.model
    if m.kind == "mlp":
        return MLP(
            math.prod(data_shape), hidden=m.hidden, depth=m.depth, cond=True, embed_dim=m.embed_dim,
            embedding=m.embedding,
        )  # fmt: skip
    if len(data_shape) != 3:
        raise ConfigError(f"model.kind = unet needs images [C, H, W], but the data have shape {data_shape}")
    try:
        return UNet(
            data_shape[0], max(data_shape[1:]), channels=m.channels, channel_mults=m.channel_mults,
            n_res_blocks=m.n_res_blocks, attention_resolutions=m.attention_resolutions, dropout=m.dropout,
            embed_dim=m.embed_dim, embedding=m.embedding,
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None


def build(
    config: Config, data_shape: tuple[int, ...], sigma_max: float | None, device: torch.device | str = "cpu"
) -> Setup:
    """SDE, noise levels and a freshly initialised model (weights seeded by ``train.seed``)."""
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the global RNG
        torch.manual_seed(config.train.seed)
        net = build_net(config, data_shape)
    sde = SDES[config.sde.kind](config.sde, sigma_max)
    model = (
        NoiseConditionalScore(net)
        if config.sde.kind == "ncsn"
        else ScoreModel(net, sde, param=config.model.param)
    )
    sigmas = noise_levels(config, sigma_max)
    return Setup(
        config,
        tuple(data_shape),
        sigma_max,
        sde,
        None if sigmas is None else sigmas.to(device),
        model.to(device),
    )


# --------------------------------------------------------------------------------------------------
# objectives: (score_fn, x, setup, generator) -> per-example loss [B]

Objective = Callable[[Callable, torch.Tensor, Setup, torch.Generator], torch.Tensor]


def _sde_dsm(score_fn, x, setup, generator):
    o = setup.config.objective
    return losses.sde_dsm(
        score_fn, setup.sde, x, weighting=o.weighting, eps=setup.config.sde.eps,
        importance_sampling=o.importance_sampling, generator=generator,
    )  # fmt: skip


def _ncsn(score_fn, x, setup, generator):
    return losses.ncsn(score_fn, x, setup.sigmas, generator=generator)


def _dsm(score_fn, x, setup, generator):
    return losses.dsm(score_fn, x, float(setup.sigmas[0]), generator=generator)


def _ssm(score_fn, x, setup, generator):
    sigma, o = float(setup.sigmas[0]), setup.config.objective
    return losses.ssm(lambda y: score_fn(y, sigma), x, n_projections=o.n_projections, generator=generator)


def _ism(score_fn, x, setup, generator):
    sigma, o = float(setup.sigmas[0]), setup.config.objective
    return losses.ism(
        lambda y: score_fn(y, sigma), x, trace=o.trace, n_probes=o.n_projections, generator=generator
    )


OBJECTIVES: dict[str, Objective] = {"sde_dsm": _sde_dsm, "ncsn": _ncsn, "dsm": _dsm, "ssm": _ssm, "ism": _ism}


def _local_rows(module: nn.Module, lo: int, hi: int, batch: int) -> Callable:
    """``module(x, c)`` on this process's rows ``[lo, hi)`` of every ``batch`` rows, zeros elsewhere.

    A loss may evaluate the score on its batch repeated (sliced score matching's projections), so
    row ``r`` belongs to example ``r mod batch``. Those zero rows give losses nobody reads.
    """
    cache: dict[int, torch.Tensor] = {}

    def score_fn(x: torch.Tensor, c):
        repeats = x.shape[0] // batch
        if repeats not in cache:
            offsets = torch.arange(repeats, device=x.device)[:, None] * batch
            cache[repeats] = (offsets + torch.arange(lo, hi, device=x.device)).flatten()
        rows = cache[repeats]
        c_rows = c[rows] if isinstance(c, torch.Tensor) and c.ndim == 1 and c.shape[0] == x.shape[0] else c
        return torch.zeros_like(x).index_copy(0, rows, module(x[rows], c_rows))

    return score_fn


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
# distributed set-up


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_state() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


@contextmanager
def distributed(device_name: str = "auto"):
    """Under torchrun (``WORLD_SIZE > 1``) join the process group (gloo on CPU, nccl on CUDA) and yield
    ``(Dist, device)``; a single process yields ``(Dist(), device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = default_device(None if device_name == "auto" else device_name)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield _dist_state(), device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield _dist_state(), device
    finally:
        dist.destroy_process_group()


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
    """Resuming may change train.* and sample.*, never what defines the model and its data."""
    old = stored["config"]
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


def _fingerprint(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _check_same_data(
    stored: dict[str, Any], fingerprint: str, columns: tuple[str, ...], run_dir: Path
) -> None:
    """Resuming needs the very data the run was trained on, under the same column names (a checkpoint
    written before names were stored has none to compare)."""
    if stored["data_fingerprint"] != fingerprint:
        raise RunError(f"the training data differ from those the run in {run_dir} was trained on")
    old = stored.get("columns")
    if old is not None and tuple(old) != columns:
        raise RunError(
            f"the training data have columns ({', '.join(columns)}) but the run in {run_dir} was trained "
            f"on ({', '.join(old)}); resume with the run's data or start over with --force"
        )


def _read_training_data(config: Config) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The raw training data and their column names (errors as ``ConfigError``)."""
    try:
        x, columns = read_data(config.data)
    except (OSError, ValueError) as error:
        key = "data.path" if config.data.path is not None else "data.name"
        raise ConfigError(f"{key}: {error}") from None
    if x.shape[0] < 2:
        raise ConfigError(f"the training data hold {x.shape[0]} example(s); at least 2 are needed")
    return x, columns


def _fit_scaler(config: Config, x: torch.Tensor) -> Standardizer:
    if config.data.images:
        return image_scaler(tuple(x.shape[1:]), IMAGE_LEVELS[config.data.name])
    return Standardizer().fit(x)


def prepare_data(config: Config) -> tuple[torch.Tensor, Standardizer, str]:
    """The raw training data, a scaler fitted to them and their fingerprint (errors as ``ConfigError``)."""
    x, _ = _read_training_data(config)
    return x, _fit_scaler(config, x), _fingerprint(x)


def augment(config: Config, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A training batch of scaled images, flipped (``data.hflip``) and dequantized (``data.dequantize``:
    uniform noise across one pixel bin, ``2 / levels`` wide in ``[-1, 1]``), both drawn from ``generator``."""
    if config.data.hflip:
        z = random_hflip(z, generator)
    if config.data.dequantize:
        z = z + (2 / IMAGE_LEVELS[config.data.name]) * rand_like(z, generator)
    return z


# --------------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
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

    raw, columns = _read_training_data(config)
    scaler, fingerprint = _fit_scaler(config, raw), _fingerprint(raw)
    if ckpt is not None:
        _check_same_run(config, ckpt.meta, run_dir)
        _check_same_data(ckpt.meta, fingerprint, columns, run_dir)
        scaler = Standardizer.from_state_dict(ckpt.state["scaler"])
        sigma_max = ckpt.meta["sigma_max"]
    else:
        sigma_max = _initial_sigma_max(config, scaler.transform(raw))
    data = scaler.transform(raw).to(device)
    setup = build(config, tuple(raw.shape[1:]), sigma_max, device)
    model = setup.model
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
    trainer = Trainer(model, optimizer, schedule, grad_clip=t.grad_clip, ema=ema, step=start)
    if d.main:  # every check has passed: only now is the run directory created or cleared
        _prepare_run_dir(run_dir, resume, force)
    if d.world > 1:
        dist.barrier()
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
    }

    def save(step: int) -> Path | None:
        if not d.main:
            return None
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"torch_cpu": torch.get_rng_state()},
        }
        return save_checkpoint(run_dir, step, state, meta | {"step": step}, keep_last=t.keep_last)

    if start >= t.steps:
        return TrainResult(start, ckpt.path if ckpt else None)

    batch = t.batch_size
    lo, hi = d.rank * batch // d.world, (d.rank + 1) * batch // d.world
    if d.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
        score_fn = _local_rows(wrapped, lo, hi, batch)
    else:
        score_fn = model
    objective = OBJECTIVES[config.objective.kind]
    order = EpochOrder(data.shape[0], batch, t.seed, device)
    generator = make_generator(0, device)

    def loss_fn(step: int) -> torch.Tensor:
        generator.manual_seed(derive_seed(t.seed, "noise", step))
        x = augment(config, data[order(step)], generator)
        return objective(score_fn, x, setup, generator)[lo:hi].mean()

    reduce_min = (lambda v: dist.all_reduce(v, op=dist.ReduceOp.MIN)) if d.world > 1 else None
    window = LossWindow(start, reduce_min, dist.all_reduce if d.world > 1 else None, d.world)
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
        signum = stop.signum
        if d.world > 1:
            flag = torch.tensor([signum], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag)
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
    if d.world > 1:
        dist.barrier()
    return TrainResult(done, last["path"], interrupted=last["signal"])


def _initial_sigma_max(config: Config, z: torch.Tensor) -> float | None:
    """``sde.sigma_max`` as a number (given, or ``"auto"`` from the standardised data); None for VP kinds."""
    if config.sde.kind not in ("ve", "ncsn"):
        return None
    generator = torch.Generator().manual_seed(derive_seed(config.train.seed, "sigma_max", 0))
    sigma_max = resolve_sigma_max(config.sde.sigma_max, z, generator=generator)
    if sigma_max <= config.sde.sigma_min:
        raise ConfigError(
            f"sde.sigma_max resolved to {sigma_max:g}, not above sde.sigma_min ({config.sde.sigma_min})"
        )
    return sigma_max


# --------------------------------------------------------------------------------------------------
# a trained run


@dataclass
class Run:
    """A trained run: its config, the built objects (model with EMA or last weights), scaler and step,
    and ``columns``, the names of the training data's features (a CSV's header, else ``x0, x1, ...``;
    one per feature of a flattened example)."""

    run_dir: Path
    config: Config
    setup: Setup
    scaler: Standardizer
    step: int
    device: torch.device
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.columns = tuple(self.columns) or default_columns(math.prod(self.data_shape))

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.setup.data_shape

    def check_data(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise RunError(
                f"the data have shape {tuple(x.shape[1:])} per example but the run in {self.run_dir} "
                f"was trained on {self.data_shape}"
            )

    def check_columns(self, names: tuple[str, ...] | None, source: str | Path) -> None:
        """Refuse data from ``source`` whose column names differ from the training data's. Data without
        names (None: a ``.npy`` file, a CSV without header) and a run trained on data without names
        (``x0, x1, ...``) are only checked for their width, by ``check_data``."""
        if names is None or self.columns == default_columns(len(self.columns)):
            return
        if tuple(names) != self.columns:
            raise RunError(
                f"{source} has columns ({', '.join(names)}) but the run in {self.run_dir} was trained on "
                f"({', '.join(self.columns)}); give the file the run's columns, in that order"
            )

    def _blocks(self, n: int, batch_size: int):
        """This process's blocks ``(start, stop)`` of ``n`` items in blocks of ``batch_size``."""
        d = _dist_state()
        for index, start in enumerate(range(0, n, batch_size)):
            if index % d.world == d.rank:
                yield start, min(start + batch_size, n)

    @staticmethod
    def _gather(out: torch.Tensor) -> torch.Tensor:
        """Each block was filled by one process and is zero in the others: their sum has every block."""
        if _dist_state().world > 1:
            dist.all_reduce(out)
        return out

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: str | None = None,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """``n`` samples in data units, ``[n, *data_shape]`` (torchrun: split over processes, all get all).

        Every random number of sample ``i`` (its prior draw and, for pc, em and ald, the noise of every
        step) is keyed by ``(seed, i)`` alone (``KeyedNoise``), so sample ``i`` is the same for any
        ``batch_size`` and any number of processes, up to float rounding: matrix products over
        batches of different sizes may round differently in the last bit, and a chaotic sampler can
        grow such differences.
        """
        s = self.config.sample
        sampler = sampler or s.sampler
        steps = steps or s.steps
        batch_size = batch_size or s.batch_size
        if sampler not in SAMPLERS:
            raise RunError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.setup.single_level and sampler != "ald":
            raise RunError(
                f"a model trained at one noise level ({self.config.objective.kind}) has no time axis; "
                "sample it with ald"
            )
        if sampler == "ald" and self.setup.sigmas is None:
            raise RunError(f"ald needs noise levels; the run's sde.kind ({self.config.sde.kind}) has none")
        out = torch.zeros((n, *self.data_shape), device=self.device)
        blocks = list(self._blocks(n, batch_size))
        for start, stop in tqdm(blocks, disable=not progress, desc="sample", unit="block"):
            noise = KeyedNoise(seed, torch.arange(start, stop, device=self.device))
            x_T = noise.randn((stop - start, *self.data_shape))
            out[start:stop] = SAMPLERS[sampler](self, x_T, steps, noise)
        return self.scaler.inverse_transform(self._gather(out).cpu())

    def log_prob(
        self,
        x: torch.Tensor,
        divergence: str = "exact",
        n_probes: int = 1,
        seed: int = 0,
        batch_size: int = 1000,
    ) -> torch.Tensor:
        """Log-density of ``x`` (data units, ``[N, *data_shape]``) in nats, ``[N]`` float64, through the
        probability-flow ODE at ``t = sde.eps``, plus the scaler's log-determinant."""
        self.check_data(x)
        if self.setup.single_level:
            raise RunError(
                f"a model trained at one noise level ({self.config.objective.kind}) has no likelihood; "
                "train with ncsn or an SDE"
            )
        s = self.config.sample

        def log_prob_z(z: torch.Tensor) -> torch.Tensor:
            z = z.to(self.device)
            out = torch.zeros(z.shape[0], dtype=torch.float64, device=self.device)
            for start, stop in self._blocks(z.shape[0], batch_size):
                generator = KeyedNoise(seed, torch.arange(start, stop, device=self.device))
                logp, _ = log_likelihood(
                    self.setup.score_t, self.setup.sde, z[start:stop], divergence=divergence,
                    n_probes=n_probes, rtol=s.rtol, atol=s.atol, eps=self.config.sde.eps, generator=generator,
                )  # fmt: skip
                out[start:stop] = logp.to(torch.float64)
            return self._gather(out).cpu()

        return self.scaler.log_prob(log_prob_z, x.to(torch.float32))


def _sample_ode(run: Run, x_T: torch.Tensor, steps: int, generator) -> torch.Tensor:
    s = run.config.sample
    n_steps = None if s.ode_method == "dopri5" else steps
    x, _ = sample_ode(
        run.setup.score_t, run.setup.sde, run.setup.sde.prior_std * x_T, method=s.ode_method,
        n_steps=n_steps, rtol=s.rtol, atol=s.atol, eps=s.eps,
    )  # fmt: skip
    return x


def _sample_dpm(run: Run, x_T: torch.Tensor, steps: int, generator) -> torch.Tensor:
    x, _ = sample_dpm(run.setup.score_t, run.setup.sde, run.setup.sde.prior_std * x_T, steps)
    return x


def _sample_pc(
    run: Run, x_T: torch.Tensor, steps: int, generator, predictor="reverse_diffusion", corrector=True
):
    s = run.config.sample
    use_corrector = corrector and s.n_corrector > 0
    return sample_pc(
        run.setup.score_t, run.setup.sde, run.setup.sde.prior_std * x_T, steps, predictor=predictor,
        corrector="langevin" if use_corrector else None, snr=s.snr, n_corrector_steps=max(s.n_corrector, 1),
        denoise=s.denoise, eps=s.eps, generator=generator,
    )  # fmt: skip


def _sample_em(run: Run, x_T: torch.Tensor, steps: int, generator) -> torch.Tensor:
    return _sample_pc(run, x_T, steps, generator, predictor="euler_maruyama", corrector=False)


def _sample_ald(run: Run, x_T: torch.Tensor, steps: int, generator) -> torch.Tensor:
    s, sigmas = run.config.sample, run.setup.sigmas
    return annealed_langevin(
        run.setup.score_sigma,
        float(sigmas[0]) * x_T,
        sigmas,
        s.step_lr,
        steps,
        denoise=s.denoise,
        generator=generator,
    )


SAMPLERS: dict[str, Callable[[Run, torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "ode": _sample_ode,
    "dpm": _sample_dpm,
    "pc": _sample_pc,
    "em": _sample_em,
    "ald": _sample_ald,
}


def load_run(run_dir: str | Path, device: str | torch.device | None = None, use_ema: bool = True) -> Run:
    """The run in ``run_dir`` from its newest checkpoint that verifies: EMA weights (or the last
    ones), SDE, noise levels, scaler and config. ``CheckpointError`` if none verifies."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory written by `scorefield train`")
    ckpt = latest_good(run_dir)
    if ckpt is None:
        raise CheckpointError(f"run directory {run_dir} holds no checkpoint; train it first")
    meta = ckpt.meta
    missing = [key for key in ("config", "data_shape", "sigma_max") if key not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint {ckpt.path} lacks {', '.join(missing)}: it is not one of a trained run"
        )
    config = parse_config(meta["config"])
    device = default_device(device)
    setup = build(config, tuple(meta["data_shape"]), meta["sigma_max"], device)
    setup.model.load_state_dict(ckpt.state["ema" if use_ema else "model"])
    setup.model.eval().requires_grad_(False)
    scaler = Standardizer.from_state_dict(ckpt.state["scaler"])
    columns = tuple(meta.get("columns") or ())  # runs written before names were stored: x0, x1, ...
    return Run(run_dir, config, setup, scaler, ckpt.step, device, columns)
