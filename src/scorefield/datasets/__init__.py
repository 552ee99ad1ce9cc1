"""Data: 2-D toy samplers, scikit-learn's bundled tables, ``.npy`` / ``.csv`` files, image files, and a scaler.

One concern per module; every name is re-exported here, so ``from scorefield.datasets import X`` works
for all of them.

- ``toys``: toys ``(n, generator=None) -> [n, 2]`` (float32), registered in ``TOY``: the tutorials'
  two-Gaussian mixture plus the usual benchmarks of the field (FFJORD's eight Gaussians, checkerboard,
  pinwheel, swiss roll; moons; concentric rings). Every draw comes from ``generator``.
- ``bundled``: ``digits`` (8x8 handwritten digits, values 0..16) and ``breast_cancer`` (30 features),
  bundled with scikit-learn, so nothing is downloaded; ``digits_split``, the train/test split of the
  digits; registered in ``BUNDLED``, the digits' labels in ``BUNDLED_LABELS`` (names: ``BUNDLED_CLASSES``).
- ``tables``: ``read_table`` / ``load_table``: a ``.npy`` or ``.csv`` file of numbers, one example per
  row, with (``read_table``) the CSV header's column names; a row holding NaN or Inf is refused, named
  by its file line in a CSV and by its 0-based index in a ``.npy`` file. ``read_labelled_table`` takes a
  CSV's column of class labels apart; ``read_npy`` checks a ``.npy`` file's claimed shape against its
  size before reading it; ``csv_header`` reads a CSV's header alone.
- ``images``: images ``[N, C, H, W]`` in pixel units (float32 holding integers): ``digits(images=True)``,
  MNIST idx files (``read_idx``, ``mnist``), the CIFAR-10 binary batches (``read_cifar10``, ``cifar10``)
  and a folder of PNG/JPEG files (``image_folder``). ``IMAGE_LEVELS`` names the image data sets and
  their number of grey levels; nothing is downloaded, the user points ``data.path`` at files they have.
  ``image_scaler`` is the ``Standardizer`` that maps pixels to ``[-1, 1]``; ``random_hflip`` is the
  usual image augmentation.
- ``Standardizer`` (from ``scorefield.scalers``): per-feature ``(x - mean) / std`` with its inverse and
  the log-determinant that turns a log-density of standardised data back into one of the data's own
  units.
- Here: ``load_data`` / ``read_data``, the training data a ``DataSpec`` names, from any of the above;
  ``read_labelled_data``, the same with their class labels where they have some.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from ..scalers import Standardizer
from .bundled import (
    BUNDLED,
    BUNDLED_CLASSES,
    BUNDLED_LABELS,
    DigitsSplit,
    breast_cancer,
    digit_labels,
    digits,
    digits_split,
)
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
from .tables import (
    MAX_CSV_BYTES,
    csv_header,
    default_columns,
    load_table,
    read_labelled_table,
    read_npy,
    read_table,
)
from .toys import (
    TOY,
    banana,
    checkerboard,
    eight_gaussians,
    moons,
    pinwheel,
    rings,
    swiss_roll,
    two_gaussians,
)

__all__ = [
    "BUNDLED",
    "BUNDLED_CLASSES",
    "BUNDLED_LABELS",
    "IMAGE_FILES",
    "IMAGE_LEVELS",
    "MAX_CSV_BYTES",
    "TOY",
    "Standardizer",
    "breast_cancer",
    "checkerboard",
    "cifar10",
    "csv_header",
    "digit_labels",
    "digits",
    "banana",
    "eight_gaussians",
    "image_folder",
    "image_scaler",
    "DigitsSplit",
    "digits_split",
    "default_columns",
    "load_data",
    "load_table",
    "read_data",
    "read_labelled_data",
    "read_labelled_table",
    "read_npy",
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
    """What ``load_data`` reads (``config.DataConfig`` is one; it may also have a ``label_column``)."""

    name: str | None
    path: str | None
    n: int
    seed: int  # (it may also have a ``header``: whether a CSV's first line names the columns)


def read_labelled_data(
    spec: DataSpec,
) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor | None, tuple[str, ...]]:
    """``read_data``'s data and feature names, with their class labels ``[N]`` int64 and class names:
    a CSV's ``spec.label_column`` (taken out of the features; ``read_labelled_table``) or the labels of
    a bundled data set (``BUNDLED_LABELS``); ``(None, ())`` for data without labels."""
    label_column = getattr(spec, "label_column", None)
    if label_column is not None:
        if spec.path is None:
            raise ValueError(
                f"labels are read from a column of a CSV file: set data.path to one ({label_column!r})"
            )
        x, names, y, classes = read_labelled_table(spec.path, label_column, getattr(spec, "header", None))
        return x, names, y, classes
    x, names = read_data(spec)
    if spec.path is None and spec.name in BUNDLED_LABELS:
        return x, names, BUNDLED_LABELS[spec.name](), BUNDLED_CLASSES[spec.name]
    return x, names, None, ()


def read_data(spec: DataSpec) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The training data a spec names (see ``load_data``) and the names of their features: a CSV's
    header, else ``x0, x1, ...`` (``default_columns``; one per feature of a flattened example).
    A CSV's ``label_column``, if the spec has one, is not a feature (``read_labelled_data``)."""
    if getattr(spec, "label_column", None) is not None:
        return read_labelled_data(spec)[:2]
    names = None
    if spec.name in IMAGE_FILES:
        if spec.path is None:
            raise ValueError(f"data set {spec.name!r} is read from files: set data.path to them")
        x = IMAGE_FILES[spec.name](spec.path)
    elif spec.path is not None:
        x, names = read_table(spec.path, getattr(spec, "header", None))
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
