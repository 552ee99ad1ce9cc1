"""What every section returns (``Section``, and ``Diffusion`` for the diffusion section, which
carries the model the likelihood section evaluates) and the numbers that several sections share:
mode weights and their error, a uniform grid over a window, a mean with its standard error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ...distributions import GaussianMixture
from ...metrics import mode_weights
from ...scalers import Standardizer
from ...score import ScoreModel

__all__ = ["DIAGONAL", "Diffusion", "Section", "mean_and_stderr", "mode_shares", "uniform_grid"]

DIAGONAL = torch.tensor([1.0, 1.0])  # the line through the two modes of two_gaussians()


@dataclass(frozen=True)
class Section:
    """What a section computed: ``numbers``, its part of ``results.json``, and ``figures`` by file
    name (without suffix): a matplotlib ``Figure`` to save as PNG, or the path of a GIF written."""

    numbers: dict
    figures: dict[str, Figure | Path]


@dataclass(frozen=True)
class Diffusion(Section):
    """The diffusion section's result, with the VP score model it trained and the scaler of its data."""

    model: ScoreModel
    scaler: Standardizer


# --------------------------------------------------------------------------------------------------
# numbers shared by several sections


def _weight_error(weights: torch.Tensor, truth: torch.Tensor) -> float:
    """Total-variation distance between mode-weight vectors, ``½ Σ_k |ŵ_k - w_k|`` (for two modes, ``|ŵ_1 - w_1|``)."""
    return float(0.5 * (weights.double() - truth.double()).abs().sum())


def mode_shares(x: torch.Tensor, mixture: GaussianMixture) -> dict:
    """The share of ``x`` in each mode of ``mixture`` and its distance from the true weights."""
    weights = mode_weights(x, mixture)
    return {"weights": weights.tolist(), "error": _weight_error(weights, mixture.weights)}


def uniform_grid(extent: tuple[float, float, float, float], n: int) -> torch.Tensor:
    """``n x n`` points evenly covering ``extent``: ``[n*n, 2]``."""
    xs = torch.linspace(extent[0], extent[1], n)
    ys = torch.linspace(extent[2], extent[3], n)
    return torch.cartesian_prod(xs, ys)


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """The mean of ``values`` and its standard error."""
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))
