"""What a config builds: the SDE, the noise levels, the network, the score model and the objective.

``build(config, data_shape, sigma_max)`` is the one place a validated ``Config`` becomes objects: the
SDE of ``sde.kind`` (from the table ``kinds.SDE_KINDS``; for the ladder ``ncsn``, the VE SDE spanning
it), its noise levels, an MLP or a U-Net (``build_net``) wrapped by ``ScoreModel`` (continuous SDEs)
or ``NoiseConditionalScore`` (a ladder), all in a ``DiffusionModel``. ``OBJECTIVES`` maps ``objective.kind``
to its per-example loss; ``sde_dsm`` also takes class labels ``y`` (``model.num_classes > 0``). ``initial_sigma_max`` resolves ``sde.sigma_max`` (a number, or ``"auto"``
from the standardised data) for the kinds whose SDE explodes, drawing from the ``"sigma_max"`` stream
of ``train.seed`` (``utils.derive_seed``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import losses
from ..nets.mlp import MLP
from ..nets.unet import UNet
from ..noise import geometric_sigmas, resolve_sigma_max
from ..score import NoiseConditionalScore, ScoreModel
from ..sde import SDE
from ..utils import derive_seed
from .config import Config, ConfigError
from .kinds import SDE_KINDS, SINGLE_LEVEL, has_levels, is_ladder

__all__ = [
    "OBJECTIVES",
    "Objective",
    "DiffusionModel",
    "build",
    "build_net",
    "build_sde",
    "channels_last",
    "check_memory",
    "check_training_memory",
    "count_parameters",
    "machine_memory",
    "initial_sigma_max",
    "noise_levels",
]


@dataclass
class DiffusionModel:
    """The diffusion model a config describes: the SDE (for ``ncsn``, a VE SDE spanning the ladder), the
    noise levels (``ncsn``: the ladder, largest first; single-level objectives: that one level;
    SDE kinds: None) and the score model ``model(x, t)`` (SDE kinds) or ``model(x, sigma)`` (``ncsn``).
    With ``model.num_classes > 0`` the score functions take labels ``y[B]``; ``y=None`` is the null label,
    the unconditional score."""

    config: Config
    data_shape: tuple[int, ...]
    sigma_max: float | None  # the resolved sde.sigma_max (ve, ncsn)
    sde: SDE
    sigmas: torch.Tensor | None
    model: nn.Module

    @property
    def noise_conditional(self) -> bool:
        return is_ladder(self.config.sde.kind)

    @property
    def single_level(self) -> bool:
        return self.config.objective.kind in SINGLE_LEVEL

    def score_t(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``∇log p_t(x)`` for samplers and likelihoods (``ncsn``: at ``sigma = std(t)`` of the VE view);
        ``∇log p_t(x | y)`` with labels."""
        if self.noise_conditional:
            return self.model(x, self.sde.marginal(t)[1].to(x.dtype))
        return self.model(x, t) if y is None else self.model(x, t, y)

    def score_sigma(
        self, x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``∇log p_sigma(x)`` for annealed Langevin (VE: at the time ``t`` whose std is ``sigma``)."""
        if self.noise_conditional:
            return self.model(x, sigma)
        t = self.sde.t_from_std(sigma).to(x.dtype)
        return self.model(x, t) if y is None else self.model(x, t, y)


def build_sde(config: Config, sigma_max: float | None) -> SDE:
    """The SDE of ``sde.kind`` (``ncsn``: the VE SDE spanning the ladder): one that explodes spans
    ``[sde.sigma_min, sigma_max]``, the others run over ``[sde.beta_min, sde.beta_max]``."""
    c = config.sde
    cls = SDE_KINDS[c.kind].sde
    if cls.explodes:
        return cls(sigma_min=c.sigma_min, sigma_max=sigma_max)
    return cls(beta_min=c.beta_min, beta_max=c.beta_max)


def noise_levels(config: Config, sigma_max: float | None) -> torch.Tensor | None:
    """The ladder (largest first) of ncsn and of annealed Langevin on VE; one level for dsm/ssm/ism."""
    c = config.sde
    if config.objective.kind in SINGLE_LEVEL:
        return torch.tensor([config.objective.sigma or c.sigma_min])
    if has_levels(c.kind):
        return geometric_sigmas(sigma_max, c.sigma_min, c.n_levels)
    return None


def initial_sigma_max(config: Config, z: torch.Tensor) -> float | None:
    """``sde.sigma_max`` as a number (given, or ``"auto"`` from the standardised data ``z``); None for
    the kinds whose SDE does not explode."""
    if not has_levels(config.sde.kind):
        return None
    generator = torch.Generator().manual_seed(derive_seed(config.train.seed, "sigma_max", 0))
    sigma_max = resolve_sigma_max(config.sde.sigma_max, z, generator=generator)
    if sigma_max <= config.sde.sigma_min:
        raise ConfigError(
            f"sde.sigma_max resolved to {sigma_max:g}, not above sde.sigma_min ({config.sde.sigma_min})"
        )
    return sigma_max


def build_net(config: Config, data_shape: tuple[int, ...]) -> nn.Module:
    """The network ``F(x, c)`` of ``model.kind``: an MLP on the flattened data, or a U-Net on ``[C, H, W]``."""
    m = config.model
    if m.kind == "mlp":
        return MLP(
            math.prod(data_shape), hidden=m.hidden, depth=m.depth, cond=True, embed_dim=m.embed_dim,
            embedding=m.embedding, num_classes=m.num_classes,
        )  # fmt: skip
    if len(data_shape) != 3:
        raise ConfigError(f"model.kind = unet needs images [C, H, W], but the data have shape {data_shape}")
    try:
        return UNet(
            data_shape[0], max(data_shape[1:]), channels=m.channels, channel_mults=m.channel_mults,
            n_res_blocks=m.n_res_blocks, attention_resolutions=m.attention_resolutions, dropout=m.dropout,
            embed_dim=m.embed_dim, embedding=m.embedding, num_classes=m.num_classes,
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None


# bf16 U-Nets on images of at least this size run their feature maps channels-last: on the CPU's
# oneDNN, the CIFAR-10 preset's U-Net (32x32) trained 1.03x and sampled 1.38x as fast so as without,
# the digits preset's (8x8) 0.81x and 0.65x (bench/results/throughput.md)
CHANNELS_LAST_MIN_SIZE = 32


def channels_last(config: Config, data_shape: tuple[int, ...], precision: str) -> bool:
    """Whether the network runs its feature maps channels-last (``CHANNELS_LAST_MIN_SIZE``)."""
    images = config.model.kind == "unet" and len(data_shape) == 3
    return images and precision == "bf16" and max(data_shape[1:]) >= CHANNELS_LAST_MIN_SIZE


def build(
    config: Config,
    data_shape: tuple[int, ...],
    sigma_max: float | None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
) -> DiffusionModel:
    """SDE, noise levels and a freshly initialised model (weights seeded by ``train.seed``) on ``device``,
    its network run in ``precision`` (channels-last where ``channels_last`` says) and compiled on request
    (``nets.Network.accelerate``; a precision the device cannot run is a ``ConfigError``)."""
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the global RNG
        torch.manual_seed(config.train.seed)
        net = build_net(config, data_shape)
    sde = build_sde(config, sigma_max)
    model = (
        NoiseConditionalScore(net)
        if is_ladder(config.sde.kind)
        else ScoreModel(net, sde, param=config.model.param)
    )
    sigmas = noise_levels(config, sigma_max)
    model.to(device)
    try:
        net.accelerate(precision, compile, channels_last=channels_last(config, data_shape, precision))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return DiffusionModel(
        config, tuple(data_shape), sigma_max, sde, None if sigmas is None else sigmas.to(device), model
    )


# --------------------------------------------------------------------------------------------------
# what a config asks to allocate, estimated before anything is allocated

STATE_COPIES = 5  # training holds weights, gradients, EMA weights and Adam's two moments
ACTIVATION_FACTOR = 6  # float32 activations kept per layer for the backward pass, generously


def machine_memory() -> int:
    """Bytes of physical memory of this machine (the bound a run's allocations are checked against)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def check_memory(need: float, what: str, advice: str) -> None:
    """``ConfigError`` when ``need`` bytes exceed this machine's memory: one sentence saying ``what``
    needs them and ``advice``."""
    have = machine_memory()
    if need > have:
        raise ConfigError(
            f"{what} need {_bytes(need)} of memory, more than this machine's {_bytes(have)}; {advice}"
        )


def count_parameters(config: Config, data_shape: tuple[int, ...]) -> int:
    """The parameters of ``build_net(config, data_shape)``, counted on PyTorch's meta device, which
    allocates nothing, so that a config of 10^18 parameters is refused rather than attempted."""
    with torch.device("meta"):
        net = build_net(config, data_shape)
    return sum(p.numel() for p in net.parameters())


def _activations_per_example(config: Config, data_shape: tuple[int, ...]) -> float:
    """A generous estimate of the float32 values a training step keeps per example."""
    m, numel = config.model, math.prod(data_shape)
    if m.kind == "mlp":
        return ACTIVATION_FACTOR * (numel + m.hidden * m.depth)
    height_width = math.prod(data_shape[1:])
    levels = sum(m.channels * mult * height_width / 4**i for i, mult in enumerate(m.channel_mults))
    return ACTIVATION_FACTOR * (numel + levels * (3 * m.n_res_blocks + 2))


def check_training_memory(config: Config, data_shape: tuple[int, ...], n: int) -> None:
    """Refuse, before anything is built, a run whose network, batch or data cannot fit in this machine's
    memory (``ConfigError``, one sentence naming the setting)."""
    params = count_parameters(config, data_shape)
    check_memory(
        4.0 * STATE_COPIES * params,
        f"the network ({params:.3g} parameters; model.hidden = {config.model.hidden}, model.depth = "
        f"{config.model.depth}) and its optimizer state",
        "choose a smaller model",
    )
    batch = config.train.batch_size
    check_memory(
        4.0 * batch * _activations_per_example(config, data_shape),
        f"the activations of a batch of train.batch_size = {batch}",
        "choose a smaller train.batch_size",
    )
    check_memory(4.0 * 3 * n * math.prod(data_shape), f"{n} training examples", "use fewer examples")


# --------------------------------------------------------------------------------------------------
# objectives: (score_fn, x, diffusion, generator) -> per-example loss [B]; sde_dsm also takes labels y

Objective = Callable[..., torch.Tensor]


def _sde_dsm(score_fn, x, diffusion, generator, y=None):
    """``losses.sde_dsm``; with labels ``y[B]`` (``model.num_classes > 0``), of ``score_fn(x_t, t, y)``."""
    o = diffusion.config.objective
    score = score_fn if y is None else lambda x_t, t: score_fn(x_t, t, y)
    return losses.sde_dsm(
        score, diffusion.sde, x, weighting=o.weighting, t_min=diffusion.config.sde.t_min,
        importance_sampling=o.importance_sampling, generator=generator,
    )  # fmt: skip


def _ncsn(score_fn, x, diffusion, generator):
    return losses.ncsn(score_fn, x, diffusion.sigmas, generator=generator)


def _dsm(score_fn, x, diffusion, generator):
    return losses.dsm(score_fn, x, float(diffusion.sigmas[0]), generator=generator)


def _ssm(score_fn, x, diffusion, generator):
    sigma, o = float(diffusion.sigmas[0]), diffusion.config.objective
    return losses.ssm(lambda y: score_fn(y, sigma), x, n_projections=o.n_projections, generator=generator)


def _ism(score_fn, x, diffusion, generator):
    sigma, o = float(diffusion.sigmas[0]), diffusion.config.objective
    return losses.ism(
        lambda y: score_fn(y, sigma), x, trace=o.trace, n_probes=o.n_projections, generator=generator
    )


# by kinds.OBJECTIVE_KINDS, the names the config accepts
OBJECTIVES: dict[str, Objective] = {"sde_dsm": _sde_dsm, "ncsn": _ncsn, "dsm": _dsm, "ssm": _ssm, "ism": _ism}
