"""What the prose of every section shares: the labels of the score-matching objectives, references
to ``docs/math.md``, inline equations, and the formats of weights, percentages and numbers."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..mathml import tex
from ..page import Page
from ..settings import DSM_SIGMA, Budget

__all__ = ["LABELS", "Entry", "doc", "m", "percent", "weights_text"]

Entry = tuple[str, str, tuple[str, str] | None, Callable[[Page, dict, Budget], None]]
"""One section of the page: anchor, title, the tutorial's words that open it (text, source) or None,
and the function that writes the rest, ``body(page, results, budget)``."""

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


def _g(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "n/a"
