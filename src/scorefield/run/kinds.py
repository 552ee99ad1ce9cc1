"""What the kinds a config names are: the one table of ``sde.kind`` and ``objective.kind``.

``sde.kind`` is one of the continuous-time SDEs of ``sde.KINDS`` (``ve``, ``vp``, ``subvp``), trained
with ``sde_dsm``; or ``ncsn``, the discrete ladder of noise levels (Song & Ermon 2019), which exists
only in configs: it is read as the VE SDE spanning the ladder, so the samplers and likelihoods of SDEs
apply to it, and it trains with the objectives of a noise-conditional score ``s(x, sigma)``. A kind
whose SDE ``explodes`` (``ve``, ``ncsn``) has a ``sigma_max`` chosen for the data and a ladder of
noise levels (annealed Langevin). The schema (``config``) and the builder (``build``) both read this
table; nothing else spells out a kind.
"""

from __future__ import annotations

from typing import NamedTuple

from ..sde import KINDS, SDE, VESDE

__all__ = [
    "LADDER_OBJECTIVES",
    "OBJECTIVE_KINDS",
    "SDE_KINDS",
    "SDE_OBJECTIVE",
    "SINGLE_LEVEL",
    "SDEKind",
    "has_levels",
    "is_ladder",
    "spell",
]


class SDEKind(NamedTuple):
    """What a config's ``sde.kind`` builds: an SDE of class ``sde``; ``ladder``: a discrete ladder of
    noise levels read as that SDE, with a noise-conditional score ``model(x, sigma)``."""

    sde: type[SDE]
    ladder: bool = False


SDE_KINDS: dict[str, SDEKind] = {
    **{name: SDEKind(cls) for name, cls in KINDS.items()},
    "ncsn": SDEKind(VESDE, ladder=True),
}

SDE_OBJECTIVE = "sde_dsm"  # the objective of the continuous-time SDEs
SINGLE_LEVEL = ("dsm", "ssm", "ism")  # noise-conditional objectives trained at one noise level
LADDER_OBJECTIVES = ("ncsn", *SINGLE_LEVEL)  # the objectives of a ladder's score s(x, sigma)
OBJECTIVE_KINDS = (SDE_OBJECTIVE, *LADDER_OBJECTIVES)


def is_ladder(kind: str) -> bool:
    """Whether ``sde.kind`` is a discrete noise ladder (``ncsn``) rather than a continuous SDE."""
    return SDE_KINDS[kind].ladder


def has_levels(kind: str) -> bool:
    """Whether ``sde.kind`` explodes: it has a ``sigma_max`` for the data and a ladder of noise levels."""
    return SDE_KINDS[kind].sde.explodes


def spell(names, last: str = "or") -> str:
    """``a, b or c``: names in a sentence."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"
