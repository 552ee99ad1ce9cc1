"""A compact U-Net for images, conditioned on a per-example scalar (log sigma, a time, a noise code)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .accelerated import Network
from .embeddings import EMBEDDINGS, LabelEmbedding


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with at most ``max_groups`` groups of at least 4 channels that divide ``channels``."""
    groups = max(1, min(max_groups, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """The module with its weights and biases set to zero (a residual branch that starts as nothing)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """DDPM's residual block (Ho et al. 2020, appendix B): ``GN-SiLU-conv``, plus a per-channel shift
    from the embedding, ``GN-SiLU-dropout-conv`` (zero-initialised), added to a 1x1-projected skip."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H W`` positions of a feature map, as a residual branch
    (Vaswani et al. 2017; DDPM's attention at 16x16); the output projection starts at zero."""

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention heads ({heads}) must divide the channels ({channels})")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """A stride-2 3x3 convolution: ``H -> ceil(H / 2)``, so odd sizes (7 -> 4) need no padding rule."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the size of the matching skip (``4 -> 7``), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


def level_sizes(image_size: int, levels: int) -> list[int]:
    """Spatial size at each level: ``image_size`` halved (rounding up) ``levels - 1`` times."""
    sizes = [image_size]
    for _ in range(levels - 1):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class UNet(Network):
    """U-Net ``F(x, c)`` mapping ``[B, C, H, W] -> [B, C, H, W]`` (Ronneberger et al. 2015; the DDPM /
    NCSN++ layout of Ho et al. 2020 and Song et al. 2021).

    Level ``i`` works at ``channels * channel_mults[i]`` channels with ``n_res_blocks`` residual blocks
    (GroupNorm, SiLU); each level halves the size (rounding up: 28 -> 14 -> 7 -> 4) and the decoder
    upsamples to the exact size of the matching skip, so any ``H, W`` works. Self-attention follows the
    blocks of every level whose size (the larger of ``H, W`` at that level, for ``image_size``) is in
    ``attention_resolutions``, and sits in the middle of the network. The scalar ``c[B]`` (the same
    code ``MLP`` receives: log sigma, a time) is embedded (``embedding``: ``"fourier"``,
    ``"sinusoidal"`` or a module ``[B] -> [B, embed_dim]``), passed through a two-layer MLP and added
    per channel inside every residual block. The output convolution starts at zero, so a fresh
    network returns zeros. The network knows nothing about SDEs or losses.

    ``num_classes = K > 0`` adds a ``LabelEmbedding`` (``K`` classes and the null label ``K``) to that
    embedding, as in Dhariwal & Nichol's class-conditional U-Net: ``forward(x, c, y)`` with labels
    ``y[B]``, ``y=None`` the null label (docs/math.md#classifier-free-guidance). ``num_classes = 0``
    (the default) adds no parameter.

    ``accelerate`` (``Network``) sets the precision, compilation and, with ``channels_last``, the
    channels-last memory format of the feature maps (the weights keep theirs).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: int = 64,
        channel_mults: Sequence[int] = (1, 2),
        n_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        embed_dim: int = 64,
        embedding: str | nn.Module = "fourier",
        heads: int = 1,
        num_classes: int = 0,
    ):
        super().__init__()
        if in_channels < 1 or image_size < 1 or channels < 1 or n_res_blocks < 1:
            raise ValueError(
                "in_channels, image_size, channels and n_res_blocks must be >= 1, got "
                f"{in_channels}, {image_size}, {channels}, {n_res_blocks}"
            )
        if not channel_mults or any(m < 1 for m in channel_mults):
            raise ValueError(
                f"channel_mults must be a non-empty list of positive integers, got {channel_mults}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        sizes = level_sizes(image_size, len(channel_mults))
        unknown = sorted(set(attention_resolutions) - set(sizes))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} are not sizes of this U-Net; for image_size {image_size} "
                f"and {len(channel_mults)} levels they are {sizes}"
            )
        self.in_channels, self.image_size = in_channels, image_size
        if isinstance(embedding, str):
            if embedding not in EMBEDDINGS:
                raise ValueError(f"unknown embedding {embedding!r}; choose one of {sorted(EMBEDDINGS)}")
            embedding = EMBEDDINGS[embedding](embed_dim)
        emb_dim = 4 * channels
        self.embed = nn.Sequential(
            embedding, nn.Linear(embed_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def attention(ch: int, size: int) -> nn.Module:
            return SelfAttention(ch, heads) if size in attention_resolutions else nn.Identity()

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in channel_mults]
        skip_widths = [channels]
        ch = channels
        self.down = nn.ModuleList()
        for level, (width, size) in enumerate(zip(widths, sizes, strict=True)):
            stage = nn.ModuleList()
            for _ in range(n_res_blocks):
                stage.append(nn.ModuleList([ResBlock(ch, width, emb_dim, dropout), attention(width, size)]))
                ch = width
                skip_widths.append(ch)
            down = Downsample(ch) if level < len(widths) - 1 else None
            if down is not None:
                skip_widths.append(ch)
            self.down.append(nn.ModuleDict({"blocks": stage, **({"down": down} if down else {})}))
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout), SelfAttention(ch, heads), ResBlock(ch, ch, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width, size = widths[level], sizes[level]
            stage = nn.ModuleList()
            for _ in range(n_res_blocks + 1):
                block = ResBlock(ch + skip_widths.pop(), width, emb_dim, dropout)
                stage.append(nn.ModuleList([block, attention(width, size)]))
                ch = width
            up = Upsample(ch) if level > 0 else None
            self.up.append(nn.ModuleDict({"blocks": stage, **({"up": up} if up else {})}))
        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(nn.Conv2d(ch, in_channels, 3, padding=1))
        self.num_classes = num_classes
        if num_classes:  # created last, so the other weights start as those of num_classes = 0
            self.label_embed = LabelEmbedding(num_classes, emb_dim)

    def network(
        self, x: torch.Tensor, c: torch.Tensor | float, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        if y is not None and not self.num_classes:
            raise ValueError("this U-Net takes no class labels (num_classes=0) but labels y were passed")
        c = torch.as_tensor(c, dtype=x.dtype, device=x.device).expand(x.shape[0])  # (B,)
        emb = self.embed(c)  # (B, 4 channels)
        if self.num_classes:
            emb = emb + self.label_embed(y, x.shape[0], x.device)
        h = self.conv_in(x)  # (B, channels, H, W)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        skips = [h]
        for stage in self.down:
            for block, attn in stage["blocks"]:
                h = attn(block(h, emb))
                skips.append(h)
            if "down" in stage:
                h = stage["down"](h)
                skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for stage in self.up:
            for block, attn in stage["blocks"]:
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if "up" in stage:
                h = stage["up"](h, skips[-1].shape[-2:])
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.contiguous() if self.channels_last else out  # the caller's format, whatever the maps
