"""MkDocs hook: the examples gallery, one page per script in ``examples/``, each run when the site is built.

Every ``examples/NAME.py`` is run in a fresh interpreter, in an empty working folder, with matplotlib's
``Agg`` backend; ``plt.show()`` (and the end of the script) saves every open figure instead of showing
it. Its page ``examples/NAME.md`` holds the script's docstring as prose (its first line is the title),
the code, what it printed and its figures, so a page shows what its code gives on the machine that
built the site. A script that fails or runs past ``TIMEOUT`` fails a strict build (``make docs-check``)
and shows its traceback on its page.

A run is kept in ``.cache/gallery/NAME/`` under a key that hashes the script, the package's sources and
this runner, so a rebuild reruns only the examples whose inputs changed (a fresh clone runs them all).
The marker ``<!-- scorefield:gallery-index -->`` on ``examples/index.md`` becomes a card per example.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CACHE = ROOT / ".cache" / "gallery"
SOURCES = (ROOT / "src" / "scorefield",)
MARKER = "<!-- scorefield:gallery-index -->"
TIMEOUT = 300  # seconds per example; each is meant to take under a minute on a laptop CPU
log = logging.getLogger("mkdocs.hooks.gallery")

# runs in the example's interpreter: argv is (script, folder for the figures)
RUNNER = """
import os, runpy, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

script, out = sys.argv[1], sys.argv[2]
saved = []

def save_figures(*args, **kwargs):
    for number in plt.get_fignums():
        path = os.path.join(out, f"figure-{len(saved) + 1}.png")
        plt.figure(number).savefig(path, dpi=100, bbox_inches="tight")
        saved.append(path)
    plt.close("all")

plt.show = save_figures
sys.argv = [script]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
save_figures()
"""


@dataclass
class Result:
    """One example's run: what it printed (stdout and stderr together), its figures, its exit status."""

    output: str
    figures: list[Path]
    returncode: int
    seconds: float


def examples() -> list[Path]:
    """The example scripts, by name (their names start with the order they are read in)."""
    return sorted(EXAMPLES.glob("*.py"))


def split(path: Path) -> tuple[str, str, str]:
    """``(title, prose, code)`` of a script: its docstring's first line, the rest of the docstring, and
    the code after the docstring."""
    source = path.read_text()
    module = ast.parse(source)
    first = module.body[0] if module.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        raise ValueError(f"{path.name} has no docstring: its first line is the example's title")
    doc = ast.get_docstring(module, clean=True) or ""
    title, _, prose = doc.partition("\n")
    code = "\n".join(source.splitlines()[first.end_lineno :]).strip("\n")
    return title.strip(), prose.strip(), code


def sources_key(*extra: bytes, folders: tuple[Path, ...] | None = None) -> str:
    """A hash of ``extra`` and of every Python file under ``folders`` (default ``SOURCES``, the package):
    what a run made from the package depends on."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part)
    for folder in SOURCES if folders is None else folders:
        for source in sorted(folder.rglob("*.py")):
            digest.update(str(source.relative_to(folder)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def key(path: Path) -> str:
    """The hash of what an example's run depends on: the script, the package's sources, this runner."""
    return sources_key(RUNNER.encode(), path.read_bytes())


def run(path: Path, out: Path, timeout: float = TIMEOUT) -> Result:
    """Run the example at ``path`` in an empty working folder; its figures are written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    # one torch thread unless the caller says otherwise: the examples' models are small, and on a machine
    # whose cores are shared torch's default thread count made them several times slower (troubleshooting)
    env = {"OMP_NUM_THREADS": "1", **os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gallery-") as work:
        try:
            done = subprocess.run(
                [sys.executable, "-c", RUNNER, str(path), str(out.resolve())],
                cwd=work, env=env, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
            output, returncode = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as error:
            output = (
                (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
            )
            output, returncode = output + f"\n(stopped after {timeout:.0f} s)", -1
    figures = sorted(out.glob("figure-*.png"), key=lambda p: int(p.stem.split("-")[1]))
    return Result(output, figures, returncode, time.perf_counter() - start)


def cached_run(path: Path, cache: Path = CACHE) -> Result:
    """The example's run, from ``cache`` when its key matches, else run now and kept there if it passed."""
    folder, stamp = cache / path.stem, key(path)
    meta = folder / "run.json"
    if meta.is_file():
        kept = json.loads(meta.read_text())
        if kept.get("key") == stamp:
            figures = [folder / name for name in kept["figures"]]
            if all(f.is_file() for f in figures):
                return Result(kept["output"], figures, 0, kept["seconds"])
    shutil.rmtree(folder, ignore_errors=True)
    result = run(path, folder)
    if result.returncode == 0:
        fields = {"key": stamp, "output": result.output, "seconds": result.seconds}
        meta.write_text(json.dumps({**fields, "figures": [f.name for f in result.figures]}))
    return result


def page(path: Path, result: Result) -> str:
    """The Markdown page of one example."""
    title, prose, code = split(path)
    parts = [f"# {title}", prose, f"```python\n{code}\n```"]
    status = "" if result.returncode == 0 else f", and failed with exit status {result.returncode}"
    parts.append(f"Its output (it ran in {result.seconds:.0f} s when this site was built{status}):")
    parts.append(f"```text\n{result.output.rstrip() or '(nothing printed)'}\n```")
    for i in range(1, len(result.figures) + 1):
        parts.append(f"![{title}: figure {i}]({path.stem}-{i}.png)")
    parts.append(f"Run it yourself: `python examples/{path.name}` ([download]({path.name})).")
    return "\n\n".join(p for p in parts if p) + "\n"


def index(pages: list[tuple[Path, Result]]) -> str:
    """The cards of the gallery's index: a thumbnail, the title and the first sentence of each example."""
    cards = []
    for path, result in pages:
        title, prose, _ = split(path)
        summary = prose.split("\n\n")[0].replace("\n", " ")
        thumbnail = f"![]({path.stem}-1.png)\n\n    " if result.figures else ""
        cards.append(f"-   {thumbnail}**[{title}]({path.stem}.md)**: {summary}")
    return '<div class="grid cards" markdown>\n\n' + "\n\n".join(cards) + "\n\n</div>\n"


_state: dict = {}


def on_config(config):
    pages = [{split(p)[0]: f"examples/{p.stem}.md"} for p in examples()]
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and "Examples" in entry:
            config.nav[i] = {"Examples": ["examples/index.md", *pages]}
            break
    else:
        log.warning("mkdocs.yml's nav has no 'Examples' entry for the gallery's pages")
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    runs = []
    for path in examples():
        result = cached_run(path)
        if result.returncode != 0:
            log.error(
                f"examples/{path.name} failed (exit status {result.returncode}):\n{result.output[-3000:]}"
            )
        else:
            log.info(f"examples/{path.name}: {result.seconds:.1f} s, {len(result.figures)} figures")
        runs.append((path, result))
        files.append(File.generated(config, f"examples/{path.stem}.md", content=page(path, result)))
        files.append(File.generated(config, f"examples/{path.name}", abs_src_path=str(path)))
        for i, figure in enumerate(result.figures, 1):
            files.append(File.generated(config, f"examples/{path.stem}-{i}.png", abs_src_path=str(figure)))
    _state["runs"] = runs
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, index(_state.get("runs", [])))
    return markdown
