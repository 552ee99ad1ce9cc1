"""The sections of the demo's page, one module each, in the order of the page:

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

Each holds ``compute(...)``, which returns a ``Section`` of the section's numbers (a frozen
dataclass, its part of ``results.json``) and its figures, and ``write(page, numbers, ...)``, which
writes its prose, equations, tables and figures; ``ANCHOR``, ``TITLE`` and ``OPENING`` (the
tutorial's words that open it, or None) head it on the page. ``common`` holds what they share.
"""
