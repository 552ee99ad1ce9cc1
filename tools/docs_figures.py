"""Refresh the demo's figures that the documentation shows (docs/assets/demo/).

    .venv/bin/python tools/docs_figures.py          # the full demo, about a minute and a half on one core
    .venv/bin/python tools/docs_figures.py --quick  # its quick budget, about half a minute

Runs ``scorefield demo`` into a temporary folder and copies the figures named in ``FIGURES``, each
reduced to a palette of ``COLOURS`` colours so that all of them together stay small in the repository.
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
    "denoising_strip",
    "diffusion_samples",
    "ode_trajectories",
    "moons_density",
)
COLOURS = 64
BUDGET = 300_000  # bytes, all figures together


def small_png(path: Path) -> bytes:
    """The PNG at ``path`` on a palette of ``COLOURS`` colours, without dithering (flat figure colours)."""
    image = Image.open(path).convert("RGB")
    image = image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's quick budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from scorefield.demo import run_demo

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(tmp, quick=args.quick, progress=False, seed=args.seed)
        total = 0
        for name in FIGURES:
            data = small_png(Path(tmp) / f"{name}.png")
            (OUT / f"{name}.png").write_bytes(data)
            total += len(data)
            print(f"docs/assets/demo/{name}.png  {len(data) / 1000:.0f} kB")
    print(f"{total / 1000:.0f} kB in all (budget {BUDGET / 1000:.0f} kB)")
    return 0 if total <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
