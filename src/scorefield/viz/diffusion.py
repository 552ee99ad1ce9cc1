"""Figures of diffusion as stacked denoisers (the diffusion tutorial's "Diffusion"): a one-dimensional
density over time with reverse-SDE and probability-flow paths drawn on it, and the chain of
denoisers in the plane (the data noised to several times, one denoising jump from each, and the
reverse chain of many small steps passing through the same times).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..distributions import GaussianMixture
from ..samplers import sample_ode, sample_pc
from ..sde import SDE
from ..utils import append_dims
from .base import DATA_COLOR, SAMPLE_COLOR, NoiseScoreFn, count_outside, limits_of, scatter_points, to_numpy

__all__ = ["exact_time_score", "plot_denoising_chain", "plot_diffusion_1d", "plot_forward_paths"]


def exact_time_score(dist: GaussianMixture, sde: SDE) -> NoiseScoreFn:
    """The exact score ``∇log p_t`` of ``dist`` diffused by ``sde`` (``dist.diffuse``), as ``score(x, t)``
    for the samplers (``t`` a number or one time per example, all equal)."""

    def score(x: torch.Tensor, t) -> torch.Tensor:
        time = float(torch.as_tensor(t).reshape(-1)[0])
        return dist.diffuse(sde, time).score(x)

    return score


def plot_diffusion_1d(
    dist: GaussianMixture,
    sde: SDE,
    n_paths: int = 16,
    n_steps: int = 250,
    t_end: float = 1e-3,
    generator: torch.Generator | None = None,
    n_grid: int = 240,
    n_times: int = 200,
) -> Figure:
    """A one-dimensional density over time, ``p_t(x)`` for ``t`` from ``t_end`` to 1, with sampling paths on it.

    ``dist`` is a 1-D Gaussian mixture, whose every ``p_t`` is exact (``dist.diffuse``). The image is
    ``p_t`` scaled at each time to its maximum (so that both the sharp data density at small ``t`` and
    the flat prior at ``t = 1`` show), on a linear time axis. Left: ``n_paths`` reverse-SDE paths (``sample_pc``'s reverse
    diffusion predictor, no corrector, ``n_steps`` steps, the exact score) from prior draws at
    ``t = 1``; right: the probability-flow ODE's paths (rk4 on the same grid) from the same draws.
    Both sets end distributed as the data; the SDE's paths are rough, the ODE's smooth and
    deterministic.
    """
    dist = dist.to(torch.float64)
    score = exact_time_score(dist, sde)
    x_T = sde.prior_sample((n_paths, 1), generator=generator, dtype=torch.float64)
    states, stamps = [x_T[:, 0].numpy()], [1.0]

    def keep(info: dict) -> None:
        states.append(info["x"][:, 0].numpy())
        stamps.append(info["t"])

    sample_pc(
        score,
        sde,
        x_T,
        n_steps,
        corrector=None,
        denoise=False,
        t_end=t_end,
        generator=generator,
        callback=keep,
    )
    sde_paths = np.stack(states, axis=1)  # (paths, times)
    _, info = sample_ode(score, sde, x_T, n_steps, method="rk4", t_end=t_end, return_trajectory=True)
    ode_paths = to_numpy(info["trajectory"][:, :, 0]).T
    ode_times = to_numpy(info["times"].reshape(-1, 1))[:, 0]
    reach = max(3.5, float(np.abs(sde_paths).max()), float(np.abs(ode_paths).max()))
    xs = np.linspace(-reach, reach, n_grid)
    ts = np.linspace(t_end, 1.0, n_times)
    column = torch.as_tensor(xs, dtype=torch.float64)[:, None]
    density = np.stack([dist.diffuse(sde, float(t)).log_prob(column).exp().numpy() for t in ts], axis=1)
    density /= density.max(axis=0, keepdims=True)
    fig = Figure(figsize=(7.4, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    titles = ("reverse SDE: rough paths", "probability-flow ODE: smooth paths")
    for ax, paths, times, title in zip(axes, (sde_paths, ode_paths), (np.array(stamps), ode_times), titles,
                                       strict=True):  # fmt: skip
        image = ax.pcolormesh(ts, xs, density, cmap="Blues", shading="gouraud", rasterized=True)
        for path in paths:
            ax.plot(times, path, color=SAMPLE_COLOR, linewidth=0.8, alpha=0.8)
        ax.scatter(np.full(len(paths), times[0]), paths[:, 0], s=10, c="k", marker="x", linewidths=0.8,
                   label="prior draws (t = 1)", zorder=3)  # fmt: skip
        ax.scatter(np.full(len(paths), times[-1]), paths[:, -1], s=10, c=SAMPLE_COLOR, zorder=3,
                   label="samples (t ≈ 0)")  # fmt: skip
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(-reach, reach)
        ax.set_xlabel("time t")
        ax.set_title(title, fontsize="medium")
    axes[0].set_ylabel("x")
    axes[0].legend(fontsize="x-small", loc="lower right", framealpha=0.9)
    fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label=r"$p_t(x)$ / its maximum at that t")
    fig.suptitle("sampling runs from t = 1 (right) to t ≈ 0 (left)", fontsize="medium")
    return fig


def plot_forward_paths(
    x_0: torch.Tensor,
    sdes: dict[str, SDE],
    n_steps: int = 400,
    generator: torch.Generator | None = None,
) -> Figure:
    """Paths of forward SDEs (Song et al. 2021, eq. 5) from the same 1-D points ``x_0 [N]``, one panel each.

    Each path is Euler-Maruyama on ``n_steps`` uniform steps of ``dx = f(x, t) dt + g(t) dW`` from
    ``t = 0`` to 1 (the same Brownian increments in every panel). Under each, the exact band of the
    perturbation kernel ``m(t) x_0 ± 2 std(t)`` (``sde.marginal``) of the first and last points: a VE
    SDE keeps ``m = 1`` and lets the noise explode, a VP SDE shrinks ``x`` by ``m(t)`` while it adds
    noise, so that ``m² + std² = 1`` and every path ends in ``N(0, 1)``.
    """
    x_0 = x_0.to(torch.float64).flatten()
    ts = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    dt = 1.0 / n_steps
    noise = torch.randn(n_steps, len(x_0), generator=generator, dtype=torch.float64) * dt**0.5
    fig = Figure(figsize=(3.7 * len(sdes), 3.4), layout="constrained")
    axes = fig.subplots(1, len(sdes))
    for ax, (name, sde) in zip(np.atleast_1d(axes), sdes.items(), strict=True):
        x, path = x_0.clone(), [x_0.clone()]
        for i in range(n_steps):
            t = ts[i]
            x = x + sde.drift(x, t) * dt + sde.diffusion(t) * noise[i]
            path.append(x.clone())
        paths = torch.stack(path).numpy()  # (times, points)
        scale, std = (v.numpy() for v in sde.marginal(ts))
        for start in (float(x_0.min()), float(x_0.max())):
            ax.fill_between(ts.numpy(), scale * start - 2 * std, scale * start + 2 * std, color=DATA_COLOR,
                            alpha=0.12, linewidth=0)  # fmt: skip
        ax.plot(ts.numpy(), paths, color=SAMPLE_COLOR, linewidth=0.7, alpha=0.8)
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("time t")
        ax.set_title(name, fontsize="medium")
    np.atleast_1d(axes)[0].set_ylabel("x")
    return fig


def plot_denoising_chain(
    x_0: torch.Tensor,
    times: Sequence[float],
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: SDE,
    score_fn: NoiseScoreFn,
    x_T: torch.Tensor,
    n_steps: int = 200,
    generator: torch.Generator | None = None,
    columns: Sequence[str] | None = None,
    size: float = 2.2,
) -> Figure:
    """The diffusion tutorial's "stacked denoisers", as a chain: one row per time of ``times`` (increasing noise downwards).

    Columns, all on one shared window (so the noise's growth shows; points outside are counted in
    the titles):

    1. the data ``x_0`` noised to time ``t``: ``x_t = m(t) x_0 + std(t) z``;
    2. one denoising jump from there, ``denoise_fn(x_t, t) ≈ E[x_0 | x_t]`` (Tweedie's posterior
       mean): close to the data at small ``t``, the average of everything ``x_t`` could have come from
       at large ``t`` (between the modes, then the data's mean);
    3. the reverse chain: ``x_T`` (prior draws) carried by ``sample_pc`` (``score_fn``, ``n_steps``
       predictor-corrector steps) down to each time: many small denoising steps, each undoing a
       little noise, which stay on the data where one big jump cannot.

    The clean data are drawn in grey and the data's mean as a black cross in every panel.
    """
    times = [float(t) for t in times]
    requested = sorted(set(times))
    chain: dict[float, np.ndarray] = {}
    grid_times = [1.0]
    states = [to_numpy(x_T)]

    def keep(info: dict) -> None:
        grid_times.append(info["t"])
        states.append(to_numpy(info["x"]))

    sample_pc(score_fn, sde, x_T, n_steps, generator=generator, callback=keep)
    for t in requested:
        chain[t] = states[int(np.argmin(np.abs(np.array(grid_times) - t)))]
    rows = []
    for t in times:
        batch = torch.full((x_0.shape[0],), t, dtype=x_0.dtype, device=x_0.device)
        scale, std = (
            torch.as_tensor(v, dtype=x_0.dtype) * torch.ones_like(batch) for v in sde.marginal(batch)
        )
        z = torch.randn(x_0.shape, generator=generator, dtype=x_0.dtype)
        noisy = append_dims(scale, 2) * x_0 + append_dims(std, 2) * z
        with torch.no_grad():
            jumped = denoise_fn(noisy, batch)
        rows.append((t, float(scale[0]), float(std[0]), to_numpy(noisy), to_numpy(jumped), chain[t]))
    clean = to_numpy(x_0)
    every = np.concatenate([clean] + [a for row in rows for a in row[3:]])
    limits = limits_of(every, tail=0.002)
    half = float(np.abs(limits).max())
    limits = np.array([[-half, half], [-half, half]])
    mean = clean.mean(0)
    fig = Figure(figsize=(3 * size + 0.5, len(rows) * (size + 0.25) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False, sharex=True, sharey=True)
    heads = ("noised: $x_t = m(t)\\,x_0 + \\mathrm{std}(t)\\,z$", "one jump: $E[x_0 \\mid x_t]$",
             "reverse chain at t")  # fmt: skip
    for i, (t, m, std, noisy, jumped, state) in enumerate(rows):
        for j, (values, color, label) in enumerate(
            ((noisy, "C0", "noised"), (jumped, SAMPLE_COLOR, "one jump"), (state, "C2", "chain"))
        ):
            ax = axes[i, j]
            scatter_points(ax, clean, "clean data", DATA_COLOR, size=2.0, alpha=0.35)
            scatter_points(ax, values, label, color, size=2.5, alpha=0.7)
            ax.scatter(*mean, s=60, c="k", marker="+", linewidths=1.5, label="data mean", zorder=3)
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
            ax.set_aspect("equal")
            outside = count_outside(values, limits)
            note = f", {outside} outside" if outside else ""
            ax.set_title((heads[j] + "\n" if i == 0 else "") + f"t = {t:g}{note}", fontsize="small")
        axes[i, 0].set_ylabel(
            f"m = {m:.2f}, std = {std:.2f}\n{(columns or ('x0', 'x1'))[1]}", fontsize="small"
        )
    for j in range(3):
        axes[-1, j].set_xlabel((columns or ("x0", "x1"))[0])
    handles = [
        Line2D([], [], marker="o", linestyle="", color=DATA_COLOR, markersize=4, label="clean data"),
        Line2D(
            [], [], marker="+", linestyle="", color="k", markersize=9, markeredgewidth=1.5, label="data mean"
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    return fig
