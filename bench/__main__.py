"""``python -m bench [--quick] [--all] [NAME ...]``: run the benchmarks ``bench/bench_NAME.py``.

By default every benchmark except those in ``LONG``, which train a model from scratch (digits, guidance
and precision: U-Nets, minutes of training and of evaluation on 2 cores); ``--all`` or naming one runs them too."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from bench import common

LONG = ("digits", "guidance", "precision")


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).resolve().parent.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        help=f"benchmarks to run (default: all of {', '.join(n for n in available() if n not in LONG)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--all", action="store_true", help=f"also the long ones: {', '.join(LONG)}")
    args = parser.parse_args(argv)
    names = args.names or [n for n in available() if args.all or n not in LONG]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(available())}")
    if args.quick:  # smoke runs must not overwrite the real tables
        common.RESULTS = common.RESULTS / "quick"
    for name in names:
        start = time.perf_counter()
        print(f"== bench {name}", flush=True)
        importlib.import_module(f"bench.bench_{name}").main(quick=args.quick)
        print(f"== bench {name}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
