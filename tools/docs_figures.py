"""Refresh the demo's figures that the documentation shows (docs/assets/demo/).

    .venv/bin/python tools/docs_figures.py          # the full demo, about a minute and a half on one core
    .venv/bin/python tools/docs_figures.py --quick  # its quick budget, about half a minute
    .venv/bin/python tools/docs_figures.py --from runs/demo  # the figures of a demo already run

Runs ``scorefield demo`` into a temporary folder (or reads the folder ``--from`` names) and copies the
figures named in ``FIGURES``, each scaled by ``SCALE`` (the demo draws at 200 dpi, twice what the page
shows) and reduced to a palette of ``COLOURS`` colours, so that all of them together stay within
``BUDGET`` in the repository.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "assets" / "demo"
FIGURES = (
    "score_field",
    "score_divergence",
    "score_error",
    "naive_vs_annealed",
    "ncsn_samples",
    "denoising_chain",
    "diffusion_samples",
    "ode_trajectories",
    "moons_density",
)
SCALE = 0.5  # of the demo's width and height
COLOURS = 64
BUDGET = 300_000  # bytes, all figures together


def small_png(path: Path) -> bytes:
    """The PNG at ``path`` scaled by ``SCALE`` (Lanczos), on a palette of ``COLOURS`` colours without
    dithering (flat figure colours)."""
    image = Image.open(path).convert("RGB")
    size = (max(1, round(image.width * SCALE)), max(1, round(image.height * SCALE)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    image = image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's quick budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--from", dest="source", type=Path, metavar="DIR", help="the output of a demo already run (runs/demo)"
    )
    args = parser.parse_args(argv)

    if args.source is not None:
        return copy(args.source)
    from scorefield.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        run_demo(tmp, quick=args.quick, progress=False, seed=args.seed)
        return copy(Path(tmp))


def copy(source: Path) -> int:
    """Write the small version of each of ``FIGURES`` in ``source`` to ``OUT``; 1 if over ``BUDGET``."""
    missing = [name for name in FIGURES if not (source / f"{name}.png").is_file()]
    if missing:
        print(f"{source} has no {', '.join(f'{name}.png' for name in missing)}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in FIGURES:
        data = small_png(source / f"{name}.png")
        (OUT / f"{name}.png").write_bytes(data)
        total += len(data)
        print(f"docs/assets/demo/{name}.png  {len(data) / 1000:.0f} kB")
    print(f"{total / 1000:.0f} kB in all (budget {BUDGET / 1000:.0f} kB)")
    return 0 if total <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
