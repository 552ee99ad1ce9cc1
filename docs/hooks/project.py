"""MkDocs hook: the project's facts on every page and its files as pages.

The footer (``docs/overrides/partials/copyright.html``) shows the version and licence read from
``pyproject.toml``, the commit the site was built from, and a link to the source: ``repo_url`` when
``mkdocs.yml`` sets it, else the URL of the clone's ``origin`` remote when it has one. The pages under
``about/`` are the repository's own ``CHANGELOG.md``, ``LICENSE`` and ``CITATION.cff``, so the site
never holds a second copy of them.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the backport that pyproject requires there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.project")


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def remote_url() -> str:
    """The ``origin`` remote as a web address (``git@host:owner/name.git`` becomes https), or ''."""
    url = _git("remote", "get-url", "origin")
    if match := re.fullmatch(r"git@([^:]+):(.+?)(\.git)?", url):
        return f"https://{match.group(1)}/{match.group(2)}"
    return url.removesuffix(".git") if url.startswith("https://") else ""


def pages() -> dict[str, str]:
    """The ``about/`` pages, each from the file it shows."""
    citation = (ROOT / "CITATION.cff").read_text()
    return {
        "about/changelog.md": (ROOT / "CHANGELOG.md").read_text(),
        "about/license.md": "# Licence\n\n```text\n" + (ROOT / "LICENSE").read_text() + "```\n",
        "about/citing.md": "# Citing scorefield\n\nThe repository's `CITATION.cff`, which GitHub and "
        "Zenodo read:\n\n```yaml\n" + citation + "```\n",
    }


def on_config(config):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    config.extra["project"] = {
        "version": project["version"],
        "license": project["license"] if isinstance(project["license"], str) else project["license"]["text"],
        "commit": _git("rev-parse", "--short", "HEAD"),
    }
    if not config.repo_url and (url := remote_url()):
        config.repo_url = url
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
