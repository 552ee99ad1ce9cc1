"""A finished run, read back from its newest good checkpoint: sampling and log-densities in data units.

``load_run(run_dir)`` rebuilds the model (EMA weights, or the last ones), SDE, noise levels, scaler
and config from the newest checkpoint that verifies, and nothing else; a config stored by an earlier
version is read with its retired keys dropped. ``Run.sample`` dispatches to the plain dict
``SAMPLERS`` (probability-flow ODE, DPM-Solver++, predictor-corrector, Euler-Maruyama, annealed
Langevin); ``Run.log_prob`` integrates the probability-flow ODE. Under torchrun both split their
blocks over the processes, and every process gets all results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..datasets import default_columns
from ..keyed import KeyedNoise
from ..langevin import annealed_langevin
from ..likelihood import log_likelihood
from ..multistep import sample_fast
from ..samplers import sample_dpm, sample_ode, sample_pc
from ..scalers import Standardizer
from ..utils import default_device
from .build import Setup, build
from .checkpoint import CheckpointError, latest_good
from .config import Config, parse_config
from .distributed import blocks, gather
from .train import RunError

__all__ = ["SAMPLERS", "Run", "load_run"]


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

        ``sampler``, ``steps`` and ``batch_size`` default to the config's ``sample`` section.
        ``batch_size``, the samples per sampler call, changes memory and speed, not the samples: every
        random number of sample ``i`` (its prior draw and, for pc, em and ald, the noise of every step)
        is keyed by ``(seed, i)`` alone (``KeyedNoise``), so sample ``i`` is the same for any
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
        shares = list(blocks(n, batch_size))
        for start, stop in tqdm(shares, disable=not progress, desc="sample", unit="block"):
            noise = KeyedNoise(seed, torch.arange(start, stop, device=self.device))
            x_T = noise.randn((stop - start, *self.data_shape))
            out[start:stop] = SAMPLERS[sampler](self, x_T, steps, noise)
        return self.scaler.inverse_transform(gather(out).cpu())

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
            for start, stop in blocks(z.shape[0], batch_size):
                generator = KeyedNoise(seed, torch.arange(start, stop, device=self.device))
                logp, _ = log_likelihood(
                    self.setup.score_t, self.setup.sde, z[start:stop], divergence=divergence,
                    n_probes=n_probes, rtol=s.rtol, atol=s.atol, eps=self.config.sde.eps, generator=generator,
                )  # fmt: skip
                out[start:stop] = logp.to(torch.float64)
            return gather(out).cpu()

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


def _sample_fast(run: Run, x_T: torch.Tensor, steps: int, generator) -> torch.Tensor:
    """``sample_fast`` with a budget of ``steps`` score evaluations (``scorefield sample --nfe``)."""
    x, _ = sample_fast(run.setup.score_t, run.setup.sde, run.setup.sde.prior_std * x_T, steps)
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
    "fast": _sample_fast,
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
    config = parse_config(meta["config"], stored=True)
    device = default_device(device)
    setup = build(config, tuple(meta["data_shape"]), meta["sigma_max"], device)
    setup.model.load_state_dict(ckpt.state["ema" if use_ema else "model"])
    setup.model.eval().requires_grad_(False)
    scaler = Standardizer.from_state_dict(ckpt.state["scaler"])
    columns = tuple(meta.get("columns") or ())  # runs written before names were stored: x0, x1, ...
    return Run(run_dir, config, setup, scaler, ckpt.step, device, columns)
