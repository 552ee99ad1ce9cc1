"""scikit-learn's bundled data sets, so nothing is downloaded: ``digits`` (8x8 handwritten digits,
values 0..16), ``breast_cancer`` (30 features), the train/test split of the digits every digits number
in scorefield is measured on (``digits_split``), and their registry ``BUNDLED``; the class labels of
those that have them, ``BUNDLED_LABELS``, and their class names, ``BUNDLED_CLASSES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "BUNDLED",
    "BUNDLED_CLASSES",
    "BUNDLED_LABELS",
    "DigitsSplit",
    "breast_cancer",
    "digit_labels",
    "digits",
    "digits_split",
]


def digits(images: bool = False) -> torch.Tensor:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16): ``[N, 64]``, or ``[N, 1, 8, 8]``."""
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().data.astype(np.float32))
    return x.reshape(-1, 1, 8, 8) if images else x


def digit_labels() -> torch.Tensor:
    """The digit (0..9) each image of ``digits()`` shows, in the same order: ``[N]`` int64."""
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().target.astype(np.int64))


def breast_cancer() -> torch.Tensor:
    """scikit-learn's bundled Wisconsin breast-cancer table: 569 examples, 30 features, ``[N, 30]``."""
    from sklearn.datasets import load_breast_cancer

    return torch.from_numpy(load_breast_cancer().data.astype(np.float32))


class DigitsSplit(NamedTuple):
    """Images ``[N, 1, 8, 8]`` float32 in pixel units (integers 0..16) and labels ``[N]`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplit:
    """The train/test split of scikit-learn's digits used by every digits number in scorefield.

    Stratified: in each class, a fraction ``test_fraction`` (rounded) of its images, chosen by a
    permutation seeded by ``seed``, goes to the test side. The defaults give 1438 training and 359
    test images (35 to 37 of each digit).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    x, y = digits(images=True), digit_labels()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    is_test = torch.zeros(x.shape[0], dtype=torch.bool)
    for c in range(10):
        members = perm[y[perm] == c]
        is_test[members[: round(test_fraction * members.numel())]] = True
    return DigitsSplit(x[~is_test], y[~is_test], x[is_test], y[is_test])


BUNDLED: dict[str, Callable[[], torch.Tensor]] = {
    "digits": digits,
    "digits_images": lambda: digits(images=True),
    "digits_images_train": lambda: digits_split().x_train,  # the split every digits number is measured on
    "digits_images_test": lambda: digits_split().x_test,
    "breast_cancer": breast_cancer,
}

# the class labels ([N] int64, in the order of BUNDLED[name]()) and class names of the data sets with labels
BUNDLED_LABELS: dict[str, Callable[[], torch.Tensor]] = {
    "digits": digit_labels,
    "digits_images": digit_labels,
    "digits_images_train": lambda: digits_split().y_train,
    "digits_images_test": lambda: digits_split().y_test,
}
BUNDLED_CLASSES: dict[str, tuple[str, ...]] = dict.fromkeys(BUNDLED_LABELS, tuple(str(d) for d in range(10)))
