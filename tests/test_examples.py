"""The examples gallery (examples/*.py, docs/hooks/gallery.py): each script runs as the site runs it,
and the hook turns a run into a page with its output and figures, reusing a run whose inputs are unchanged.

Running every example takes a few minutes, so those checks are slow; ``make docs-check`` (CI) runs
them too, through the hook, and fails when one fails.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gallery():
    spec = importlib.util.spec_from_file_location(
        "scorefield_docs_gallery", ROOT / "docs" / "hooks" / "gallery.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gallery = _gallery()


def test_every_example_has_a_title_prose_and_code():
    scripts = gallery.examples()
    assert len(scripts) >= 7
    for path in scripts:
        title, prose, code = gallery.split(path)
        assert title and len(title) < 60, path.name
        assert len(prose) > 100, path.name
        assert "import scorefield" in code or "scorefield" in code, path.name


def test_a_run_becomes_a_page_and_is_reused_until_its_script_changes(tmp_path, monkeypatch):
    script = tmp_path / "examples" / "01_demo.py"
    script.parent.mkdir()
    script.write_text(
        '"""A small example\n\nDraws one figure and prints a number.\n"""\n\n'
        "import matplotlib.pyplot as plt\n\nprint(6 * 7)\nplt.plot([0, 1], [1, 0])\nplt.show()\n"
        "plt.plot([0, 1], [0, 1])\n"
    )
    monkeypatch.setattr(gallery, "SOURCES", (tmp_path / "examples",))
    result = gallery.cached_run(script, tmp_path / "cache")
    assert result.returncode == 0 and result.output.strip() == "42"
    assert [f.name for f in result.figures] == [
        "figure-1.png",
        "figure-2.png",
    ]  # at plt.show() and at the end
    page = gallery.page(script, result)
    assert page.startswith("# A small example\n\nDraws one figure")
    assert "```text\n42\n```" in page and "(01_demo-2.png)" in page
    assert "print(6 * 7)" in page and '"""' not in page

    (tmp_path / "cache" / "01_demo" / "figure-1.png").write_bytes(b"kept")  # reused: not run again
    assert gallery.cached_run(script, tmp_path / "cache").figures[0].read_bytes() == b"kept"
    script.write_text(script.read_text().replace("6 * 7", "6 * 8"))
    assert gallery.cached_run(script, tmp_path / "cache").output.strip() == "48"


def test_a_failing_example_reports_its_traceback(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text('"""Broken\n\nRaises.\n"""\n\nraise ValueError("no such column")\n')
    result = gallery.run(script, tmp_path / "out")
    assert result.returncode != 0
    assert "ValueError: no such column" in result.output
    assert "failed with exit status" in gallery.page(script, result)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.stem for p in gallery.examples()])
def test_the_example_runs(name, tmp_path):
    result = gallery.run(gallery.EXAMPLES / f"{name}.py", tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    assert result.output.strip()
