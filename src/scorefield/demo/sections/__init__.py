"""The demo's eight sections as computations: each takes what it needs as arguments (the mixture,
the training data, the budget, the random streams, the folder for its animations) and returns a
``Section``: its numbers (its part of ``results.json``) and its figures (drawn with
``scorefield.viz``, not yet saved). Nothing here writes HTML; ``page.py`` turns the results into
the page. The likelihood section evaluates the model that the diffusion section trained, which
``Diffusion`` carries.

1. ``score``: the exact score of the tutorials' mixture: its field, a slice, its divergence, and
   sinks that interfere;
2. ``score_matching``: one MLP trained with every objective, scored by the relative Fisher
   divergence to the exact score, and the basins of the learned field;
3. ``langevin``: Langevin dynamics with the exact score, naive against annealed;
4. ``noise``: smoothing as a convolution and the denoising target ``-z/σ``;
5. ``ncsn``: a noise-conditional score network, its error at several noise levels, sampled by
   annealed Langevin;
6. ``diffusion``: a VP SDE, a 1-D density over time with its paths, the chain of denoisers, every
   predictor-corrector combination and the ODE;
7. ``likelihood``: the ODE's exact log-likelihood against the mixture's, and where its error comes from;
8. ``moons``: the same diffusion on moons, against a kernel density estimate and a classifier.

``basics`` computes sections 1 to 4 (the score, score matching, Langevin dynamics, noise),
``denoisers`` sections 5 to 8 (NCSN, diffusion, likelihood, moons), and ``common`` holds what they
share.
"""

from __future__ import annotations

from .basics import SHOWN, interfering_mixture, langevin, noise_section, score, score_matching
from .common import Diffusion, Section
from .denoisers import diffusion, likelihood, moons, ncsn

__all__ = [
    "SHOWN",
    "Diffusion",
    "Section",
    "diffusion",
    "interfering_mixture",
    "langevin",
    "likelihood",
    "moons",
    "ncsn",
    "noise_section",
    "score",
    "score_matching",
]
