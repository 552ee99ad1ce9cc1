"""Small helpers shared by every module: shape broadcasting, random generators, device choice."""

from __future__ import annotations

import hashlib

import torch

from .keyed import KeyedNoise

Generator = torch.Generator | KeyedNoise  # what the stochastic functions accept as ``generator``


def append_dims(x: torch.Tensor, n_dims: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``n_dims`` dimensions.

    A per-example quantity ``[B]`` becomes ``[B, 1]`` for ``[B, d]`` data and ``[B, 1, 1, 1]`` for
    ``[B, C, H, W]`` images, so one code path serves both.
    """
    missing = n_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but n_dims is {n_dims}, which is less")
    return x[(...,) + (None,) * missing]


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: ``[B, ...] -> [B]``."""
    return x.flatten(1).sum(dim=1)


def randn_like(x: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator`` (per sample for ``KeyedNoise``)."""
    if isinstance(generator, KeyedNoise):
        return generator.randn(x.shape, x.dtype).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rand_like(x: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``x``, drawn from ``generator`` (per sample for ``KeyedNoise``)."""
    if isinstance(generator, KeyedNoise):
        return generator.rand(x.shape, x.dtype).to(x.device)
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rademacher_like(x: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
    """Random signs (+1/-1 with equal probability) shaped like ``x``."""
    if isinstance(generator, KeyedNoise):
        return generator.rademacher(x.shape, x.dtype).to(x.device)
    bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
    return bits.to(x.dtype) * 2 - 1


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` seeded with ``seed`` on ``device``, or ``None`` when seed is ``None``."""
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed for the ``index``-th draw of ``purpose``: independent streams from one seed."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: the one asked for, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
