"""scikit-learn estimators backed by a score-based diffusion model: density, anomaly and imputation.

``ScoreDensityEstimator`` (``density``) fits a base density and a network's correction of it and
reports log-densities through the probability-flow ODE; ``ScoreAnomalyDetector`` flags rows of low
density; ``ScoreImputer`` (``imputer``) fills missing cells by conditional sampling. The recipe's
numbers and steps are in ``recipe``, the base densities in ``bases``, the checks of the input rows,
the random streams and the saved files in ``io``.
"""

from .density import ScoreAnomalyDetector, ScoreDensityEstimator
from .imputer import ScoreImputer, draw_interval, min_draws

__all__ = ["ScoreAnomalyDetector", "ScoreDensityEstimator", "ScoreImputer", "draw_interval", "min_draws"]
