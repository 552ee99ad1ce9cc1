"""Compatibility: ``scorefield.checkpoint`` re-exported; the code lives in ``scorefield.run.checkpoint``.
New code imports from there."""

from .run.checkpoint import *  # noqa: F403
from .run.checkpoint import __all__  # noqa: F401
