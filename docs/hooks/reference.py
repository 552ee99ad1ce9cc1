"""MkDocs hook: reference tables generated from the code when the site is built, so they never drift.

A page asks for one with an HTML comment on a line of its own:

- ``<!-- scorefield:config-fields -->``: every field of every config section, from the pydantic schema
  (``scorefield.run.config.Config``): type, default, allowed values, description.
- ``<!-- scorefield:config-defaults -->``: the complete default config as TOML (``to_toml``).
- ``<!-- scorefield:presets -->``: the preset files in ``configs/`` with their opening comments.
- ``<!-- scorefield:cli-help -->``: ``scorefield COMMAND --help`` for every command.
- ``<!-- scorefield:datasets -->``: the data sets a config can name (``data.name``).
- ``<!-- scorefield:errors PATHS -->``: every error message raised in the files under ``PATHS``
  (comma-separated, relative to ``src/scorefield``), read from the source with ``ast``. The page
  that lists errors must cover every file in ``ERROR_SOURCES``, or the build warns.
- ``<!-- scorefield:warnings -->``: every ``warnings.warn`` message in those files.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "scorefield"
OTHER_HOOKS = {"api-index", "bench-index", "gallery-index", "demo-figures"}  # markers the other hooks fill
MARKER = re.compile(r"^<!-- scorefield:([a-z-]+)(?: (\S+))? -->$", re.M)
log = logging.getLogger("mkdocs.hooks.reference")

# where the messages a user of the command line can meet are raised
ERROR_SOURCES = ("cli", "run", "datasets")
# exceptions the command line reports as one line (``cli.main``), with the exit status it returns
REPORTED = {
    "UsageError": 2,
    "ConfigError": 2,
    "CheckpointError": 2,
    "RunError": 2,
    "TrainingError": 1,
    "ArgumentTypeError": 2,  # argparse turns it into a usage error
}
# plain exceptions that become one of those where they are caught: pydantic's validators in
# run/config.py (ConfigError), the data readers (ConfigError from train, UsageError from the commands)
WRAPPED = {"ValueError": ("run/config.py", "datasets/"), "FileNotFoundError": ("datasets/",)}
# functions whose errors are a caller's mistake in Python, which the command line never makes
NOT_FROM_THE_COMMAND_LINE = {
    ("datasets/images.py", "image_scaler"),
    ("datasets/bundled.py", "digits_split"),
    ("datasets/toys.py", "_check_n"),
}


# --------------------------------------------------------------------------------------------------
# config


def _type(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return defs[prop["$ref"].rpartition("/")[2]].get("title", "table")
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        parts = [_type(p, defs) for p in prop["anyOf"]]
        return " or ".join(p for p in parts if p != "null") + (" (optional)" if "null" in parts else "")
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    return {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}.get(
        kind, kind
    )


def _bounds(prop: dict) -> str:
    for alternative in prop.get("anyOf", ()):
        if alternative.get("type") != "null":
            prop = prop | alternative
    words = {
        "exclusiveMinimum": "> {}",
        "minimum": ">= {}",
        "exclusiveMaximum": "< {}",
        "maximum": "<= {}",
        "minItems": "at least {} item(s)",
    }
    return ", ".join(text.format(prop[key]) for key, text in words.items() if key in prop)


def _default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    return f"`{value!r}`"


def config_fields() -> str:
    from scorefield.run.config import Config

    schema = Config.model_json_schema()
    defs = schema.get("$defs", {})
    out = []
    for section, field in Config.model_fields.items():
        model = field.annotation
        props = model.model_json_schema(ref_template="#/$defs/{model}").get("properties", {})
        out += [f"### `[{section}]`", "", f"{field.description[0].upper()}{field.description[1:]}.", ""]
        out += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for key, sub in model.model_fields.items():
            prop = props.get(key, {})
            kind = _type(prop, defs)
            bounds = _bounds(prop)
            if bounds:
                kind += f", {bounds}"
            default = _default(sub.get_default(call_default_factory=True))
            description = (sub.description or "").replace("|", "\\|")
            out.append(f"| `{key}` | {kind} | {default} | {description} |")
        out.append("")
    return "\n".join(out)


def config_defaults() -> str:
    from scorefield.run.config import Config, to_toml

    return "```toml\n" + to_toml(Config()).rstrip() + "\n```\n"


SENTENCE_END = re.compile(r"(?<=[a-z0-9)])\.\s+(?=[A-Z])")


def presets() -> str:
    rows = ["| preset | what it trains |", "| --- | --- |"]
    for path in sorted((ROOT / "configs").glob("*.toml")):
        lines = path.read_text().splitlines()
        comment = []
        for line in lines:
            if not line.startswith("#") or not line.strip("# "):
                break  # the first paragraph of the opening comment
            comment.append(line.lstrip("# ").strip())
        first = SENTENCE_END.split(" ".join(comment), maxsplit=1)[0].split(": scorefield ")[0]
        text = first.replace("|", "\\|") or "(no description)"
        rows.append(f"| `configs/{path.name}` | {text} |")
    return "\n".join(rows) + "\n"


def _describe(function) -> str:
    """The first sentence of a loader's docstring, or the expression of a lambda without one."""
    doc = (function.__doc__ or "").strip()
    if doc:
        return doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
    try:
        source = inspect.getsource(function).strip().rstrip(",")
    except (OSError, TypeError):
        return ""
    return f"`{source.partition('lambda:')[2].strip() or source}`"


