"""A wrapper that softly clips a network's vector input to a box, optionally adding random Fourier features."""

from __future__ import annotations

import math

import torch
from torch import nn


class Squashed(nn.Module):
    """``F(u, c)`` with ``u = b tanh(x / b)``: the wrapped network sees each feature softly clipped to ``[-b, b]``.

    ``bound`` (``b``, one positive number per feature, ``[dim]``) is given at construction and kept
    as a buffer, so it is saved and loaded with the weights. For ``|x| << b`` the squashing is
    nearly the identity (``|x| <= b / 2`` is compressed by at most 8%), while for ``|x| >> b`` the
    wrapped network sees ``±b``: its output stays whatever it is at the box's faces, however far out
    ``x`` lies, instead of extrapolating.

    With ``n_frequencies > 0`` the network sees ``[u, sin(2 pi u B), cos(2 pi u B)]`` for fixed random
    frequencies ``B ~ N(0, scale^2)``, ``[dim, n_frequencies]`` (a buffer drawn from its own generator
    seeded with ``seed``, so the global random state is left alone): random Fourier features of the
    input (Tancik et al. 2020), which let an MLP of smooth activations fit sharp edges and thin
    filaments of a low-dimensional input in a few thousand steps (it learns high frequencies slowly).
    The wrapped ``net`` then takes ``dim + 2 * n_frequencies`` features.
    """

    def __init__(
        self,
        net: nn.Module,
        bound: torch.Tensor,
        n_frequencies: int = 0,
        scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        bound = torch.as_tensor(bound, dtype=torch.get_default_dtype()).detach().clone()
        if bound.ndim != 1 or not (torch.isfinite(bound) & (bound > 0)).all():
            raise ValueError(
                "bound must be one positive finite number per feature, shape [dim]; got shape "
                f"{tuple(bound.shape)} with values in [{bound.min():g}, {bound.max():g}]"
            )
        if n_frequencies < 0:
            raise ValueError(f"n_frequencies must be >= 0, got {n_frequencies}")
        self.net = net
        self.register_buffer("bound", bound)
        freqs = torch.randn(len(bound), n_frequencies, generator=torch.Generator().manual_seed(int(seed)))
        self.register_buffer("frequencies", freqs * scale)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b = self.bound.to(x)
        u = b * torch.tanh(x / b)
        if self.frequencies.shape[1]:
            angles = 2 * math.pi * u @ self.frequencies.to(u)  # (B, n_frequencies)
            u = torch.cat([u, angles.sin(), angles.cos()], dim=1)
        return self.net(u, c)
