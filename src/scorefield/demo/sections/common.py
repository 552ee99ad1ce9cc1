"""What the sections share: ``Section`` (a section's typed numbers and its figures), the numbers
several sections measure (mode weights and their error, a mean with its standard error, a uniform
grid over a window), and the pieces of their prose (the labels of the score-matching objectives,
references to ``docs/math.md``, inline equations, the formats of weights and percentages)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import torch
from matplotlib.figure import Figure

from ...distributions import GaussianMixture
from ...metrics import mode_weights
from ...scalers import Standardizer
from ...score import ScoreModel
from ..mathml import tex
from ..settings import DSM_SIGMA

__all__ = [
    "DIAGONAL",
    "LABELS",
    "Figures",
    "ModeShares",
    "Section",
    "Trained",
    "doc",
    "m",
    "mean_and_stderr",
    "mode_shares",
    "percent",
    "uniform_grid",
    "weights_text",
]

DIAGONAL = torch.tensor([1.0, 1.0])  # the line through the two modes of two_gaussians()

Figures = dict[str, Figure | Path]
"""A section's figures by file name (without suffix): a matplotlib ``Figure`` to save as PNG, or
the path of a GIF written."""

N = TypeVar("N")


@dataclass(frozen=True)
class Section(Generic[N]):
    """What a section's ``compute`` returns: its ``numbers`` (its part of ``results.json``) and its
    ``figures``."""

    numbers: N
    figures: Figures


@dataclass(frozen=True)
class Trained(Section[N]):
    """A section's result with the VP score model it trained and the scaler of its data."""

    model: ScoreModel
    scaler: Standardizer


@dataclass(frozen=True)
class ModeShares:
    """The share of samples in each mode of a mixture (``weights``) and the total-variation distance
    ``½ Σ_k |ŵ_k - w_k|`` from the true weights (``error``)."""

    weights: list[float]
    error: float


def mode_shares(x: torch.Tensor, mixture: GaussianMixture) -> ModeShares:
    """The share of ``x`` in each mode of ``mixture`` and its distance from the true weights."""
    weights = mode_weights(x, mixture)
    error = float(0.5 * (weights.double() - mixture.weights.double()).abs().sum())
    return ModeShares(weights.tolist(), error)


def uniform_grid(extent: tuple[float, float, float, float], n: int) -> torch.Tensor:
    """``n x n`` points evenly covering ``extent``: ``[n*n, 2]``."""
    xs = torch.linspace(extent[0], extent[1], n)
    ys = torch.linspace(extent[2], extent[3], n)
    return torch.cartesian_prod(xs, ys)


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """The mean of ``values`` and its standard error."""
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


LABELS = {
    "esm": "explicit (ESM; needs the true score)",
    "ism_exact": "implicit (ISM), exact trace",
    "ism_hutchinson": "implicit (ISM), Hutchinson trace",
    "ssm": "sliced (SSM, variance-reduced)",
    "dsm": f"denoising (DSM), σ = {DSM_SIGMA}",
}


def doc(anchor: str) -> str:
    """A reference to a section of the project's ``docs/math.md``."""
    return f"<code>docs/math.md#{anchor}</code>"


def m(source: str) -> str:
    """Inline MathML."""
    return tex(source)


def weights_text(weights) -> str:
    return " / ".join(f"{w:.3f}" for w in weights)


def percent(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"
