"""MkDocs hook: the demo report on the site, every figure and animation of it, made when the site is built.

``scorefield demo`` writes one HTML page (``report.html``, figures embedded) with its PNG and GIF files
beside it. This hook runs it into ``.cache/demo/`` whenever the package's sources differ from those of
the last run (the key of ``gallery.sources_key``; a fresh clone runs it once, a minute or two on one
core), and serves the folder as ``demo/``: the report at ``demo/report.html`` and each figure under
its file name, which the tutorial shows (``demo/score_field.png``). The marker
``<!-- scorefield:demo-figures -->`` on ``demo/index.md`` becomes the list of the report's figures,
each linked to its place in the report.
"""

from __future__ import annotations

import html
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gallery import sources_key  # this folder is on sys.path while MkDocs loads its hooks

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "demo"
MARKER = "<!-- scorefield:demo-figures -->"
SEED = 0
log = logging.getLogger("mkdocs.hooks.demo_page")
FIGURE = re.compile(r'<figure id="fig-([^"]+)"><div class="frame"><img[^>]*? alt="([^"]*)"')


def key() -> str:
    return sources_key(f"scorefield demo --seed {SEED}".encode())


def refresh(cache: Path = CACHE) -> Path:
    """``cache``, holding the demo of the current sources: run now unless the last run's key matches."""
    stamp = cache / "key"
    current = key()
    if stamp.is_file() and stamp.read_text() == current and (cache / "report.html").is_file():
        return cache
    fresh = cache.with_name(cache.name + "-new")
    shutil.rmtree(fresh, ignore_errors=True)
    log.info("running scorefield demo for the site (the package changed since the last run)")
    command = [
        sys.executable,
        "-m",
        "scorefield",
        "demo",
        "--out",
        str(fresh),
        "--seed",
        str(SEED),
        "--quiet",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        log.error(f"scorefield demo failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
        return cache
    (fresh / "key").write_text(current)
    shutil.rmtree(cache, ignore_errors=True)
    fresh.rename(cache)
    return cache


def figure_table(report: str) -> str:
    """The report's figures in order: number, what each shows (its alt text), its file."""
    rows = ["| | what it shows | file |", "| --- | --- | --- |"]
    for number, (name, alt) in enumerate(FIGURE.findall(report), 1):
        file = next((f for f in (f"{name}.png", f"{name}.gif") if (CACHE / f).is_file()), f"{name}.png")
        text = html.unescape(alt).replace("|", "\\|")
        rows.append(f"| [Figure {number}](report.html#fig-{name}) | {text} | [{file}]({file}) |")
    return "\n".join(rows)


def on_files(files, config):
    from mkdocs.structure.files import File

    folder = refresh()
    for path in sorted(folder.iterdir()):
        if path.suffix in (".html", ".png", ".gif", ".json"):  # the report, its figures, its numbers
            files.append(File.generated(config, f"demo/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        report = CACHE / "report.html"
        table = figure_table(report.read_text()) if report.is_file() else "(the demo did not run)"
        markdown = markdown.replace(MARKER, table)
    return markdown
