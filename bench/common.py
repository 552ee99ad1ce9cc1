"""What every benchmark shares: interleaved timing against a peer, and Markdown tables with their command."""

from __future__ import annotations

import functools
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved_times(
    candidates: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall seconds of each zero-argument callable, run in turn ``repeats`` times (after ``warmup`` rounds).

    Interleaving the candidates puts them under the same machine load, so their ratios stay meaningful on a
    shared, noisy machine even when the absolute times drift. Report medians and ratios, not single times.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant figures, everything else as text."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    )


def write_results(name: str, title: str, sections: Sequence[tuple[str, str]], notes: str = "") -> Path:
    """Write ``bench/results/NAME.md``: a title, the command that made it, the machine, then each
    ``(heading, markdown)`` section; also print it. Returns the path."""
    command = (
        "python -m bench " + " ".join(sys.argv[1:])
        if sys.argv[0].endswith("__main__.py")
        else " ".join([Path(sys.executable).name, *sys.argv])
    )
    parts = [f"# {title}", "", f"Command: `{command.strip()}`  ", f"Machine: {machine()}", ""]
    if notes:
        parts += [notes.strip(), ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    text = "\n".join(parts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text, flush=True)
    return path


def one_thread(run: Callable[[bool], None]) -> Callable[[bool], None]:
    """``run(quick)`` on one intra-op thread, restored afterwards: the small models of these benchmarks run
    fastest so, and steadiest on a shared machine (two threads fighting other jobs can be ten times slower)."""

    @functools.wraps(run)
    def main(quick: bool = False) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run(quick)
        finally:
            torch.set_num_threads(threads)

    return main
