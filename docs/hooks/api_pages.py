"""MkDocs hook: one API page per module of ``scorefield``, generated at build time.

Every module under ``src/scorefield`` gets a page ``api/<dotted.name>.md`` holding a mkdocstrings
block for the names the module itself defines and exports (its ``__all__``, else its public names),
and a table of the names it re-exports, linked to the page that documents them. The module list is
read from the source tree, so a new module gets its page (and its place in the navigation) without
an edit here; ``GROUPS`` only orders the navigation, and a module it does not name lands in
"Other modules". The overview page ``api/index.md`` gets the table of ``scorefield.__all__``.
"""

from __future__ import annotations

import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "scorefield"
MARKER = "<!-- scorefield:api-index -->"
log = logging.getLogger("mkdocs.hooks.api_pages")

# navigation order: (section title, modules); subpackages bring their submodules with them
GROUPS = [
    (
        "Maths",
        [
            "distributions", "sde", "noise", "keyed", "score", "losses", "ode", "samplers",
            "multistep", "gaussian", "langevin", "conditional", "likelihood", "metrics", "scalers", "utils", "files",
        ],
    ),
    ("Networks and data", ["nets", "datasets"]),
    ("Estimators", ["fit", "estimators"]),
    ("Runs", ["run"]),
    ("Application", ["cli", "demo", "viz", "eval"]),
]  # fmt: skip

# search ranking (Material's front matter ``search``): the pages of the application's modules rank below
# the library's, so a query such as "langevin" finds ``scorefield.langevin`` before a demo setting; the
# demo's own modules (its settings, sections and page layout) are left out of the index
SEARCH = {"demo": {"exclude": True}, "viz": {"boost": 0.2}, "cli": {"boost": 0.2}, "report": {"boost": 0.2}}

# griffe messages about docstrings that are known and reported, by (file, start of the message): logged
# as INFO instead of failing the build. An entry that no longer matches anything does no harm; delete it.
KNOWN_DOCSTRING_ISSUES: list[tuple[str, str]] = []  # (path, message start) of griffe warnings to accept

_state: dict = {}


class _KnownIssues(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for path, start in KNOWN_DOCSTRING_ISSUES:
            if path in message and start in message:
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("mkdocs.plugins.griffe").addFilter(_KnownIssues())


def module_names(src: Path = SRC, package: str = PACKAGE) -> list[str]:
    """Every importable module of the package by dotted name, packages before their modules."""
    names = []
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__main__" or any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(names), key=lambda n: (n.split(".")[:-1], n))


def _summary(obj) -> str:
    doc = obj.docstring.value.strip() if obj.docstring else ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return first.replace("|", "\\|")


def module_contents(package) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
    """For each module: the names it defines and exports, and ``(name, target path)`` of those it
    re-exports from elsewhere."""
    contents = {}
    for name in module_names():
        module = package.get_member(name.partition(".")[2]) if "." in name else package
        exports = module.exports
        if exports is None:
            exports = [n for n, m in module.members.items() if not n.startswith("_") and not m.is_alias]
        own, reexported = [], []
        for n in exports:
            member = module.members.get(n) if isinstance(n, str) else None
            if member is None:
                continue
            if member.is_alias:
                reexported.append((n, member.target_path))
            elif not member.is_module:
                own.append(n)
        contents[name] = (own, reexported)
    # a name another module re-exports is public even if its own module's __all__ omits it
    for _, reexported in list(contents.values()):
        for _, target in reexported:
            module, _, n = target.rpartition(".")
            if module in contents and n not in contents[module][0] and not n.startswith("_"):
                member = package.get_member(target.partition(".")[2])
                if not member.is_alias and not member.is_module:
                    contents[module][0].append(n)
    return contents


def page_path(module: str) -> str:
    return f"api/{module}.md"


def front_matter(module: str) -> list[str]:
    """The page's YAML front matter: its ``search`` settings from ``SEARCH``, if any."""
    top = module.split(".")[1] if "." in module else ""
    settings = SEARCH.get(top)
    if not settings:
        return []
    return ["---", "search:", *(f"  {k}: {str(v).lower()}" for k, v in settings.items()), "---", ""]


def page_markdown(module: str, own: list[str], reexported: list[tuple[str, str]], documented) -> str:
    members = "[" + ", ".join(own) + "]" if own else "false"
    lines = [*front_matter(module), f"::: {module}", "    options:", f"      members: {members}", ""]
    subs = [m for m in documented if m.rpartition(".")[0] == module]
    if subs:
        lines += ["## Modules", "", "| module | |", "| --- | --- |"]
        lines += [f"| [`{m.rpartition('.')[2]}`]({m}.md) | {_state['summaries'].get(m, '')} |" for m in subs]
        lines.append("")
    shown = [(n, target) for n, target in reexported if _documented(target, documented)]
    if shown:
        lines += ["## Re-exported here", "", "| name | documented in |", "| --- | --- |"]
        lines += [f"| [`{n}`][{target}] | `{target.rpartition('.')[0]}` |" for n, target in shown]
        lines.append("")
    return "\n".join(lines)


def _documented(target: str, documented) -> bool:
    """Whether ``target`` (a dotted path) is one of the names a generated page renders."""
    module, _, name = target.rpartition(".")
    return name in documented.get(module, ((), ()))[0] or target in documented


def _nav(modules: list[str]) -> list:
    placed, nav = set(), [{"Overview": "api/index.md"}]
    for title, roots in GROUPS:
        entries = []
        for root in roots:
            full = f"{PACKAGE}.{root}"
            for m in modules:
                if (m == full or m.startswith(full + ".")) and m not in placed:
                    entries.append({m: page_path(m)})
                    placed.add(m)
        if entries:
            nav.append({title: entries})
    rest = [{m: page_path(m)} for m in modules if m not in placed and m != PACKAGE]
    if rest:
        nav.append({"Other modules": rest})
    return nav


def on_config(config):
    import griffe

    package = griffe.load(PACKAGE, search_paths=[str(SRC)], resolve_aliases=False)
    contents = module_contents(package)
    _state.update(package=package, contents=contents)
    _state["summaries"] = {
        m: _summary(package.get_member(m.partition(".")[2]) if "." in m else package) for m in contents
    }
    modules = [m for m in contents if m != PACKAGE]
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and "API reference" in entry:
            config.nav[i] = {"API reference": _nav(modules)}
            break
    else:
        log.warning("mkdocs.yml's nav has no 'API reference' entry for the generated pages")
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    contents = _state["contents"]
    for module, (own, reexported) in contents.items():
        if module == PACKAGE:
            continue
        text = page_markdown(module, own, reexported, contents)
        files.append(File.generated(config, page_path(module), content=text))
    return files


def index_table() -> str:
    """The table of ``scorefield.__all__``: each name, what it is, and a link to its documentation."""
    package, contents = _state["package"], _state["contents"]
    rows = ["| name | kind | summary |", "| --- | --- | --- |"]
    for name in package.exports or []:
        member = package.members[name]
        target = member.target_path if member.is_alias else member.path
        obj = package.get_member(target.partition(".")[2]) if "." in target else package
        kind = obj.kind.value
        if kind == "module":
            link = f"[`{name}`]({target}.md)"
        elif _documented(target, contents):
            link = f"[`{name}`][{target}]"
        else:
            log.warning(f"scorefield.{name} ({target}) is on no API page")
            link = f"`{name}`"
        rows.append(f"| {link} | {kind} | {_summary(obj)} |")
    return "\n".join(rows)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, index_table())
    return markdown
