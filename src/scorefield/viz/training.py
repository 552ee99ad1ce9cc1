"""Training curves: ``plot_loss_curve`` draws the losses of a run's ``metrics.jsonl``, raw and
smoothed by a bias-corrected exponential moving average.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .base import new_figure

__all__ = ["plot_loss_curve"]


def _smooth(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, average = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        average = smoothing * average + (1 - smoothing) * v
        out[i] = average / (1 - smoothing ** (i + 1))
    return out


def plot_loss_curve(
    metrics_jsonl_path: str | Path,
    keys: Sequence[str] | None = None,
    smoothing: float = 0.9,
) -> Figure:
    """Training curves from ``metrics.jsonl`` (one JSON object per line with ``step`` and ``loss``, ...).

    Each key (default: every numeric key ending in ``loss``) is drawn raw (faint) and smoothed by an
    exponential moving average (``smoothing``, shortened to ``1 - 10/n`` for a log of ``n < 100``
    values, so the curve does not lag behind a short run); the y axis is logarithmic when every
    drawn value is positive. Lines that lack a key (or are not JSON objects) are skipped for that key.
    """
    rows = []
    for line in Path(metrics_jsonl_path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int | float):
            rows.append(row)
    if keys is None:
        keys = sorted({k for row in rows for k, v in row.items() if k.endswith("loss") and _is_number(v)})
    series = {}
    for key in keys:
        points = [(row["step"], row[key]) for row in rows if _is_number(row.get(key))]
        points = np.array(points, dtype=float).reshape(-1, 2)
        points = points[np.isfinite(points[:, 1])]
        if len(points):
            series[key] = points
    if not series:
        raise ValueError(f"no finite values of {', '.join(keys) or 'any loss'} in {metrics_jsonl_path}")
    fig, axes = new_figure(1, 1, size=4.2)
    ax = axes[0, 0]
    for i, (key, points) in enumerate(series.items()):
        color = f"C{i}"
        ax.plot(points[:, 0], points[:, 1], color=color, alpha=0.25, linewidth=0.8)
        window = min(smoothing, max(0.0, 1 - 10 / len(points)))  # short logs: a short memory
        ax.plot(points[:, 0], _smooth(points[:, 1], window), color=color, label=key)
    if all((points[:, 1] > 0).all() for points in series.values()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    ax.set_title("training loss")
    return fig


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
