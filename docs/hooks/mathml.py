"""MkDocs hook: TeX between ``$...$`` and ``$$...$$`` becomes MathML when the site is built.

``pymdownx.arithmatex`` (generic mode) finds the maths in the Markdown and leaves it as
``<span class="arithmatex">\\(...\\)</span>`` or ``<div class="arithmatex">\\[...\\]</div>``; this hook
converts each with ``latex2mathml``, so the pages need no script, font or network to show equations.
TeX that ``latex2mathml`` cannot translate fails the build (a warning under ``--strict``).
"""

from __future__ import annotations

import html
import logging
import re

log = logging.getLogger("mkdocs.hooks.mathml")

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
# latex2mathml leaves a delimiter after \big, \Big, ... as its TeX name; give it the character instead
SIZED = re.compile(r"(\\[bB]igg?[lrm]?)\s*\\([|{}])")
SIZED_CHARS = {"|": "‖", "{": "{", "}": "}"}


def to_mathml(tex: str, display: bool = False) -> str:
    """MathML for one TeX formula; raises ``ValueError`` when some of it would be left untranslated."""
    from latex2mathml.converter import convert

    tex = SIZED.sub(lambda m: m.group(1) + SIZED_CHARS[m.group(2)], tex)
    try:
        out = convert(tex, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises many kinds of error on TeX it does not know
        raise ValueError(f"{error.__class__.__name__}: {error}") from None
    if "\\" in out:
        left = sorted(set(re.findall(r"\\[A-Za-z]+|\\.", out)))
        raise ValueError(f"untranslated {', '.join(left)}")
    return out


def _replace(pattern: re.Pattern, text: str, display: bool, where: str) -> str:
    def convert(match: re.Match) -> str:
        tex = html.unescape(match.group(1)).strip()
        try:
            math = to_mathml(tex, display)
            # a formula block keeps its div, which the theme lets scroll on a narrow screen
            return f'<div class="arithmatex">{math}</div>' if display else math
        except ValueError as error:
            log.warning(f"{where}: cannot render ${tex}$ as MathML ({error})")
            return match.group(0)

    return pattern.sub(convert, text)


def on_page_content(html_text, page, config, files):
    where = page.file.src_uri
    html_text = _replace(BLOCK, html_text, True, where)
    return _replace(INLINE, html_text, False, where)
