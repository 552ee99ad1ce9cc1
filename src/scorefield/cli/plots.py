"""``scorefield plot``, and the image grids that ``scorefield sample`` writes: figures of a trained run.

Every figure is in the data's units (tables: the columns' own units, named on the axes; images: pixel
values, black to white over ``image_range``). A figure that the run cannot have is refused before any
work (``check_plots``). The drawing itself is ``scorefield.viz``'s, imported when a figure is made.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ..datasets import load_data
from ..files import atomic_write
from ..run.finished import load_run
from ..run.kinds import SDE_KINDS, is_ladder
from .io import UsageError, check_writable, say, write_figure

__all__ = ["PLOTS", "cmd_plot", "grid_scale", "write_image_grid"]

PLOTS = ("samples", "loss", "field", "denoise", "langevin")
GRID_MAX = 256  # samples shown in the PNG grid that `sample` writes for image runs
PLANE_ONLY = {  # the figures that exist only in the plane of 2-column data, and what they draw there
    "field": "draws the score as arrows in a plane",
    "langevin": "animates the sampler's particles in a plane",
}
DENOISE_TIMES = (0.05, 0.2, 0.5, 0.8)  # the times of `plot --what denoise`


def image_range(run) -> tuple[float, float]:
    """The pixel values that an image run's figures draw black and white: the ends of the model's
    ``[-1, 1]`` in the data's units (``0 .. levels`` for data of ``levels`` grey levels)."""
    ends = run.scaler.inverse_transform(
        torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1).expand(2, *run.data_shape)
    )
    return float(ends[0].min()), float(ends[1].max())


def _grid_columns(n: int) -> int:
    """Images per row of the square PNG grid of ``n`` samples."""
    return max(1, math.ceil(math.sqrt(n)))


def grid_scale(run, n: int, requested: int | None) -> int | None:
    """How many times `sample` enlarges each image of its PNG grid of ``n`` samples: ``--grid-scale``,
    else enough for ``viz.GRID_MIN_SIDE`` pixels per side (8 for 8x8 digits); None for a table run.
    Checked before any sampling: the option on a table run, or a grid too large to write, is refused."""
    from .. import viz

    if len(run.data_shape) != 3:
        if requested is not None:
            raise UsageError(
                f"--grid-scale sizes the PNG grid of an image run; the run's data have shape {run.data_shape}"
            )
        return None
    _, height, width = run.data_shape
    scale = requested or viz.grid_scale(height, width)
    shown = min(n, GRID_MAX)
    try:
        viz.image_grid_size(shown, height, width, nrow=_grid_columns(shown), scale=scale)
    except ValueError as error:
        advice = "; pass a smaller --grid-scale" if requested else "; sample fewer with --n"
        raise UsageError(f"--grid-scale {scale}: {error}{advice}") from None
    return scale


def write_image_grid(path: Path, run, x: torch.Tensor, scale: int | None = None) -> None:
    """The first ``GRID_MAX`` samples tiled in a square PNG, atomically: pixels in the data's units from
    black to white over ``image_range``, each image enlarged ``scale`` times by nearest neighbour
    (default: ``grid_scale``'s), a thin grey border between them."""
    from ..viz import image_grid

    shown = x[:GRID_MAX]
    grid = image_grid(
        shown,
        nrow=_grid_columns(shown.shape[0]),
        value_range=image_range(run),
        scale=scale or grid_scale(run, shown.shape[0], None),
    )
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def check_plots(run, what: list[str]) -> None:
    """Refuse, before any work, a figure that the run cannot have: one line saying what the figure
    needs, what the run has, and what can be drawn instead."""
    shape = run.data_shape
    for name in what:
        if name in PLANE_ONLY and shape != (2,):
            if len(shape) == 1:
                shown = run.columns if shape[0] <= 8 else (*run.columns[:6], "...", run.columns[-1])
                has = f"the run has {shape[0]} ({', '.join(shown)})"
                instead = "--what samples draws every pair" if shape[0] > 2 else "--what samples draws it"
            else:
                has = f"the run's data are images of shape {shape}"
                instead = "--what samples and denoise draw them"
            raise UsageError(f"--what {name} {PLANE_ONLY[name]} and needs 2 columns; {has}; {instead}")
        if name == "loss" and not (run.run_dir / "metrics.jsonl").is_file():
            raise UsageError(f"{run.run_dir / 'metrics.jsonl'} does not exist; the run has logged no metrics")
        if name == "denoise" and run.diffusion.noise_conditional:
            sdes = ", ".join(kind for kind in SDE_KINDS if not is_ladder(kind))
            raise UsageError(
                f"--what denoise needs a model trained with an SDE ({sdes}); this run is {run.config.sde.kind}"
            )


