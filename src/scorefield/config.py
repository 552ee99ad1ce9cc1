"""Compatibility: ``scorefield.config`` re-exported; the code lives in ``scorefield.run.config``
(and the kinds a config names in ``scorefield.run.kinds``). New code imports from there."""

from .run.config import *  # noqa: F403
from .run.config import __all__  # noqa: F401
