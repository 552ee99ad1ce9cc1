"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, Appendix D.2), and bits/dim.

Along the ODE ``dx/dt = f̃(x, t) = f(x, t) - ½ g(t)² s(x, t)`` the log-density obeys the
instantaneous change of variables (Chen et al. 2018), so
``log p_0(x_0) = log p_1(x_1) + ∫_0^1 ∇·f̃(x_t, t) dt`` (docs/math.md#likelihood). The state and the
accumulated divergence are integrated together from ``t_eval`` to 1, and ``p_1`` is replaced by the
SDE's prior. The divergence is exact (one vector-Jacobian product per dimension, batched) or
Hutchinson's estimate ``E_v[vᵀ (∇f̃) v]`` with Rademacher probes held fixed along the path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .ode import counted, ode_times, solve_ode
from .sde import SDE, ScoreFn
from .utils import Generator, rademacher_like, rand_like

__all__ = ["DIVERGENCES", "bits_per_dim", "dequantize", "divergence", "log_det_scaling", "log_likelihood"]

DIVERGENCES = ("exact", "hutchinson")
# rows (basis vectors x batch) per batched backward pass of the exact divergence: large enough to amortise
# the per-call overhead, small enough for the (rows, width) intermediates to stay in cache (bench_throughput)
EXACT_ROWS = 2048
VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_kind(kind: str) -> None:
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


def _draw_probes(x: torch.Tensor, n_probes: int, generator: Generator | None) -> torch.Tensor:
    """``n_probes`` Rademacher probes per example: ``[P, B, ...]`` (drawn ``[B, P, ...]``, so that a
    ``KeyedNoise`` gives each example its own probes whatever its batch)."""
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    return (
        rademacher_like(x.unsqueeze(1).expand(x.shape[0], n_probes, *x.shape[1:]), generator)
        .transpose(0, 1)
        .contiguous()
    )


def value_and_divergence(
    fn: VectorField, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x, t)`` and its divergence in ``x``: exactly (``probes=None``, shape ``[1, B]``) or one
    Hutchinson estimate ``vᵀ (∇fn) v`` per probe (``probes [P, B, ...]``, shape ``[P, B]``).

    Both use vector-Jacobian products batched over the cotangents (``is_grads_batched``, a vmap over
    the backward pass). The exact form uses the ``D`` basis vectors, each row ``e_iᵀ ∇fn`` giving the
    diagonal entry ``i``, in chunks of ``EXACT_ROWS // B`` vectors per backward pass (one pass for
    small ``D·B``); it assumes, as every score model does, that examples do not interact. Results are
    detached: no graph outlives the call.
    """
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        value = fn(x_in, t)
        if probes is None:
            d = x[0].numel()
            basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, 1, *x.shape[1:])
            chunk = max(1, EXACT_ROWS // x.shape[0])  # basis vectors per batched backward pass
            div = x.new_zeros(1, x.shape[0])
            for start in range(0, d, chunk):
                part = basis[start : start + chunk]
                (rows,) = torch.autograd.grad(
                    value,
                    x_in,
                    part.expand(-1, *x.shape),
                    is_grads_batched=True,
                    retain_graph=start + chunk < d,
                )  # (k, B, ...): Jacobian rows start .. start + k - 1
                div = div + rows.flatten(2)[..., start : start + chunk].diagonal(dim1=0, dim2=2).sum(-1)
        else:
            (vjps,) = torch.autograd.grad(value, x_in, probes, is_grads_batched=True)  # (P, B, ...)
            div = (vjps * probes).flatten(2).sum(-1)  # (P, B)
    return value.detach(), div.detach()


def divergence(
    fn: VectorField,
    x: torch.Tensor,
    t: torch.Tensor,
    kind: str = "exact",
    probes: torch.Tensor | None = None,
    n_probes: int = 1,
    generator: Generator | None = None,
) -> torch.Tensor:
    """Divergence ``∇_x · fn(x, t)`` per example, ``[B]``: exact, or Hutchinson (1989)'s ``E_v[vᵀ ∇fn v]``.

    For ``"hutchinson"`` the estimate is averaged over ``probes`` (``[P, B, ...]``) or, when none are
    given, over ``n_probes`` Rademacher probes drawn with ``generator``.
    """
    _check_kind(kind)
    if kind == "exact":
        return value_and_divergence(fn, x, t)[1][0]
    if probes is None:
        probes = _draw_probes(x, n_probes, generator)
    return value_and_divergence(fn, x, t, probes)[1].mean(0)


def log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    *,
    divergence: str = "exact",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eval: float = 1e-5,
    method: str = "dopri5",
    steps_or_grid: int | torch.Tensor | None = None,
    generator: Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Log-likelihood by the probability-flow ODE (Song et al. 2021, eq. 39): ``log p_{t_eval}(x)`` in nats, ``[N]``.

    Integrates ``(x_t, Δ_t)`` with ``dΔ/dt = ∇·f̃(x_t, t)`` from ``t = t_eval`` (``x``) to 1 and returns
    ``sde.prior_logp(x_1) + Δ_1``. The answer is the density at time ``t_eval``, which for small ``t_eval``
    is the data density (under VE, smoothed by ``sigma_min``; see ``VESDE``); it errs by how far the
    prior is from the true ``p_1`` (docs/math.md#likelihood). ``method`` is dopri5 (``rtol``/``atol``) or a fixed-step
    method on ``steps_or_grid``: a number of uniform steps, or a time grid decreasing from 1 to
    ``t_eval``, as the samplers take it. A fixed-step method gives each row a log-density that depends on that row
    alone; dopri5's steps adapt to the error of the whole batch, so a row's value moves (within the
    tolerance) with the rows solved beside it.

    ``info``: ``"nfe"`` (score evaluations), ``"prior_logp"`` and ``"delta_logp"`` (the two terms),
    ``"z"`` (``x_1``) and ``"stderr"``: zero for the exact divergence; for Hutchinson, the
    ``n_probes`` probe sets are integrated jointly along the one shared path (each gives an
    independent unbiased estimate of the same integral), ``logp`` is their mean and ``stderr`` their
    standard deviation over ``sqrt(n_probes)`` (NaN for a single probe, where it cannot be estimated).

    Examples:
        With the exact score of a Gaussian diffused by the VP SDE, the ODE returns its log-density
        up to the prior's error: ``N(0, I)`` stands in for ``p_1``, whose mean is the data's mean
        shrunk by ``m(1) = 0.0066``, which costs 0.005 nats here.

        >>> from scorefield.distributions import Gaussian
        >>> from scorefield.sde import VPSDE
        >>> sde = VPSDE()
        >>> data = Gaussian(torch.tensor([1.0, -1.0]).double(), torch.diag(torch.tensor([0.5, 2.0])).double())
        >>> def score(x, t):
        ...     return data.diffuse(sde, float(t[0])).score(x)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, -2.0]]).double()
        >>> logp, info = log_likelihood(score, sde, x)
        >>> logp, data.log_prob(x)
        (tensor([-2.0831, -3.0830], dtype=torch.float64), tensor([-2.0879, -3.0879], dtype=torch.float64))
    """
    _check_kind(divergence)
    if not 0 < t_eval < 1:
        raise ValueError(f"t_eval must lie in (0, 1), got {t_eval}")
    probes = None if divergence == "exact" else _draw_probes(x, n_probes, generator)
    score, nfe = counted(score_fn)

    def flow(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sde.reverse_drift(x, t, score(x, t), probability_flow=True)

    def dynamics(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        return value_and_divergence(flow, state[0], t, probes)

    times = ode_times(method, steps_or_grid, t_eval, x).flip(0)  # from t_eval up to 1
    n_estimates = 1 if probes is None else probes.shape[0]
    delta0 = x.new_zeros(n_estimates, x.shape[0])
    with torch.no_grad():
        try:
            xs, deltas = solve_ode(dynamics, (x.detach(), delta0), times, method, rtol, atol, t_min=t_eval)
        except AssertionError as err:  # torchdiffeq's way of saying that dopri5's step fell to nothing
            if "underflow in dt" not in str(err):
                raise
            raise ValueError(
                "the probability-flow ODE could not be solved: dopri5's step size underflowed, which means "
                "the score is not finite or changes too fast at these inputs (values far outside the data "
                "or beyond float32's range); check the inputs, or pass a fixed-step method with steps_or_grid"
            ) from None
    z, delta = xs[-1], deltas[-1]  # (B, ...), (P, B)
    prior = sde.prior_logp(z)
    per_estimate = prior + delta
    logp = per_estimate.mean(0)
    if probes is None:
        stderr = torch.zeros_like(logp)
    elif n_estimates == 1:
        stderr = torch.full_like(logp, math.nan)
    else:
        stderr = per_estimate.std(0) / math.sqrt(n_estimates)
    info = {"nfe": nfe[0], "stderr": stderr, "prior_logp": prior, "delta_logp": delta.mean(0), "z": z}
    return logp, info


def log_det_scaling(scale: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log |det ∂y/∂x|`` of the elementwise map ``y = (x - shift) / scale``: ``-Σ log|scale|`` over one
    example's dimensions (change of variables: ``log p_x(x) = log p_y(y) + log_det_scaling(scale, x)``).

    ``scale`` is a number or a tensor broadcastable to one example's shape ``x.shape[1:]``.
    """
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    return -torch.log(scale.abs()).expand(x.shape[1:]).sum()


def bits_per_dim(logp: torch.Tensor, x: torch.Tensor, bin_width: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Bits per dimension of quantised data (Theis et al. 2016; Papamakarios et al. 2017): ``[N]``.

    Data on a grid of bins of width ``bin_width``, measured in the space where ``logp`` is a density,
    are dequantised with uniform noise within a bin, so the probability of a bin is about
    ``p(x) · bin_width^d`` and ``bits/dim = -(logp + d log bin_width) / (d ln 2)``. For 8-bit images
    scaled to ``[0, 1]`` by ``(k + u) / 256``, ``bin_width = 1/256``; equivalently, convert ``logp``
    to pixel units with ``log_det_scaling`` and use ``bin_width = 1``.
    """
    d = x[0].numel()
    log_bins = d * torch.log(torch.as_tensor(bin_width, dtype=logp.dtype, device=logp.device))
    return -(logp + log_bins) / (d * math.log(2))


def dequantize(x: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
    """Uniform dequantization (Theis et al. 2016): integer values ``k`` become ``k + u``, ``u ~ U[0, 1)``.

    A density ``p`` of the result, in the integers' own units, puts about ``p(k + u)`` of its mass on
    the bin ``[k, k+1)^d`` (bins of width 1), and ``E_u[-log p(k + u)]`` bounds the code length of
    ``k`` from above: pass ``log p(dequantize(x))`` to ``bits_per_dim`` with ``bin_width = 1``.
    """
    return x + rand_like(x, generator)
