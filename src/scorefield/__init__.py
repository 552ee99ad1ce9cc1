"""scorefield: score-based generative modelling in PyTorch.

Learn ``grad_x log p(x)`` from samples (score matching), sample with Langevin dynamics or a
reverse-time SDE, and evaluate exact log-likelihoods through the probability-flow ODE. The public
API is exactly what this module lists in ``__all__``; ``losses``, ``metrics``, ``nets`` and
``datasets`` are reached as submodules (``sf.losses.dsm``).
"""

import importlib
from typing import TYPE_CHECKING

from .conditional import sample_conditional
from .distributions import Gaussian, GaussianMixture, Parzen, two_gaussians
from .gaussian import data_moments, gaussian_flow
from .keyed import KeyedNoise
from .langevin import annealed_langevin, langevin, mala
from .likelihood import bits_per_dim, log_likelihood
from .multistep import optimize_grid, sample_fast, sample_multistep
from .noise import geometric_sigmas, time_grid
from .samplers import sample_ode, sample_pc
from .score import EnergyScore, NoiseConditionalScore, ScoreModel
from .sde import SDE, VESDE, VPSDE, SubVPSDE

# The application layer (runs, estimators: scikit-learn, pydantic, safetensors) and the submodules are
# imported on first use, so that ``import scorefield`` costs only the maths (PEP 562).
_LAZY = {
    "Run": "run.finished",
    "load_run": "run.finished",
    "ScoreDensityEstimator": "estimators.density",
    "ScoreAnomalyDetector": "estimators.density",
    "ScoreImputer": "estimators.imputer",
}
_SUBMODULES = ("datasets", "losses", "metrics", "nets")

if TYPE_CHECKING:
    from . import datasets, losses, metrics, nets
    from .estimators.density import ScoreAnomalyDetector, ScoreDensityEstimator
    from .estimators.imputer import ScoreImputer
    from .run.finished import Run, load_run


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "Gaussian",
    "GaussianMixture",
    "Parzen",
    "two_gaussians",
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "geometric_sigmas",
    "time_grid",
    "ScoreModel",
    "EnergyScore",
    "NoiseConditionalScore",
    "langevin",
    "mala",
    "annealed_langevin",
    "sample_pc",
    "sample_ode",
    "sample_fast",
    "sample_multistep",
    "sample_conditional",
    "optimize_grid",
    "data_moments",
    "gaussian_flow",
    "KeyedNoise",
    "log_likelihood",
    "bits_per_dim",
    "ScoreDensityEstimator",
    "ScoreAnomalyDetector",
    "ScoreImputer",
    "load_run",
    "Run",
    "datasets",
    "losses",
    "metrics",
    "nets",
]
