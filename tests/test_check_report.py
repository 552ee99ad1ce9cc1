"""The browser check of the demo page (tools/check_report.py): headless Chromium finds a page that
scrolls sideways, an image that does not load and a console error, and passes a page without them.
Skipped where no Chromium is installed (Debian: ``apt-get install chromium``)."""

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_report.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_report", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_report = _load()
needs_chromium = pytest.mark.skipif(check_report.find_chromium() is None, reason="no Chromium installed")

PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
HEAD = '<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
GOOD = (
    HEAD
    + "<p>Text that wraps at any width, an equation <math><mi>x</mi><mo>=</mo><mn>1</mn></math>, an image:</p>"
    f'<img src="data:image/png;base64,{PIXEL}" width="600" height="300" style="max-width:100%;height:auto" alt="dot">'
    '<div style="overflow-x:auto"><table><tr>'
    + "<td>a cell that wraps</td>" * 3
    + "</tr></table></div></body></html>"
)
HIDDEN = (  # fits the window, but only because a box scrolls: the reader must find its scroll bar
    HEAD
    + '<div id="numbers" style="overflow-x:auto"><table><tr>'
    + "<td>wide&nbsp;cell&nbsp;of&nbsp;a&nbsp;table</td>" * 12
    + "</tr></table></div></body></html>"
)
BAD = (
    HEAD + '<img src="data:image/png;base64,bm90IGFuIGltYWdl" alt="broken">'
    "<table><tr>" + "<td>wide&nbsp;cell&nbsp;of&nbsp;a&nbsp;table</td>" * 12 + "</tr></table>"
    "<script>console.error('something broke')</script></body></html>"
)


@needs_chromium
def test_a_page_that_fits_passes_at_desktop_and_phone_widths(tmp_path):
    page = tmp_path / "good.html"
    page.write_text(GOOD)
    results = check_report.check_report(page, [(1280, False), (400, True)])
    assert [r["width"] for r in results] == [1280, 400]
    for r in results:
        assert r["problems"] == [], r
        assert r["scrollWidth"] <= r["innerWidth"] and r["images"] == 1 and r["maths"] == 1
        assert r["viewportMeta"]
    assert check_report.main([str(page), "--width", "400:phone"]) == 0


@needs_chromium
def test_overflow_a_broken_image_and_a_console_error_are_each_reported(tmp_path, capsys):
    page = tmp_path / "bad.html"
    page.write_text(BAD)
    (result,) = check_report.check_report(page, [(400, True)])
    problems = "\n".join(result["problems"])
    assert result["scrollWidth"] > 400 and "px wide in a 400 px viewport" in problems
    assert result["broken"] == ["broken"] and "images did not load" in problems
    assert any("something broke" in e for e in result["errors"])
    assert check_report.main([str(page), "--width", "1280"]) == 1  # the image and the error, at any width
    assert "FAIL: 1280 px desktop" in capsys.readouterr().out


@needs_chromium
def test_content_hidden_in_a_sideways_scrolling_box_fails(tmp_path):
    page = tmp_path / "hidden.html"
    page.write_text(HIDDEN)
    (result,) = check_report.check_report(page, [(400, True)])
    assert result["scrollWidth"] <= 400  # the page itself does not scroll
    (problem,) = result["problems"]
    assert problem.startswith("content hidden in boxes that scroll or clip sideways: div#numbers (")


def test_widths_and_a_missing_file(tmp_path, capsys):
    assert check_report.parse_width("400:phone") == (400, True)
    assert check_report.parse_width("1280") == (1280, False)
    with pytest.raises(Exception, match="N:phone"):
        check_report.parse_width("400:tablet")
    assert check_report.main([str(tmp_path / "none.html")]) == 2
    assert "no such file" in capsys.readouterr().err