def datasets() -> str:
    from scorefield.datasets import BUNDLED, IMAGE_FILES, IMAGE_LEVELS, TOY

    rows = ["| `data.name` | kind | what it is |", "| --- | --- | --- |"]
    for kind, registry in (("toy (2-D)", TOY), ("bundled", BUNDLED), ("files: set data.path", IMAGE_FILES)):
        for name, function in registry.items():
            levels = f"; images, {IMAGE_LEVELS[name]} levels" if name in IMAGE_LEVELS else ""
            rows.append(f"| `{name}` | {kind}{levels} | {_describe(function)} |")
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------------------------------
# command line


def cli_help() -> str:
    from scorefield.cli import main

    def run(argv: list[str]) -> str:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            main(argv)
        return buffer.getvalue().rstrip()

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "96"  # argparse wraps to the terminal; the page has one width
    try:
        top = run(["--help"])
        commands = re.search(r"\{([a-z,]+)\}", top)
        names = commands.group(1).split(",") if commands else []
        if not names:
            names = re.findall(r"^    ([a-z]+)\s", top, re.M)
        out = ["```text", f"$ scorefield --help\n{top}", "```", ""]
        for name in names:
            out += [f"### `scorefield {name}`", "", "```text", run([name, "--help"]), "```", ""]
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# error messages


@dataclass(frozen=True)
class Message:
    """One error message as the source spells it, ``{expression}`` where it is filled in."""

    text: str
    exception: str
    path: str  # relative to src/scorefield
    function: str
    line: int

    @property
    def status(self) -> int:
        return REPORTED.get(self.exception, 2)


