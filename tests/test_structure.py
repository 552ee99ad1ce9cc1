"""The package's shape: a light root import, no import cycles, no private name used outside its module.

The imports are read from the source with ``ast`` (every ``import`` statement, in functions too, except
those under ``if TYPE_CHECKING:``), so a cycle hidden inside a function body counts as one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scorefield

SRC = Path(scorefield.__file__).resolve().parent
PACKAGE = "scorefield"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(module: str, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """``(module imported, names taken from it, line)`` for each import statement of module ``name``."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if under_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((resolve(name, node.level, node.module), [a.name for a in node.names], node.lineno))
    return found


def edges(name: str) -> set[str]:
    """The package's modules that importing ``name`` imports directly."""
    out = set()
    for target, names, _ in imports(name):
        if not target.startswith(PACKAGE):
            continue
        submodules = {f"{target}.{n}" for n in names} & MODULES.keys()
        out |= submodules or ({target} if target in MODULES else set())
        if submodules and len(submodules) < len(names) and target in MODULES:
            out.add(target)  # names that are not submodules come from the package itself
    out.discard(name)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_the_modules():
    graph = {name: edges(name) for name in MODULES}
    # a package's __init__ that imports its own submodules is not a cycle with them: Python imports the
    # package first; only cycles among the submodules (or through another package) are reported
    for name in graph:
        graph[name] = {t for t in graph[name] if not (is_package(t) and name.startswith(t + "."))}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def private_uses(name: str) -> list[str]:
    """``_private`` names that module ``name`` takes from another module of the package: imported by name,
    or read as an attribute of an imported module."""
    uses = []
    aliases = {}
    for target, names, line in imports(name):
        if not target.startswith(PACKAGE):
            continue
        for imported in names:
            if imported.startswith("_") and not imported.startswith("__"):
                uses.append(f"{name}:{line} imports {target}.{imported}")
        for imported in names:
            if f"{target}.{imported}" in MODULES:
                aliases[imported] = f"{target}.{imported}"
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.alias) and node.asname and node.name in aliases:
            aliases[node.asname] = aliases[node.name]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            uses.append(f"{name}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return uses


def test_no_private_name_is_used_outside_its_module():
    uses = [use for name in MODULES for use in private_uses(name)]
    assert not uses, "private names used across modules:\n" + "\n".join(uses)


def test_no_compatibility_module_at_the_root():
    # every module at the package's root defines something of its own (a re-export-only module would
    # be an old address kept alive)
    for path in SRC.glob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        tree = ast.parse(path.read_text())
        defines = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))]
        assert defines, f"{path.name} only re-exports"


def test_import_scorefield_loads_only_the_maths():
    code = (
        "import sys, scorefield\n"
        "heavy = ['sklearn', 'pydantic', 'safetensors', 'matplotlib', 'scorefield.run', 'scorefield.cli']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


@pytest.mark.parametrize("name", scorefield.__all__)
def test_every_public_name_resolves(name):
    assert getattr(scorefield, name) is not None
    assert name in dir(scorefield)


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'sample_everything'"):
        scorefield.sample_everything  # noqa: B018
