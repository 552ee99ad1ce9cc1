"""The demo's page as HTML: ``Page`` collects headings, paragraphs, equations, tables and figures into
one self-contained file (every image embedded, every equation MathML, no script, nothing fetched),
and ``CSS`` styles it; each section's ``write`` fills it and ``page.render`` lays it out. It computes
nothing; it saves each figure beside the page.

The page reads on a phone as on a desktop: a viewport declaration, images that shrink to the
column, a figure whose panels sit side by side drawn a second time with the panels stacked for a
narrow screen, and tables and equations that fit the column, so that nothing scrolls sideways,
neither the page nor a box inside it. ``tools/check_report.py`` checks this in a real browser.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from ..files import atomic_write
from ..viz import GIF_DPI
from .mathml import tex
from .settings import PNG_DPI

__all__ = ["CSS", "Page", "markup"]

CSS_PX_PER_INCH = 100  # a figure of w inches is shown w * 100 CSS pixels wide (at most the column)
NARROW = 640  # CSS pixels: on a screen this narrow, a figure's panels are stacked

CSS = """
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 0 auto; padding: 1rem 1rem 3rem;
       line-height: 1.55; color: #222; overflow-wrap: break-word; }
h1 { margin-bottom: 0.2rem; line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
h3 { margin-top: 1.6rem; }
blockquote { margin: 1rem 0; padding: 0.3rem 1rem; border-left: 4px solid #9bb; color: #444;
             font-style: italic; }
blockquote cite { display: block; font-style: normal; font-size: 0.85em; color: #777; }
figure { margin: 1.4rem 0; }
.frame img { display: block; margin: 0 auto; max-width: 100%; height: auto; }
figcaption { font-size: 0.92em; color: #333; margin-top: 0.4rem; }
figcaption b { color: #000; } .file { color: #999; }
.scroll { margin: 1rem 0; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f5; } td.n { font-variant-numeric: tabular-nums; white-space: nowrap; }
td { overflow-wrap: anywhere; }
.eq { margin: 0.6rem 0; padding: 0.2rem 0; }
.eq .parts { display: flex; flex-wrap: wrap; justify-content: center; align-items: center;
             column-gap: 1.6em; }
.eq math { font-size: 1.1em; margin: 0.2rem 0; }
.eq .note { display: block; text-align: center; font-size: 0.85em; color: #555; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
.meta { color: #666; font-size: 0.9em; }
dl.terms dt { font-weight: 600; margin-top: 0.6rem; } dl.terms dd { margin-left: 1.2rem; }
@media (max-width: 640px) {
  body { padding: 0.6rem 0.7rem 2rem; }
  table { font-size: 0.78em; } th, td { padding: 0.2rem 0.3rem; } td.n { white-space: normal; }
  .eq math { font-size: 0.95em; }
}
"""


class Page:
    """Collects the HTML of the page; each figure (by name, from ``figures``) is embedded, and a
    ``Figure`` is first written beside the page as ``out/NAME.png`` at ``PNG_DPI`` (a GIF is there
    already). Figures are numbered in the order they appear."""

    def __init__(self, out: Path, figures: dict[str, Figure | Path]):
        self.out, self.figures, self.parts = out, figures, []
        self.shown: list[str] = []

    def heading(self, title: str, anchor: str, level: int = 2) -> None:
        self.parts.append(f'<h{level} id="{anchor}">{html.escape(title)}</h{level}>')

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{text}</p>")

    def raw(self, text: str) -> None:
        self.parts.append(text)

    def quote(self, text: str, source: str) -> None:
        self.parts.append(f"<blockquote>{text}<cite>{html.escape(source)}</cite></blockquote>")

    def equation(self, source: str, note: str = "") -> None:
        """A displayed equation (TeX subset, rendered as MathML) with an optional note under it. Its
        parts, as ``\\quad`` and ``\\qquad`` separate them at the top level, are laid out side by side
        and wrap onto lines of their own on a narrow screen (a browser does not break MathML)."""
        note = f'<span class="note">{note}</span>' if note else ""
        parts = "".join(tex(part, display=True) for part in _top_level_parts(source))
        self.parts.append(f'<div class="eq"><div class="parts">{parts}</div>{note}</div>')

    def figure(self, name: str, caption: str, alt: str) -> None:
        drawn = self.figures[name]
        if isinstance(drawn, Path):
            self._embed(drawn, "image/gif", caption, alt)
            return
        path = self.out / f"{name}.png"
        _write_png(path, drawn)
        narrow = None
        if _stack_panels(drawn):  # the same figure, its panels in one column, for a narrow screen
            narrow = self.out / f"{name}.narrow.png"
            _write_png(narrow, drawn, bbox_inches="tight")
        self._embed(path, "image/png", caption, alt, narrow)

    def _embed(self, path: Path, mime: str, caption: str, alt: str, narrow: Path | None = None) -> None:
        shown_w, shown_h, data = _shown(path, mime)
        self.shown.append(path.name)
        number = len(self.shown)
        image = f'<img src="data:{mime};base64,{data}" width="{shown_w}" height="{shown_h}" alt="{html.escape(alt)}">'
        if narrow is not None:
            narrow_w, narrow_h, narrow_data = _shown(narrow, mime)
            source = (
                f'<source media="(max-width: {NARROW}px)" srcset="data:{mime};base64,{narrow_data}" '
                f'width="{narrow_w}" height="{narrow_h}">'
            )
            image = f"<picture>{source}{image}</picture>"
        self.parts.append(
            f'<figure id="fig-{path.stem}"><div class="frame">{image}</div>'
            f"<figcaption><b>Figure {number}.</b> {caption} <span class=file>({html.escape(path.name)})</span>"
            "</figcaption></figure>"
        )

    def table(self, header: list[str], rows: list[list], caption: str = "") -> None:
        head = "".join(f"<th>{h}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f'<td class="n">{_cell(v)}</td>' if _numeric(v) else f"<td>{_cell(v)}</td>"
                             for v in row) + "</tr>"
            for row in rows
        )  # fmt: skip
        caption = f"<caption>{caption}</caption>" if caption else ""
        self.parts.append(
            f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        )


def _top_level_parts(source: str) -> list[str]:
    """``source`` split at each ``\\quad`` or ``\\qquad`` outside braces; the separators are dropped."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(source):
        char = source[i]
        depth += (char == "{") - (char == "}")
        match = re.match(r"\\q?quad(?![a-zA-Z])", source[i:]) if depth == 0 else None
        if match:
            parts.append(source[start:i])
            i += match.end()
            start = i
            continue
        i += 1
    parts.append(source[start:])
    return [part.strip() for part in parts if part.strip()]


def _shown(path: Path, mime: str) -> tuple[int, int, str]:
    """The CSS width and height an image file is shown at, and its bytes in base64."""
    with Image.open(path) as image:
        width, height = image.size
    scale = CSS_PX_PER_INCH / (PNG_DPI if mime == "image/png" else GIF_DPI)
    return round(width * scale), round(height * scale), base64.b64encode(path.read_bytes()).decode("ascii")


def _stack_panels(figure: Figure) -> bool:
    """Lay ``figure``'s panels out again in one column, in place, when they sit side by side in one row
    of one grid (colour bars follow the panel they belong to); False, and ``figure`` untouched, when it
    has a single panel or another layout."""
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    specs = [ax.get_subplotspec() for ax in panels]
    if len(panels) < 2 or any(spec is None for spec in specs):
        return False
    grid = specs[0].get_gridspec()
    if grid.nrows != 1 or any(spec.get_gridspec() is not grid for spec in specs):
        return False
    width, height = figure.get_size_inches()
    column = figure.add_gridspec(len(panels), 1)
    for row, ax in enumerate(sorted(panels, key=lambda ax: ax.get_subplotspec().colspan.start)):
        ax.set_subplotspec(column[row, 0])
    figure.set_size_inches(max(width / len(panels) * 1.3, 4.2), height * len(panels) * 0.95)
    return True


def _write_png(path: Path, figure: Figure, **savefig) -> None:
    """``figure`` as a PNG with a palette of 256 colours (median cut, no dithering: a third of the bytes
    for a plot, no visible change but slight steps in long smooth colour bars), written atomically;
    ``savefig`` goes to matplotlib's ``savefig``."""
    drawn = io.BytesIO()
    figure.savefig(drawn, format="png", dpi=PNG_DPI, **savefig)
    drawn.seek(0)
    with Image.open(drawn) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True
    )
    atomic_write(path, out.getvalue())


def _numeric(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return "0" if abs(value) < 1e-8 else f"{value:.4g}"  # a float's rounding error is a zero
    if isinstance(value, _Html):
        return str(value)
    return html.escape(str(value))


class _Html(str):
    """Text that is already HTML (a table cell with markup)."""


def markup(text: str) -> _Html:
    """Mark ``text`` as HTML for a table cell (otherwise cells are escaped)."""
    return _Html(text)
