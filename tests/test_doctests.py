"""The examples in the docstrings of the package, run as doctests (``>>>`` lines and what they print).

Every module of ``src/scorefield`` whose source holds an example is collected, so a new example is run
without an edit here. Outputs are printed tensors at torch's default 4 decimals, which float rounding
differences across CPUs do not reach for these small, well-conditioned computations.
"""

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "scorefield").rglob("*.py")):
        if ">>> " in path.read_text():
            parts = path.relative_to(SRC).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_core_modules_carry_examples():
    for name in ("scorefield.sde", "scorefield.distributions", "scorefield.losses", "scorefield.likelihood"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = [
        t
        for t in finder.find(module, name, extraglobs={"torch": importlib.import_module("torch")})
        if t.examples
    ]
    assert tests, f"{name} mentions '>>> ' but holds no example doctest finds"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
    )
