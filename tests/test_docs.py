"""Every section of ``docs/math.md`` cited in the code, the tests and the README names a section that exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _anchor(heading: str) -> str:
    """GitHub's (and MkDocs') slug of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_cited_section_of_the_maths_page_exists():
    page = (ROOT / "docs" / "math.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in page.splitlines() if line.startswith("#")}
    files = [
        *ROOT.glob("src/**/*.py"),
        *ROOT.glob("tests/*.py"),
        *ROOT.glob("bench/*.py"),
        ROOT / "README.md",
    ]
    cited = {
        (path.relative_to(ROOT).as_posix(), anchor)
        for path in files
        for anchor in re.findall(r"docs/math\.md#([\w-]+)", path.read_text())
    }
    assert len(cited) >= 10  # the code does cite the page
    missing = sorted((path, anchor) for path, anchor in cited if anchor not in anchors)
    assert not missing, missing
    assert not [p for p in files if "MATH.md" in p.read_text() and p.name != "test_docs.py"]
