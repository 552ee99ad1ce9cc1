"""The demo's old address: ``scorefield.report.run_demo`` is ``scorefield.demo.run_demo``, which
owns the demo (its sections, its page and its budgets)."""

from .demo import run_demo

__all__ = ["run_demo"]
