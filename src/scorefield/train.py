"""Compatibility: the names ``scorefield.train`` has always offered, re-exported; no code lives here.

The code lives in ``scorefield.run``: ``run.build`` (config -> objects, objectives, ``derive_seed``),
``run.distributed`` (torchrun), ``run.train`` (the run directory and the training loop) and
``run.finished`` (``load_run``, ``Run``, ``SAMPLERS``). New code imports from there.
"""

from .fit import EMA
from .run.build import OBJECTIVES, Setup, build, build_net, derive_seed, noise_levels
from .run.distributed import Dist, distributed
from .run.distributed import local_rows as _local_rows  # noqa: F401  (an old test's name)
from .run.finished import SAMPLERS, Run, load_run
from .run.train import (
    EpochOrder,
    RunError,
    TrainingError,
    TrainResult,
    augment,
    learning_rate,
    prepare_data,
    train,
)

__all__ = [
    "EMA",
    "OBJECTIVES",
    "SAMPLERS",
    "Dist",
    "EpochOrder",
    "Run",
    "RunError",
    "Setup",
    "TrainResult",
    "TrainingError",
    "augment",
    "build",
    "build_net",
    "derive_seed",
    "distributed",
    "learning_rate",
    "load_run",
    "noise_levels",
    "prepare_data",
    "train",
]
