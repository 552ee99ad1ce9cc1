"""MkDocs hook: one page per benchmark table in ``bench/results/``, included when the site is built.

Each ``bench/results/NAME.md`` gets the page ``benchmarks/NAME.md``, whose only content is the
``pymdownx.snippets`` line that includes the file, so the site shows the tables exactly as ``make bench``
wrote them and a new table gets its page (and its place in the navigation) without an edit here. The
figures beside the tables (``bench/results/*.png``) are served as ``benchmarks/NAME.png``. The marker
``<!-- scorefield:bench-index -->`` on ``benchmarks/index.md`` becomes the list of the pages.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
MARKER = "<!-- scorefield:bench-index -->"
ORDER = ("density", "anomaly", "imputation", "samplers", "likelihood", "digits", "throughput")
log = logging.getLogger("mkdocs.hooks.bench_pages")


def tables() -> list[Path]:
    """The result files, in ``ORDER`` first, then by name."""
    files = sorted(RESULTS.glob("*.md"))
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(files, key=lambda f: (rank.get(f.stem, len(ORDER)), f.stem))


def _heading(path: Path) -> str:
    match = re.search(r"^# (.+)$", path.read_text(), re.M)
    return match.group(1).strip() if match else path.stem


def _command(path: Path) -> str:
    match = re.search(r"^Command: `([^`]+)`", path.read_text(), re.M)
    return match.group(1) if match else ""


def on_config(config):
    pages = [{_heading(f): f"benchmarks/{f.stem}.md"} for f in tables()]
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and "Benchmarks" in entry:
            config.nav[i] = {"Benchmarks": ["benchmarks/index.md", *pages]}
            break
    else:
        log.warning("mkdocs.yml's nav has no 'Benchmarks' entry for the generated pages")
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for table in tables():
        files.append(
            File.generated(config, f"benchmarks/{table.stem}.md", content=f'--8<-- "{table.name}"\n')
        )
    for figure in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{figure.name}", abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    rows = ["| benchmark | made by |", "| --- | --- |"]
    for table in tables():
        command = _command(table)
        rows.append(f"| [{_heading(table)}]({table.stem}.md) | {f'`{command}`' if command else ''} |")
    return markdown.replace(MARKER, "\n".join(rows))
