"""The ODE integrator shared by the samplers and the likelihood: fixed-step Runge-Kutta methods on a
given time grid, dopri5 through torchdiffeq, the grids themselves, and counting score evaluations.

``solve_ode(func, y0, times, method, ...)`` integrates ``dy/dt = func(t[B], y)`` for a tensor or a tuple
of tensors (the likelihood integrates the state and its log-density change together) and returns the
state at every time of ``times``, which may run forwards or backwards. The fixed-step methods live in
the plain dict ``TABLEAUX`` and step exactly on the grid (no per-step wrappers or interpolation);
dopri5 adapts its steps (Dormand & Prince 1980, via torchdiffeq) and reports at the grid's times.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchdiffeq import odeint

from . import noise

__all__ = [
    "ADAPTIVE_METHODS",
    "ODE_METHODS",
    "TABLEAUX",
    "check_method",
    "counted",
    "ode_times",
    "solve_ode",
]


# our name -> torchdiffeq's name; "heun" is Heun's (explicit trapezoidal) 2-stage method, torchdiffeq's heun2
ODE_METHODS: dict[str, str] = {"euler": "euler", "heun": "heun2", "rk4": "rk4", "dopri5": "dopri5"}
ADAPTIVE_METHODS = ("dopri5",)


def check_method(method: str) -> None:
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {', '.join(ODE_METHODS)}")


# Butcher tableaux (c, a, b) of the fixed-step methods, integrated here without torchdiffeq's per-step
# wrappers and interpolation; "rk4" is Kutta's 3/8 rule, the variant torchdiffeq's "rk4" uses.
TABLEAUX: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "euler": ((0.0,), ((),), (1.0,)),
    "heun": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "rk4": (
        (0.0, 1 / 3, 2 / 3, 1.0),
        ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        (1 / 8, 3 / 8, 3 / 8, 1 / 8),
    ),
}


def _combine(y, h: float, weights: tuple[float, ...], ks: list):
    """``y + h Σ_j w_j k_j`` for a tensor or a tuple of tensors (the state of a joint ODE)."""
    if isinstance(y, tuple):
        return tuple(_combine(part, h, weights, [k[i] for k in ks]) for i, part in enumerate(y))
    for w, k in zip(weights, ks, strict=True):
        if w:
            y = y + (h * w) * k
    return y


def _fixed_grid(func: Callable, y0, times: torch.Tensor, method: str, batch: int):
    """An explicit Runge-Kutta method stepping exactly on ``times``: the state at each time, stacked."""
    c, a, b = TABLEAUX[method]
    grid = times.tolist()
    y, states = y0, [y0]
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        h = t_next - t
        ks: list = []
        for c_i, a_i in zip(c, a, strict=True):
            t_i = torch.full((batch,), t + c_i * h, dtype=times.dtype, device=times.device)
            ks.append(func(t_i, _combine(y, h, a_i, ks)))
        y = _combine(y, h, b, ks)
        states.append(y)
    if isinstance(y0, tuple):
        return tuple(torch.stack(parts) for parts in zip(*states, strict=True))
    return torch.stack(states)


def solve_ode(
    func: Callable,
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    times: torch.Tensor,
    method: str,
    rtol: float,
    atol: float,
    t_min: float,
    t_max: float = 1.0,
):
    """Integrate ``dy/dt = func(t[B], y)`` over ``times``, returning the state at each time.

    Fixed-step methods step exactly on ``times`` (``TABLEAUX``); dopri5 (torchdiffeq) adapts its
    steps and reports at ``times``. Each dopri5 evaluation's time is clamped to ``[t_min, t_max]``,
    since adaptive solvers may evaluate a little past the end (VP quantities are NaN for ``t < 0``;
    docs/math.md#sampling). ``t`` is passed per example.
    """
    check_method(method)
    batch = (y0[0] if isinstance(y0, tuple) else y0).shape[0]
    if method in TABLEAUX:
        return _fixed_grid(func, y0, times, method, batch)

    def rhs(t: torch.Tensor, y):
        return func(t.clamp(t_min, t_max).expand(batch), y)

    return odeint(rhs, y0, times, rtol=rtol, atol=atol, method=ODE_METHODS[method])


def ode_times(
    method: str, steps_or_grid: int | torch.Tensor | None, t_end: float, x: torch.Tensor
) -> torch.Tensor:
    """Decreasing times for a probability-flow ODE from 1 to ``t_end``: the given grid, ``[1, t_end]`` for
    an adaptive method without a number of steps, else that many uniform steps (``noise.as_grid``)."""
    check_method(method)
    if steps_or_grid is None:
        if method not in ADAPTIVE_METHODS:
            raise ValueError(f"the fixed-step method {method!r} needs a number of steps or a time grid")
        return torch.tensor([1.0, t_end], dtype=x.dtype, device=x.device)
    return noise.as_grid(steps_or_grid, x, t_end=t_end)


def counted(score_fn: Callable[..., torch.Tensor]) -> tuple[Callable[..., torch.Tensor], list[int]]:
    """``score_fn`` wrapped to count its calls: ``(wrapped, counter)`` with the count in ``counter[0]``."""
    counter = [0]

    def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return score_fn(x, t)

    return wrapped, counter
