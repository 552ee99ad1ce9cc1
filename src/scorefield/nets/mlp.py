"""A fully connected network for vector data, optionally conditioned on a per-example scalar and a label."""

from __future__ import annotations

import torch
from torch import nn

from .accelerated import Network
from .embeddings import EMBEDDINGS, LabelEmbedding


class MLP(Network):
    """Multilayer perceptron ``F(x, c)`` mapping ``[B, ...] -> [B, ...]`` (or ``[B, out_dim]``).

    ``depth`` hidden layers of width ``hidden``. With ``cond=True`` the scalar ``c[B]`` (log sigma,
    a time, any noise-level code) is embedded (``embedding``: ``"fourier"``, ``"sinusoidal"`` or a
    module mapping ``[B] -> [B, embed_dim]``), passed through ``Linear + activation`` and then *added*
    to the pre-activation of every hidden layer through a layer-specific linear map, as in the time
    embedding of DDPM's residual blocks:
    ``h_{i+1} = act(W_i h_i + b_i + U_i e(c))``. ``cond=False`` is the unconditional network ``F(x)``.

    Inputs of any trailing shape are flattened to ``dim`` features; without ``out_dim`` the output has
    the shape of ``x`` (a vector field), with ``out_dim`` it is ``[B, out_dim]`` (``out_dim=1`` gives an
    energy). The network knows nothing about SDEs or losses.

    ``num_classes = K > 0`` (needs ``cond=True``) adds a ``LabelEmbedding`` of ``K + 1`` vectors to the
    embedded ``c``: ``forward(x, c, y)`` with labels ``y[B]`` in ``0 .. K-1``, and ``y=None`` (or ``K``)
    the null label of the unconditional model (docs/math.md#classifier-free-guidance). With
    ``num_classes = 0`` (the default) there is no such parameter and ``forward`` takes no labels.
    ``accelerate`` (``Network``) sets its precision and compilation.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        cond: bool = True,
        embed_dim: int = 64,
        activation: type[nn.Module] = nn.SiLU,
        out_dim: int | None = None,
        embedding: str | nn.Module = "fourier",
        num_classes: int = 0,
    ):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(
                f"dim, hidden and depth must be >= 1, got dim={dim}, hidden={hidden}, depth={depth}"
            )
        if num_classes < 0 or (num_classes and not cond):
            raise ValueError(f"num_classes must be >= 0, and 0 when cond=False; got {num_classes}")
        self.dim, self.cond, self.out_dim = dim, cond, out_dim
        widths = [dim] + [hidden] * depth
        self.hidden_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.output = nn.Linear(hidden, dim if out_dim is None else out_dim)
        self.act = activation()
        if cond:
            if isinstance(embedding, str):
                if embedding not in EMBEDDINGS:
                    raise ValueError(f"unknown embedding {embedding!r}; choose one of {sorted(EMBEDDINGS)}")
                embedding = EMBEDDINGS[embedding](embed_dim)
            self.embed = nn.Sequential(embedding, nn.Linear(embed_dim, hidden), activation())
            self.cond_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.num_classes = num_classes
        if num_classes:  # created last, so the other weights start as those of num_classes = 0
            self.label_embed = LabelEmbedding(num_classes, hidden)

    def network(
        self, x: torch.Tensor, c: torch.Tensor | float | None = None, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        if self.cond and c is None:
            raise ValueError("this MLP is conditional (cond=True): pass the conditioning scalar c[B]")
        if not self.cond and c is not None:
            raise ValueError("this MLP is unconditional (cond=False) but a conditioning c was passed")
        if y is not None and not self.num_classes:
            raise ValueError("this MLP takes no class labels (num_classes=0) but labels y were passed")
        h = x.flatten(1)  # (B, dim)
        if h.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} features per example, got {h.shape[1]}")
        if self.cond:
            c = torch.as_tensor(c, dtype=h.dtype, device=h.device).expand(h.shape[0])  # (B,)
            e = self.embed(c)  # (B, hidden)
            if self.num_classes:
                e = e + self.label_embed(y, h.shape[0], h.device)
        for i, layer in enumerate(self.hidden_layers):
            h = layer(h)
            if self.cond:
                h = h + self.cond_layers[i](e)
            h = self.act(h)
        out = self.output(h)
        return out.reshape(x.shape) if self.out_dim is None else out
