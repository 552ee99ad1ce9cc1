"""Data: 2-D toy samplers, scikit-learn's bundled tables, ``.npy`` / ``.csv`` files, image files, and a scaler.

One concern per module; every name is re-exported here, so ``from scorefield.datasets import X`` works
for all of them.

- ``toys``: toys ``(n, generator=None) -> [n, 2]`` (float32), registered in ``TOY``: the tutorials'
  two-Gaussian mixture plus the usual benchmarks of the field (FFJORD's eight Gaussians, checkerboard,
  pinwheel, swiss roll; moons; concentric rings). Every draw comes from ``generator``.
- ``bundled``: ``digits`` (8x8 handwritten digits, values 0..16) and ``breast_cancer`` (30 features),
  bundled with scikit-learn, so nothing is downloaded; ``digits_split``, the train/test split of the
  digits; registered in ``BUNDLED``.
- ``tables``: ``read_table`` / ``load_table``: a ``.npy`` or ``.csv`` file of numbers, one example per
  row, with (``read_table``) the CSV header's column names; a row holding NaN or Inf is refused, named
  by its file line in a CSV and by its 0-based index in a ``.npy`` file.
- ``images``: images ``[N, C, H, W]`` in pixel units (float32 holding integers): ``digits(images=True)``,
  MNIST idx files (``read_idx``, ``mnist``), the CIFAR-10 binary batches (``read_cifar10``, ``cifar10``)
  and a folder of PNG/JPEG files (``image_folder``). ``IMAGE_LEVELS`` names the image data sets and
  their number of grey levels; nothing is downloaded, the user points ``data.path`` at files they have.
  ``image_scaler`` is the ``Standardizer`` that maps pixels to ``[-1, 1]``; ``random_hflip`` is the
  usual image augmentation.
- ``Standardizer`` (from ``scorefield.scalers``): per-feature ``(x - mean) / std`` with its inverse and
  the log-determinant that turns a log-density of standardised data back into one of the data's own
  units.
- Here: ``load_data`` / ``read_data``, the training data a ``DataSpec`` names, from any of the above.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from ..scalers import Standardizer
from .bundled import BUNDLED, DigitsSplit, breast_cancer, digits, digits_split
from .images import CIFAR10_RECORD as CIFAR10_RECORD
from .images import IDX_TYPES as IDX_TYPES
from .images import (
    IMAGE_FILES,
    IMAGE_LEVELS,
    cifar10,
    image_folder,
    image_scaler,
    mnist,
    random_hflip,
    read_cifar10,
    read_idx,
)
from .images import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from .tables import default_columns, load_table, read_table
from .toys import TOY, checkerboard, eight_gaussians, moons, pinwheel, rings, swiss_roll, two_gaussians

__all__ = [
    "BUNDLED",
    "IMAGE_FILES",
    "IMAGE_LEVELS",
    "TOY",
    "Standardizer",
    "breast_cancer",
    "checkerboard",
    "cifar10",
    "digits",
    "eight_gaussians",
    "image_folder",
    "image_scaler",
    "DigitsSplit",
    "digits_split",
    "default_columns",
    "load_data",
    "load_table",
    "read_data",
    "read_table",
    "mnist",
    "moons",
    "pinwheel",
    "random_hflip",
    "read_cifar10",
    "read_idx",
    "rings",
    "swiss_roll",
    "two_gaussians",
]


class DataSpec(Protocol):
    """What ``load_data`` reads (``config.DataConfig`` is one)."""

    name: str | None
    path: str | None
    n: int
    seed: int


def read_data(spec: DataSpec) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The training data a spec names (see ``load_data``) and the names of their features: a CSV's
    header, else ``x0, x1, ...`` (``default_columns``; one per feature of a flattened example)."""
    names = None
    if spec.name in IMAGE_FILES:
        if spec.path is None:
            raise ValueError(f"data set {spec.name!r} is read from files: set data.path to them")
        x = IMAGE_FILES[spec.name](spec.path)
    elif spec.path is not None:
        x, names = read_table(spec.path)
    elif spec.name in TOY:
        generator = torch.Generator().manual_seed(spec.seed)
        x = TOY[spec.name](spec.n, generator=generator)
    elif spec.name in BUNDLED:
        x = BUNDLED[spec.name]()
    else:
        raise ValueError(
            f"unknown data set {spec.name!r}; choose one of "
            f"{', '.join(sorted(TOY) + sorted(BUNDLED) + sorted(IMAGE_FILES))}"
        )
    return x, names or default_columns(math.prod(x.shape[1:]))


def load_data(spec: DataSpec) -> torch.Tensor:
    """The training data a spec names: image files of a format in ``IMAGE_FILES`` (``spec.name``, read
    from ``spec.path``), a table (``spec.path``), a toy (``spec.n`` draws seeded by ``spec.seed``) or a
    bundled data set (``spec.name``)."""
    return read_data(spec)[0]
