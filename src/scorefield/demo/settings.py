"""What the demo runs on: its budgets (``FULL``, ``QUICK``: steps, sample counts and grid sizes), its
fixed settings (the plotted windows, the noise level of denoising score matching, the smallest
time of the VP SDE, the resolution of the figures), and its random streams, one independent
generator per purpose from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils import derive_seed, make_generator

__all__ = [
    "DENOISING_TIMES",
    "DSM_SIGMA",
    "EXTENT",
    "FULL",
    "MOONS_EXTENT",
    "MOONS_NOISE",
    "PNG_DPI",
    "QUICK",
    "SHOWN_LEVELS",
    "VP_T_MIN",
    "Budget",
    "Streams",
]

EXTENT = (-9.0, 9.0, -9.0, 9.0)  # the window holding both modes of two_gaussians() with 4 std to spare
MOONS_EXTENT = (-1.8, 1.8, -1.2, 1.2)
DSM_SIGMA = 0.1  # "small" against the components' unit standard deviation
VP_T_MIN = 1e-5  # the smallest time, for training and likelihoods (docs/math.md#evaluating-at-a-small-time)
DENOISING_TIMES = (0.02, 0.1, 0.2, 0.4, 1.0)
SHOWN_LEVELS = 4  # noise levels drawn in the "adding noise" figure (the smallest, the largest, two between)
MOONS_NOISE = 0.05  # the standard deviation of the noise around the moons' arcs (datasets.moons' default)
PNG_DPI = 200  # pixels per inch of the PNG figures; the page shows them at 100 CSS pixels per inch


@dataclass(frozen=True)
class Budget:
    """How much work the demo does: steps, sample counts and grid sizes (``FULL``, ``QUICK``)."""

    n_train: int = 10_000  # training samples drawn once from each data distribution
    batch_size: int = 256
    hidden: int = 64  # MLP width; depth 2 for the unconditional nets, 3 for the conditional ones
    sm_steps: int = 1500  # training steps for each score-matching objective
    ncsn_steps: int = 3000
    vp_steps: int = 4000
    moons_steps: int = 6000
    n_eval: int = 4000  # points on which Fisher divergences are estimated
    n_samples: int = 1000  # samples per sampler (mode-weight standard error ~ 0.4/sqrt(n))
    langevin_steps: int = 500  # naive Langevin steps
    n_steps_each: int = 100  # annealed Langevin steps per level
    gif_particles: int = 300
    gif_steps: int = 300
    gif_frames: int = 40  # frames of each animation (annealed Langevin: shared out between the levels)
    pc_steps: int = 200  # predictor steps of the reverse-SDE samplers
    ode_steps: int = 50  # steps of the fixed-step ODE method
    n_trajectories: int = 150
    n_test: int = 1000  # test points for the log-likelihood
    n_solver_check: int = 200  # likelihood: test points re-integrated at a tighter tolerance
    density_grid: int = 50  # moons: log-likelihood on a grid of this many points a side
    kde_points: int = 2000  # moons: training points on which the KDE's bandwidth is cross-validated


FULL = Budget()
QUICK = Budget(
    n_train=4000,
    sm_steps=300,
    ncsn_steps=800,
    vp_steps=1000,
    moons_steps=1500,
    n_eval=2000,
    n_samples=500,
    langevin_steps=200,
    n_steps_each=30,
    gif_particles=150,
    gif_steps=150,
    gif_frames=12,
    pc_steps=60,
    ode_steps=20,
    n_trajectories=60,
    n_test=300,
    n_solver_check=50,
    density_grid=24,
    kde_points=1000,
)


@dataclass(frozen=True)
class Streams:
    """The demo's randomness: an independent generator for each purpose (a number), from ``seed``."""

    seed: int

    def generator(self, purpose: int) -> torch.Generator:
        """A fresh generator for ``purpose``: the same stream every time it is asked for."""
        return make_generator(derive_seed(self.seed, "demo", purpose))
