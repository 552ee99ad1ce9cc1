"""The demo: the tutorials' argument end to end, as one HTML page of figures, equations and numbers.

``run_demo(out)`` retells the two tutorials "Score Functions" and "Score functions, denoising and
diffusion" on the tutorials' two-Gaussian mixture, whose exact score and density are known, and
then on moons:

1. the score of a mixture (the true field, a slice of it, its divergence, interfering sinks);
2. score matching with every objective (explicit, implicit exact / Hutchinson, sliced, denoising),
   scored by the relative Fisher divergence to the exact score;
3. Langevin dynamics with the exact score: an animation, and naive vs annealed mode weights;
4. adding noise: smoothing as a convolution, the denoising target;
5. a noise-conditional score network (NCSN): its error at several noise levels, sampled by annealed
   Langevin;
6. diffusion (a VP SDE) as stacked denoisers, sampled by every predictor-corrector combination and
   by the probability-flow ODE;
7. the ODE's exact log-likelihood against the true ``E_p[log p]``, and where its error comes from;
8. the same diffusion on moons: samples and the learned density, against a kernel density estimate
   and a classifier two-sample test.

It writes ``out/report.html`` (one file: images embedded), the figures beside it (PNG, GIF) and
every number in ``out/results.json``. All randomness comes from generators seeded by ``seed``, and
the run uses one CPU thread, so two runs give the same numbers (the wall times aside).

The package: ``settings`` (budgets, fixed settings, random streams), ``models`` (the small models
and their training), ``experiments`` (naive vs annealed Langevin, basins, the checks of the moons
model), ``sections`` (one module per section: ``compute`` its numbers and figures, ``write`` its
words, equations, tables and figures), ``mathml`` (equations as MathML), ``document`` (the HTML
page) and ``page`` (the sections in order, the introduction, the summary and the glossary); this
module computes the sections in order, passing each what it needs, and writes the files. ``tools/check_report.py`` (``make check-report``) checks the page in headless Chromium.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..distributions import two_gaussians
from ..files import atomic_write
from .page import Results, render
from .sections import diffusion, langevin, likelihood, moons, ncsn, noise, score, score_matching
from .settings import FULL, QUICK, Budget, Streams

__all__ = ["FULL", "QUICK", "SECTIONS", "Budget", "run_demo"]

SECTIONS = ("score", "score_matching", "langevin", "noise", "ncsn", "diffusion", "likelihood", "moons")


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    progress: bool = True,
    budget: Budget | None = None,
    seed: int = 0,
) -> dict:
    """Run the tutorials' story end to end and write ``out/report.html``, its figures and ``out/results.json``.

    ``quick`` uses ``QUICK`` (well under a minute on one CPU core) instead of ``FULL`` (under two minutes);
    ``budget`` overrides both. Runs on the CPU with one thread (restored afterwards), so that the
    numbers are reproducible. Returns the numbers written to ``results.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = budget or (QUICK if quick else FULL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out, budget, progress, seed, quick)
    finally:
        torch.set_num_threads(threads)


class _Clock:
    """Times each section (``wall``, in seconds, by name) and advances the progress bar."""

    def __init__(self, bar):
        self.bar, self.wall = bar, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.wall[name] = time.perf_counter() - start
        self.bar.update()


def _run(out: Path, budget: Budget, progress: bool, seed: int, quick: bool) -> dict:
    begin = time.perf_counter()
    streams = Streams(seed)
    mixture = two_gaussians()
    data = mixture.sample(budget.n_train, generator=streams.generator(1))
    with tqdm(total=len(SECTIONS), desc="demo", unit="section", disable=not progress) as bar:
        clock = _Clock(bar)
        with clock("score"):
            score_section = score.compute(mixture, streams)
        with clock("score_matching"):
            matching = score_matching.compute(mixture, data, budget, streams)
        with clock("langevin"):
            chains = langevin.compute(mixture, budget, streams, out)
        with clock("noise"):
            smoothing = noise.compute(mixture, streams)
        with clock("ncsn"):
            ladder = ncsn.compute(mixture, data, budget, streams, out)
        with clock("diffusion"):
            vp = diffusion.compute(mixture, data, budget, streams, out)
        with clock("likelihood"):
            density = likelihood.compute(mixture, vp.model, vp.scaler, budget, streams)
        with clock("moons"):
            on_moons = moons.compute(budget, streams)
    done = (score_section, matching, chains, smoothing, ladder, vp, density, on_moons)
    settings = {"quick": quick, "seed": seed, "threads": 1, "torch": torch.__version__} | asdict(budget)
    results = Results(
        *(section.numbers for section in done),
        wall_s=clock.wall | {"total": time.perf_counter() - begin},
        settings=settings,
    )
    figures = {name: drawn for section in done for name, drawn in section.figures.items()}
    report = render(out, results, figures, budget)
    numbers = _clean(asdict(results))
    atomic_write(out / "results.json", (json.dumps(numbers, indent=2) + "\n").encode())
    atomic_write(out / "report.html", report.encode())
    return numbers


def _clean(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
