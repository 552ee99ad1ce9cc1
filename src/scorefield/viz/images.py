"""Image grids: ``image_grid`` tiles a batch ``[B, C, H, W]`` into one Pillow image (each image
enlarged by nearest neighbour, grey borders between), ``image_grid_size`` says how large that image
will be before any work, and ``grid_scale`` how much to enlarge small images (8x8 digits) so that
they can be seen. The sample and denoising figures draw their image panels through it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from PIL import Image

from ..files import atomic_output
from .base import ArrayLike, to_numpy

__all__ = [
    "BORDER_VALUE",
    "GRID_MAX_SIDE",
    "GRID_MIN_SIDE",
    "grid_scale",
    "image_grid",
    "image_grid_size",
    "show_images",
]

GRID_MIN_SIDE = 64  # pixels per side that grid_scale enlarges an image to, at least
GRID_MAX_SIDE = 16384  # pixels per side of the largest image_grid
BORDER_VALUE = 0.5  # image_grid's border: mid-grey, visible against black and white backgrounds


def grid_scale(height: int, width: int, min_side: int = GRID_MIN_SIDE) -> int:
    """The smallest whole factor that enlarges an ``height x width`` image to at least ``min_side``
    pixels per side (1 if it is that large already): 8 for 8x8 digits, 3 for 28x28, 2 for 32x32."""
    return max(1, math.ceil(min_side / min(height, width)))


def image_grid_size(
    n: int, height: int, width: int, nrow: int = 8, padding: int = 2, scale: int = 1
) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``image_grid`` of ``n`` images of ``height x width``.

    ``ValueError`` for a bad ``nrow``, ``padding`` or ``scale``, or a grid wider or higher than
    ``GRID_MAX_SIDE`` pixels.
    """
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ncol, rows = min(nrow, n), math.ceil(n / nrow)
    size = (ncol * width * scale + (ncol + 1) * padding, rows * height * scale + (rows + 1) * padding)
    if max(size) > GRID_MAX_SIDE:
        raise ValueError(
            f"a grid of {n} images of {height}x{width} enlarged {scale} times would be {size[0]} x "
            f"{size[1]} pixels, more than {GRID_MAX_SIDE} per side"
        )
    return size


def image_grid(
    x: ArrayLike,
    nrow: int = 8,
    padding: int = 2,
    value_range: tuple[float, float] | None = None,
    path: str | Path | None = None,
    scale: int = 1,
    border: float = BORDER_VALUE,
) -> Image.Image:
    """Images ``[B, C, H, W]`` (C = 1 or 3) tiled ``nrow`` per row, each enlarged ``scale`` times by
    nearest neighbour (every pixel a ``scale x scale`` block), with ``padding`` pixels of border between
    and around them.

    Values are mapped from ``value_range`` (default: the batch's min and max) to 0..255. The border
    is grey at ``border`` of the way from black to white (default mid-grey, which stands out against
    both black and white backgrounds). The result is ``image_grid_size(B, H, W, nrow, padding,
    scale)``: ``ncol W scale + (ncol + 1) padding`` wide and ``rows H scale + (rows + 1) padding``
    high, where ``ncol = min(B, nrow)`` and ``rows = ceil(B / nrow)``; with ``path`` it is also saved
    (PNG by its suffix).
    """
    images = to_numpy(x)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, C, H, W] with C = 1 or 3, got shape {images.shape}")
    b, c, h, w = images.shape
    width, height = image_grid_size(b, h, w, nrow, padding, scale)
    lo, hi = value_range if value_range is not None else (float(images.min()), float(images.max()))
    images = np.clip((images - lo) / max(hi - lo, 1e-12), 0, 1)
    images = images.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    canvas = np.full((height, width, c), float(border))
    for i, image in enumerate(images):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        canvas[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    pixels = (canvas * 255).round().astype(np.uint8)
    grid = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode="L" if c == 1 else "RGB")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:  # Pillow picks the format by the temporary's suffix
            grid.save(tmp)
    return grid


def show_images(ax: Axes, x: ArrayLike, nrow: int, value_range: tuple[float, float] | None) -> None:
    """``image_grid`` of ``x`` in ``ax``, with 1-pixel borders: matplotlib enlarges the pixels itself."""
    grid = image_grid(x, nrow=nrow, padding=1, value_range=value_range)
    ax.imshow(np.asarray(grid), cmap="gray" if grid.mode == "L" else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
