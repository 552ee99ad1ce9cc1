"""Figures of the tutorials' story: score fields, their errors and divergence, Langevin animations,
naive vs annealed sampling, denoising strips, ODE trajectories, sample grids and loss curves.
Figures only: the maths they draw lives in the library, the experiments in ``scorefield.demo``.

Every ``plot_*`` function builds and returns a ``matplotlib.figure.Figure`` (no pyplot, so no global
state and no screen: save it with ``fig.savefig(path)``); the ``*_animation`` functions write a GIF
with Pillow and return its path. Score functions are unconditional, ``score_fn(x [N, 2]) -> [N, 2]``:
fix the noise level or time of a conditional model first, e.g. ``at_level(model, t)``.
Where a figure takes ``true_dist``, it is an analytic distribution (``scorefield.distributions``)
with ``log_prob`` and ``score``; ``extent`` is ``(xmin, xmax, ymin, ymax)``. A figure that evaluates
a model or a distribution on a grid does so on ``device`` (default the CPU) in ``dtype`` (default
float32), both keywords: nothing is guessed from the model.

Each axis is scaled to its own data (an inferred window holds the data's whole range, or 99% of
samples, 0.5%-99.5% per coordinate): no figure forces an equal aspect, so columns in different
units (minutes beside hundreds of metres) both fill their panel. The one exception is ``plot_ode_trajectories`` without an
``extent``, drawn in the model's standardised plane, where both axes share one unit by design.
``columns`` names the coordinates on the axes (default ``x0, x1, ...``).

The modules: ``fields`` (score fields, their error and divergence, one-dimensional slices,
interfering sinks), ``smoothing`` (smoothing as a convolution, the denoising target, the smoothed
scores at several noise levels), ``diffusion`` (a 1-D density over time with sampling paths, the
chain of denoisers), ``samples`` (samples against data, naive vs annealed, denoising strips, ODE
trajectories), ``animations`` (the samplers as GIFs), ``images`` (image grids), ``training`` (loss
curves) and ``base`` (what they share).
"""

from .animations import (
    GIF_DPI,
    GIF_SIZE,
    Drawing,
    annealed_langevin_animation,
    frame_indices,
    langevin_animation,
    reverse_sde_animation,
    write_gif,
)
from .base import (
    DATA_COLOR,
    PANEL_SIZE,
    SAMPLE_COLOR,
    ArrayLike,
    Density,
    Extent,
    NoiseScoreFn,
    ScoreFn,
)
from .diffusion import exact_time_score, plot_denoising_chain, plot_diffusion_1d, plot_forward_paths
from .fields import (
    at_level,
    plot_gaussian_score_line,
    plot_interfering_sinks,
    plot_score_divergence,
    plot_score_error,
    plot_score_field,
    plot_score_slice,
)
from .images import BORDER_VALUE, GRID_MAX_SIDE, GRID_MIN_SIDE, grid_scale, image_grid, image_grid_size
from .samples import (
    plot_denoising_strip,
    plot_naive_vs_annealed,
    plot_ode_trajectories,
    plot_samples,
    tweedie_denoiser,
)
from .smoothing import plot_dsm_target, plot_smoothed_scores, plot_smoothing_1d
from .training import plot_loss_curve

__all__ = [
    "BORDER_VALUE",
    "DATA_COLOR",
    "GIF_DPI",
    "GIF_SIZE",
    "GRID_MAX_SIDE",
    "GRID_MIN_SIDE",
    "PANEL_SIZE",
    "SAMPLE_COLOR",
    "ArrayLike",
    "Density",
    "Drawing",
    "Extent",
    "NoiseScoreFn",
    "ScoreFn",
    "annealed_langevin_animation",
    "at_level",
    "exact_time_score",
    "frame_indices",
    "grid_scale",
    "image_grid",
    "image_grid_size",
    "langevin_animation",
    "plot_denoising_chain",
    "plot_denoising_strip",
    "plot_diffusion_1d",
    "plot_forward_paths",
    "plot_dsm_target",
    "plot_gaussian_score_line",
    "plot_interfering_sinks",
    "plot_loss_curve",
    "plot_naive_vs_annealed",
    "plot_ode_trajectories",
    "plot_samples",
    "plot_score_divergence",
    "plot_score_error",
    "plot_score_field",
    "plot_score_slice",
    "plot_smoothed_scores",
    "plot_smoothing_1d",
    "reverse_sde_animation",
    "tweedie_denoiser",
    "write_gif",
]
