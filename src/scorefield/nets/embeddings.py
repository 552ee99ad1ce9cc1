"""Embeddings of a per-example scalar (log sigma, a time, a noise-level code): ``c[B] -> [B, E]``; and of a
class label, ``y[B] -> [B, E]`` (``LabelEmbedding``)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_embed_dim(embed_dim: int) -> None:
    if embed_dim < 2 or embed_dim % 2:
        raise ValueError(
            f"embed_dim must be an even number >= 2 (one sin and one cos per frequency), got {embed_dim}"
        )


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features (Tancik et al. 2020; Song et al. 2021, NCSN++ noise embedding).

    ``e(c) = [sin(2 pi W c), cos(2 pi W c)]`` with fixed frequencies ``W ~ N(0, scale^2)``, ``[E/2]``.
    The frequencies are a persistent buffer, so they are saved and restored with the weights.
    """

    def __init__(self, embed_dim: int = 64, scale: float = 1.0):
        super().__init__()
        _check_embed_dim(embed_dim)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.register_buffer("frequencies", torch.randn(embed_dim // 2) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * c[:, None] * self.frequencies.to(c.dtype)  # (B, E/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, E)


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoidal embedding (Vaswani et al. 2017, section 3.5; DDPM's time embedding).

    ``e(c) = [sin(w_k c), cos(w_k c)]`` with geometric frequencies ``w_k = max_period^(-k/(E/2))``,
    ``k = 0 .. E/2 - 1``, i.e. from 1 down to about ``1 / max_period``. Deterministic: no buffer.
    """

    def __init__(self, embed_dim: int = 64, max_period: float = 10_000.0):
        super().__init__()
        _check_embed_dim(embed_dim)
        if max_period <= 1:
            raise ValueError(f"max_period must be > 1, got {max_period}")
        self.embed_dim = embed_dim
        self.max_period = max_period

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        half = self.embed_dim // 2
        k = torch.arange(half, device=c.device, dtype=c.dtype)
        frequencies = torch.exp(-math.log(self.max_period) * k / half)  # (E/2,)
        angles = c[:, None] * frequencies  # (B, E/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, E)


class LabelEmbedding(nn.Module):
    """A learned vector per class label ``y = 0 .. K-1`` and one more for the null label ``K``, which
    stands for "no label": one network is then both the conditional model ``p(x | y)`` and the
    unconditional ``p(x)`` that classifier-free guidance combines (Ho & Salimans 2022;
    docs/math.md#classifier-free-guidance). ``forward(y, batch, device)``: ``y`` (integers ``[B]``,
    or one integer for the whole batch) to ``[B, E]``; ``y=None`` is the null label for every example.
    Networks add it to their noise embedding.
    """

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 for a label embedding, got {num_classes}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, embed_dim)

    def forward(self, y: torch.Tensor | int | None, batch: int, device: torch.device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        y = torch.as_tensor(y, device=device)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"labels y must be integers (a LongTensor [B]), got dtype {y.dtype}")
        if y.ndim > 1 or (y.ndim == 1 and y.shape[0] != batch):
            raise ValueError(f"expected one label per example, [{batch}], got shape {tuple(y.shape)}")
        # compiled, the check would split the graph at a host sync; an index out of range fails the
        # compiled call instead, and its eager rerun (nets.accelerated.Network.forward) raises this error
        if not torch.compiler.is_compiling() and bool(((y < 0) | (y > self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in 0 .. {self.num_classes - 1}, or be {self.num_classes} (the null label); "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )
        return self.table(y.long().expand(batch))


EMBEDDINGS: dict[str, type[nn.Module]] = {
    "fourier": GaussianFourierEmbedding,
    "sinusoidal": SinusoidalEmbedding,
}
