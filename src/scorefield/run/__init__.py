"""Runs: a config file in, a run directory out, and a finished run read back.

One concern per module, dependencies pointing down the list:

- ``kinds``: what the kinds a config names are (``sde.kind``, ``objective.kind``); the one table.
- ``config``: the validated configuration (pydantic), TOML in and out, ``--set`` overrides.
- ``checkpoint``: checkpoints without pickles (safetensors + JSON sidecar), written atomically.
- ``build``: a config becomes a ``DiffusionModel`` (SDE, noise levels, network, score model) and
  its objective.
- ``distributed``: torchrun's process group, and how work is shared between processes.
- ``clusters``: k-means clusters as labels (``data.labels = clusters``): fitting, drawing, distances.
- ``train``: the run directory, its lock, its data, and the training loop around ``fit.py``.
- ``sampling``: the samplers a run dispatches to, on ``(sde, sample config, grid)``.
- ``finished``: ``load_run`` and ``Run``: sampling, inpainting, labels and log-densities of a trained
  run.

The names below are the ones a caller reads most; everything else, and ``train.train`` (whose name
is its module's), is reached through its module.
"""

from .checkpoint import CheckpointError
from .config import Config, ConfigError, load_config
from .finished import SAMPLERS, Run, load_run
from .train import RunError, TrainingError, TrainResult

__all__ = [
    "SAMPLERS",
    "CheckpointError",
    "Config",
    "ConfigError",
    "Run",
    "RunError",
    "TrainResult",
    "TrainingError",
    "load_config",
    "load_run",
]