def _template(node: ast.expr) -> str | None:
    """The text of a message expression, with ``{name}`` for what is filled in at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("{" + _placeholder(value.value) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return "{" + _placeholder(node.args[0]) + "}" if node.args else None
    return "{" + _placeholder(node) + "}"


def _placeholder(node: ast.expr) -> str:
    text = ast.unparse(node)
    if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)) and len(text) <= 28:
        return text.replace("self.", "")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_error_sentence":
        return "the first problem pydantic found, as one sentence"
    return "…"


def _exception_name(node: ast.expr) -> str | None:
    call = node.func if isinstance(node, ast.Call) else node
    if isinstance(call, ast.Name):
        return call.id
    if isinstance(call, ast.Attribute):
        return call.attr
    return None


def _is_user_error(name: str, path: str, function: str) -> bool:
    if (path, function) in NOT_FROM_THE_COMMAND_LINE:
        return False
    if name in REPORTED:
        return True
    return any(path.startswith(prefix) for prefix in WRAPPED.get(name, ()))


def messages(paths: tuple[str, ...] = ERROR_SOURCES) -> list[Message]:
    """Every error message raised in the modules under ``paths`` that the command line reports."""
    found = []
    for file in _files(paths):
        rel = file.relative_to(PACKAGE_DIR).as_posix()
        tree = ast.parse(file.read_text(), filename=str(file))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
                    continue
                name = _exception_name(node.exc)
                if name is None or not _is_user_error(name, rel, function.name):
                    continue
                text = _template(node.exc.args[0])
                if text is not None:
                    found.append(Message(text, name, rel, function.name, node.lineno))
    unique = {(m.path, m.line): m for m in found}  # a raise inside a nested function is walked twice
    return sorted(unique.values(), key=lambda m: (m.path, m.line))


def warning_messages(paths: tuple[str, ...] = ERROR_SOURCES) -> list[Message]:
    """Every ``warnings.warn`` message in the modules under ``paths``."""
    found = []
    for file in _files(paths):
        rel = file.relative_to(PACKAGE_DIR).as_posix()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn" and node.args:
                text = _template(node.args[0])
                if text is not None:
                    found.append(Message(text, "warning", rel, "", node.lineno))
    return found


def _files(paths) -> list[Path]:
    files = []
    for path in paths:
        target = PACKAGE_DIR / path
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


def _code(text: str) -> str:
    """``text`` as a Markdown code span that survives a table cell and backticks inside it."""
    ticks = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text.replace('|', '¦')}{pad}{ticks}"


def error_list(paths: tuple[str, ...]) -> str:
    out = []
    for m in messages(paths):
        where = f"`{m.path}`" + (f", `{m.function}`" if m.function else "")
        out.append(f"- {_code(m.text)}  \n  <small>{where}; exit status {m.status}</small>")
    if not out:
        log.warning(f"no error messages found under {', '.join(paths)}")
    return "\n".join(out) + "\n"


def _check_exit_statuses() -> None:
    """Warn when ``REPORTED`` no longer matches the errors ``cli.main`` reports with status 2."""
    from scorefield.cli import USER_ERRORS

    reported = {name for name, status in REPORTED.items() if status == 2} - {"ArgumentTypeError"}
    actual = {error.__name__ for error in USER_ERRORS}
    if reported != actual:
        log.warning(
            f"cli.USER_ERRORS is {sorted(actual)} but docs/hooks/reference.py assumes {sorted(reported)}"
        )


def warning_list(paths: tuple[str, ...] = ERROR_SOURCES) -> str:
    out = [f"- {_code(m.text)}  \n  <small>`{m.path}`</small>" for m in warning_messages(paths)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# the hook


GENERATORS = {
    "config-fields": lambda arg: config_fields(),
    "config-defaults": lambda arg: config_defaults(),
    "presets": lambda arg: presets(),
    "datasets": lambda arg: datasets(),
    "cli-help": lambda arg: cli_help(),
    "warnings": lambda arg: warning_list(),
}


def on_page_markdown(markdown, page, config, files):
    covered: list[str] = []

    def expand(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "errors":
            paths = tuple((arg or "").split(","))
            covered.extend(paths)
            return error_list(paths)
        if kind in GENERATORS:
            return GENERATORS[kind](arg)
        if kind in OTHER_HOOKS:
            return match.group(0)
        log.warning(f"{page.file.src_uri}: unknown generated section {kind!r}")
        return match.group(0)

    markdown = MARKER.sub(expand, markdown)
    if covered:
        _check_exit_statuses()
        listed = {f for f in _files(tuple(covered))}
        missing = [f.relative_to(PACKAGE_DIR).as_posix() for f in _files(ERROR_SOURCES) if f not in listed]
        missing = [f for f in missing if messages((f,))]
        if missing:
            log.warning(f"{page.file.src_uri} lists no errors of {', '.join(missing)}")
    return markdown
