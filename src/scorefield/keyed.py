"""Random numbers keyed by sample: draw ``k`` of sample ``i`` under seed ``s`` is a pure function of ``(s, i, k)``.

A sampler that takes its step noise from a ``torch.Generator`` gives sample ``i`` a value that depends
on every other sample in its batch (the generator's stream is consumed batch by batch), so the same
seed gives different samples for a different batch size or number of processes. ``KeyedNoise`` is a
counter-based source (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"): each
element is a hash of ``(seed, sample index, draw number, element)``, so sample ``i`` gets the same
noise whichever batch it sits in. It is accepted wherever the samplers take a ``generator``
(``utils.randn_like`` and its siblings dispatch on it), which is how EDM's per-sample generators
(Karras et al. 2022, ``generate.py``) are realised here without a Python loop over samples.

The hash is SplitMix64's finaliser (Steele et al. 2014), computed in int64 tensor arithmetic, so it
runs on any device and gives the same bits on every machine; normals come from pairs of 32-bit
uniforms by the Box-Muller transform (tails to 6.7 standard deviations), computed in float64 for
float64 draws and in float32 otherwise.
"""

from __future__ import annotations

import math

import torch

__all__ = ["KeyedNoise"]

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer (SplitMix64's increment)
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB
_LOW32 = 0xFFFFFFFF
_M64 = 2**64 - 1


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic: it copies the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser: a bijection of 64-bit patterns in which every input bit flips about
    half the output bits. int64 products wrap modulo 2^64, as unsigned arithmetic does."""
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def _int64(value: int) -> int:
    """A Python int taken modulo 2^64, as the signed value of those 64 bits (two's complement)."""
    value = int(value) & _M64
    return value - 2**64 if value >= 2**63 else value


def _mix64_int(value: int) -> int:
    """``mix64`` of one Python int (no tensor round trip: a key per draw costs microseconds)."""
    z = int(value) & _M64
    z = ((z ^ (z >> 30)) * (_MIX1 & _M64)) & _M64
    z = ((z ^ (z >> 27)) * (_MIX2 & _M64)) & _M64
    return _int64(z ^ (z >> 31))


class KeyedNoise:
    """Noise for a batch of samples with global indices ``index``, keyed by ``(seed, index, draw)``.

    Each call (``randn``, ``rand``, ``rademacher`` or their ``*_like`` forms) is one *draw* and
    advances the draw counter, so a sampler that makes the same sequence of calls for every batch
    gives sample ``i`` the same noise at every step whatever the batch it is in::

        noise = KeyedNoise(seed=0, index=torch.arange(start, stop))
        x, _ = sample_pc(score, sde, sde.prior_std * noise.randn((stop - start, 2)), 100, generator=noise)

    ``index`` is ``[B]`` (int64) and lives on the device the noise is wanted on. ``split(rows)`` is the
    same source restricted to some rows (with the counter shared), for code that processes a subset.
    """

    def __init__(self, seed: int, index: torch.Tensor, draw: int = 0):
        index = torch.as_tensor(index)
        if index.ndim != 1 or index.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"index must be a 1-D integer tensor of sample indices, got {tuple(index.shape)}"
            )
        self.seed, self.index, self.draw = int(seed), index.to(torch.int64), int(draw)
        self._rows = mix64(self.index * _GOLDEN + _mix64_int(_int64(seed) + _GOLDEN))  # one key per sample

    def __repr__(self) -> str:
        return f"KeyedNoise(seed={self.seed}, samples={self.index.numel()}, draw={self.draw})"

    @property
    def device(self) -> torch.device:
        return self.index.device

    def _bits(self, shape: tuple[int, ...], words: int) -> torch.Tensor:
        """``[B, words]`` 64-bit hashes for this draw: ``mix64(row key + draw key + j * golden)``, the
        SplitMix64 sequence of the row, started at a point that the draw number sets."""
        if not shape or shape[0] != self.index.numel():
            raise ValueError(
                f"KeyedNoise holds {self.index.numel()} samples but a draw of shape {shape} was asked"
            )
        draw_key = _mix64_int((self.draw + 1) * _GOLDEN)
        self.draw += 1
        counters = torch.arange(1, words + 1, dtype=torch.int64, device=self.device) * _GOLDEN + draw_key
        return mix64(self._rows[:, None] + counters)  # [B, words]

    def randn(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Standard normal ``[B, ...]``: Box-Muller on two 32-bit uniforms per pair of elements."""
        shape = tuple(shape)
        per_row = math.prod(shape[1:])
        dtype = dtype or torch.get_default_dtype()
        work = torch.float64 if dtype == torch.float64 else torch.float32  # half types: float32, then cast
        h = self._bits(shape, (per_row + 1) // 2)
        u1 = (_shift_right(h, 32).to(work) + 0.5) * 2.0**-32  # in (0, 1]: the log stays finite
        u2 = (h & _LOW32).to(work) * 2.0**-32
        radius, angle = torch.sqrt(-2.0 * torch.log(u1)), (2 * math.pi) * u2
        z = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=2).flatten(1)
        return z[:, :per_row].reshape(shape).to(dtype)

    def rand(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Uniform on ``[0, 1)``, ``[B, ...]``, from the top 53 bits of each hash."""
        shape = tuple(shape)
        h = self._bits(shape, math.prod(shape[1:]))
        return (_shift_right(h, 11).double() * 2.0**-53).reshape(shape).to(dtype or torch.get_default_dtype())

    def rademacher(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Random signs, ``+1`` or ``-1`` with equal probability, ``[B, ...]``."""
        shape = tuple(shape)
        h = self._bits(shape, math.prod(shape[1:]))
        return (1 - 2 * _shift_right(h, 63)).reshape(shape).to(dtype or torch.get_default_dtype())

    def split(self, rows: torch.Tensor | slice) -> KeyedNoise:
        """The source for a subset of the rows, at this one's draw; draws from it do not advance this one."""
        return KeyedNoise(self.seed, self.index[rows], self.draw)
