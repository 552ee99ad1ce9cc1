"""The documentation site's generators (docs/hooks/) and pages, without building the site.

The strict build itself is ``make docs-check``; these checks run in the test suite where they can:
the error messages of the command line are all found and all listed, every formula of the maths page
becomes MathML (needs the ``docs`` extra), and the tutorial's code runs (slow).
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "docs" / "hooks"


def _hook(name: str):
    if str(HOOKS) not in sys.path:  # as MkDocs loads them: a hook may import its siblings
        sys.path.insert(0, str(HOOKS))
    spec = importlib.util.spec_from_file_location(f"scorefield_docs_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


REPORTED = ("UsageError", "ConfigError", "CheckpointError", "RunError", "TrainingError")


def test_error_messages_are_found_with_their_exit_status():
    reference = _hook("reference")
    found = reference.messages()
    texts = [m.text for m in found]
    assert len(found) >= 50
    assert (
        "run directory {run_dir} already holds a run; pass --resume to continue it or --force to start over"
        in texts
    )
    assert any(m.status == 1 and m.exception == "TrainingError" for m in found)
    # every raise of an error the command line reports, in the modules it reads, is on the list
    pattern = re.compile(rf"raise ({'|'.join(REPORTED)})\(")
    raised = sum(len(pattern.findall(f.read_text())) for f in reference._files(reference.ERROR_SOURCES))
    assert len([m for m in found if m.exception in REPORTED]) == raised


def test_troubleshooting_lists_the_errors_of_every_module():
    reference = _hook("reference")
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    listed = [
        path for arg in re.findall(r"<!-- scorefield:errors (\S+) -->", page) for path in arg.split(",")
    ]
    covered = set(reference._files(tuple(listed)))
    sources = reference._files(reference.ERROR_SOURCES)
    missing = [
        f
        for f in sources
        if f not in covered and reference.messages((str(f.relative_to(reference.PACKAGE_DIR)),))
    ]
    assert not missing, missing


def test_every_formula_of_the_maths_page_becomes_mathml():
    pytest.importorskip("latex2mathml")
    mathml = _hook("mathml")
    text = (ROOT / "docs" / "math.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks = re.findall(r"\$\$(.+?)\$\$", text, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"\$\$.+?\$\$", "", text, flags=re.S))
    inline = re.findall(r"(?<!\\)\$([^$\n]+?)\$", prose)
    assert len(blocks) >= 20 and len(inline) >= 400
    for tex in blocks:
        assert "<math" in mathml.to_mathml(tex, display=True)
    for tex in inline:
        assert "<math" in mathml.to_mathml(tex)
    with pytest.raises(ValueError, match="untranslated"):
        mathml.to_mathml(r"\notacommand x")


def test_api_pages_cover_every_module():
    api_pages = _hook("api_pages")
    modules = api_pages.module_names()
    files = {
        ".".join(p.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "src" / "scorefield").rglob("*.py")
        if p.name != "__main__.py"
    }
    assert set(modules) == files
    assert modules[0] == "scorefield"


@pytest.mark.slow
def test_the_tutorial_runs():
    """Every Python block of docs/tutorial.md, in order, in one fresh interpreter."""
    page = (ROOT / "docs" / "tutorial.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", page, flags=re.S))
    assert "import scorefield" in code
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=1800)


def test_search_ranks_the_application_below_the_library():
    api_pages = _hook("api_pages")
    assert api_pages.front_matter("scorefield.langevin") == []
    assert "  exclude: true" in api_pages.front_matter("scorefield.demo.settings")
    viz = api_pages.page_markdown("scorefield.viz.fields", ["plot_score_field"], [], {})
    assert viz.startswith("---\nsearch:\n  boost: 0.2\n---\n\n::: scorefield.viz.fields")


def test_the_demo_page_lists_every_figure_of_the_report(tmp_path, monkeypatch):
    demo_page = _hook("demo_page")
    monkeypatch.setattr(demo_page, "CACHE", tmp_path)
    (tmp_path / "score_field.png").write_bytes(b"png")
    (tmp_path / "langevin.gif").write_bytes(b"gif")
    report = (
        '<figure id="fig-score_field"><div class="frame"><img src="data:image/png;base64,AA" width="4" '
        'height="4" alt="the score field of the mixture"></div></figure>'
        '<figure id="fig-langevin"><div class="frame"><img src="data:image/gif;base64,AA" alt="animation: '
        'Langevin | particles"></div></figure>'
    )
    rows = demo_page.figure_table(report).splitlines()[2:]
    assert rows == [
        "| [Figure 1](report.html#fig-score_field) | the score field of the mixture | [score_field.png](score_field.png) |",
        "| [Figure 2](report.html#fig-langevin) | animation: Langevin \\| particles | [langevin.gif](langevin.gif) |",
    ]