def _some_rows(data: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` rows of ``data`` drawn without replacement by ``seed`` (all of them if there are no more):
    the first rows of a sorted table would be a biased picture of it."""
    if data.shape[0] <= n:
        return data
    return data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def cmd_plot(args) -> int:
    """Figures of a run, all in the data's units (tables: the columns' own units, named on the axes;
    images: pixel values, black to white over ``image_range``): samples against data (a pair plot of
    every column beyond 2), the loss curve, the score field and the sampler's animation (2 columns
    only), and the denoising strip."""
    from .. import viz

    check_writable(args.out, folder=True)
    run = load_run(args.run, device=args.device)
    check_plots(run, args.what)
    data = _some_rows(load_data(run.config.data), args.n, args.seed)
    value_range = image_range(run) if len(run.data_shape) == 3 else None
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for what in args.what:
        path = args.out / (f"{what}.gif" if what == "langevin" else f"{what}.png")
        if what == "langevin":
            write_figure(path, lambda tmp: _animate_sampling(viz, run, data, tmp, args))
        else:
            if what == "loss":
                figure = viz.plot_loss_curve(run.run_dir / "metrics.jsonl")
            elif what == "samples":
                samples = run.sample(args.n, args.sampler, args.steps, args.seed)
                figure = viz.plot_samples(samples, data, value_range=value_range, columns=run.columns)
            elif what == "field":
                figure = _plot_field(viz, run, data)
            else:
                figure = _plot_denoise(viz, run, data, value_range, args.seed)
            write_figure(path, lambda tmp, figure=figure: figure.savefig(tmp, dpi=110, bbox_inches="tight"))
        written.append(str(path))
    say("wrote " + ", ".join(written))
    return 0


def _in_data(run):
    """The map from the model's space (a batch on the run's device) back to the data's units."""
    return lambda z: run.scaler.inverse_transform(z.cpu())


def _plot_field(viz, run, data: torch.Tensor):
    """The learned score at the smallest time over 2-column data, in the data's units. Each axis is
    scaled to its column, so the arrow at ``x`` is ``std² ∇log p(x)`` per column (``std · s_z``, the
    score of the model's standardised plane): it points where the standardised score points, on
    axes of any units, where the raw ``∇log p`` would lie flat along the column of smaller spread."""
    diffusion, scaler, t_end = run.diffusion, run.scaler, run.config.sample.t_end
    std = scaler.std.to(run.device)

    def field(x: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), t_end, device=run.device)
        z = scaler.transform(x.cpu()).to(run.device)
        # a run conditioned on clusters: at t = t_end the mixture's score is its nearest cluster's
        labels = () if run.clusters is None else (run.nearest_cluster(z),)
        return (diffusion.score_t(z, t, *labels) * std).cpu()

    figure = viz.plot_score_field(field, data=data, columns=run.columns)
    figure.axes[0].set_title(
        f"learned score at t = {t_end:g}\narrows: std² ∇log p (std of each column)", fontsize="medium"
    )
    return figure


def _plot_denoise(viz, run, data: torch.Tensor, value_range: tuple[float, float] | None, seed: int):
    """Clean data, noised to ``DENOISE_TIMES`` and denoised in one Tweedie step by the model (in its
    standardised space), all drawn in the data's units; for a run conditioned on clusters, by the model
    of each clean row's nearest cluster."""
    z = run.scaler.transform(data).to(run.device)
    denoise = run.diffusion.model.denoise
    if run.clusters is not None:
        labels = run.nearest_cluster(z)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (the strip shows the first rows)
            return run.diffusion.model.denoise(x, t, labels[: x.shape[0]])

    return viz.plot_denoising_strip(
        z,
        DENOISE_TIMES,
        denoise,
        sde=run.diffusion.sde,
        value_range=value_range,
        generator=torch.Generator().manual_seed(seed),
        to_data=_in_data(run),
        columns=run.columns,
    )


def _animate_sampling(viz, run, data: torch.Tensor, path: Path, args) -> None:
    """A GIF of ``args.n`` particles on 2-column data, in the data's units over the ``data``, carried
    from the prior by the run's sampler: annealed Langevin over its noise levels, else the reverse SDE."""
    diffusion, s = run.diffusion, run.config.sample
    generator = torch.Generator().manual_seed(args.seed)
    z = torch.randn((args.n, 2), generator=generator).to(run.device)
    steps = args.steps or s.steps
    drawing = {"generator": generator, "to_data": _in_data(run), "columns": run.columns, "data": data}
    # the scores of `sample` without a label: a run conditioned on clusters draws each particle's cluster
    scores = run.score_functions(
        None if run.clusters is None else run.draw_clusters(args.seed, torch.arange(args.n)), 0
    )
    if diffusion.sigmas is not None:
        sigmas = diffusion.sigmas
        viz.annealed_langevin_animation(
            scores.at_sigma, float(sigmas[0]) * z, path, sigmas, s.step_size, steps, **drawing
        )
    else:
        viz.reverse_sde_animation(
            scores.at_time,
            diffusion.sde,
            diffusion.sde.prior_std * z,
            path,
            n_steps=steps,
            t_end=s.t_end,
            **drawing,
        )
