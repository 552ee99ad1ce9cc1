"""Animations of samplers as GIFs: particles carried by Langevin dynamics, annealed Langevin and the
reverse SDE, drawn frame by frame with matplotlib into Pillow images (``write_gif``).

Each animation runs its sampler from the given start (on the start's device and in its dtype),
records the states through the sampler's callback, and writes ``n_frames`` of them, spread over the
motion (``spacing``: evenly, or log-spaced where a sampler moves fast at first or at the end). How
they are drawn is the same for every animation: the keywords of ``Drawing``. A GIF has axes with
ticks, a title per frame, a legend, and is drawn at ``dpi`` for screens of high resolution (shown at
half its pixel width it stays sharp).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..files import atomic_output
from ..langevin import annealed_langevin, langevin
from ..samplers import sample_pc
from ..sde import SDE
from .base import (
    CPU,
    DATA_COLOR,
    SAMPLE_COLOR,
    ArrayLike,
    Density,
    Device,
    Extent,
    NoiseScoreFn,
    ScoreFn,
    check_2d,
    density_on_grid,
    label_plane,
    resolve_extent,
    scatter_points,
    set_window,
    to_numpy,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "GIF_DPI",
    "GIF_SIZE",
    "Drawing",
    "annealed_langevin_animation",
    "frame_indices",
    "langevin_animation",
    "reverse_sde_animation",
    "write_gif",
]


class Drawing(TypedDict, total=False):
    """How an animation is drawn, the same keywords for every one (all optional).

    ``background``: a density drawn under the particles (evaluated on ``device`` in ``dtype``);
    ``extent``: the window (default: the ``data``'s whole range, else the background's, else the
    last frame's); ``fps``: frames per second; ``to_data``: the map from the sampler's space to the
    data's units in which the particles are drawn (e.g. a scaler's ``inverse_transform``; default:
    none); ``columns``: the names of the two axes; ``data``: points drawn in grey under the particles;
    ``spacing``: which recorded states become frames (``"linear"``, ``"log"``: dense at the start,
    ``"log_end"``: dense at the end); ``background_at``: a density for each noise level or time
    (annealed Langevin: ``σ``; reverse SDE: ``t``) drawn under the particles in place of
    ``background``; ``window``: with ``background_at``, ``"level"`` frames each level by its own
    density's 99% region (at least ``extent``) and names the window in the title.
    """

    background: Density | None
    background_at: Callable[[float], Density] | None
    window: str
    spacing: str
    extent: Extent | None
    fps: float
    to_data: Callable[[torch.Tensor], torch.Tensor] | None
    columns: Sequence[str] | None
    data: ArrayLike | None
    device: Device
    dtype: torch.dtype


GIF_SIZE = 4.2  # inches: shown at 100 CSS pixels per inch, 420 pixels wide
GIF_DPI = 150  # pixels per inch: 1.5 device pixels per CSS pixel at that size


def frame_indices(n_states: int, n_frames: int, spacing: str = "linear") -> list[int]:
    """``n_frames`` distinct indices into ``n_states`` recorded states (all of them if there are
    fewer), always the first and the last: evenly spaced (``"linear"``), log-spaced so that the
    frames crowd at the start (``"log"``: for a chain that moves fast at first and then settles) or
    at the end (``"log_end"``: for a reverse diffusion, whose structure appears near ``t = 0``)."""
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    if spacing not in ("linear", "log", "log_end"):
        raise ValueError(f"spacing must be 'linear', 'log' or 'log_end', got {spacing!r}")
    if n_states <= n_frames:
        return list(range(n_states))
    if spacing == "linear":
        return np.unique(np.linspace(0, n_states - 1, n_frames).round().astype(int)).tolist()
    index = np.geomspace(1, n_states, n_frames).round().astype(int) - 1
    for j in range(1, n_frames):  # distinct: each at least one past the previous ...
        index[j] = max(index[j], index[j - 1] + 1)
    for j in range(n_frames - 1, -1, -1):  # ... and leaving room for those after it
        index[j] = min(index[j], n_states - n_frames + j)
    index[-1] = n_states - 1
    if spacing == "log_end":
        index = (n_states - 1 - index)[::-1]
    return index.tolist()


def write_gif(
    frames: Sequence[ArrayLike],
    path: str | Path,
    extent: Extent | None = None,
    background: Density | None = None,
    titles: Sequence[str] | None = None,
    fps: float = 12.0,
    size: float = GIF_SIZE,
    dpi: int = GIF_DPI,
    columns: Sequence[str] | None = None,
    data: ArrayLike | None = None,
    *,
    backgrounds: Sequence[Density | None] | None = None,
    extents: Sequence[Extent] | None = None,
    hold: float = 1.5,
    colors: int = 128,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A GIF of 2-D particles, one frame per ``[N, 2]`` array of ``frames`` (the score-functions tutorial's Langevin animation).

    Each frame is drawn with matplotlib (over ``background``'s density and the ``data`` points, in
    grey, if given) into a Pillow image, on axes with ticks, named by ``columns``, with a legend.
    Every frame carries a title (``titles`` or ``"frame i/n"``), which keeps consecutive frames
    distinct, so the file holds exactly ``len(frames)`` frames; the last is held for ``hold``
    seconds. Each frame gets its own palette of ``colors`` colours (a GIF holds at most 256). The window defaults to the data's whole range, else the background's or the last
    frame's, each axis scaled to its own data. ``backgrounds`` and ``extents`` (one per frame)
    change the density drawn and the window from frame to frame (e.g. the smoothed density of each
    noise level). A frame whose particles leave the window says how many in its title, so a fixed
    window never hides them silently. Densities are evaluated on ``device`` in ``dtype``.
    """
    arrays = [to_numpy(f) for f in frames]
    if not arrays:
        raise ValueError("write_gif needs at least one frame")
    for array in arrays:
        check_2d("each frame", array)
    n = len(arrays)
    if titles is None:
        titles = [f"frame {i + 1}/{n}" for i in range(n)]
    for name, values in (("titles", titles), ("backgrounds", backgrounds), ("extents", extents)):
        if values is not None and len(values) != n:
            raise ValueError(f"got {len(values)} {name} for {n} frames")
    if data is not None:
        extent = resolve_extent(extent, data)  # the data's whole range, as plot_samples frames it
    first_background = background if backgrounds is None else backgrounds[0]
    extent = resolve_extent(extent, first_background, arrays[-1], tail=0.005, device=device)  # 99%: strays
    backgrounds = [background] * n if backgrounds is None else list(backgrounds)
    extents = [extent] * n if extents is None else [tuple(float(v) for v in e) for e in extents]
    fig = Figure(figsize=(size, size), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = None
    if any(b is not None for b in backgrounds):
        image = ax.imshow(
            np.zeros((2, 2)), origin="lower", extent=extents[0], cmap="Blues", interpolation="bilinear",
            aspect="auto",
        )  # fmt: skip
    shown = (
        None if data is None else scatter_points(ax, to_numpy(data), "data", DATA_COLOR, size=3.0, alpha=0.5)
    )
    points = scatter_points(ax, arrays[0], "particles", SAMPLE_COLOR, size=6.0, alpha=0.8)
    label_plane(ax, columns)
    legend = ax.legend(loc="lower right", fontsize="small", markerscale=2.5, framealpha=0.8)
    title = ax.set_title(" ", fontsize="medium")
    # what changes from frame to frame is drawn over a saved still of the rest, in this order
    moving = [a for a in (image, shown, points, legend, title) if a is not None]
    for artist in moving:
        artist.set_animated(True)
    images, window, still, density_of = [], None, None, None
    for i in range(n):
        x0, x1, y0, y1 = extents[i]
        inside = (
            (arrays[i][:, 0] >= x0)
            & (arrays[i][:, 0] <= x1)
            & (arrays[i][:, 1] >= y0)
            & (arrays[i][:, 1] <= y1)
        )
        outside = int((~inside).sum())
        note = f" ({outside} of {len(inside)} outside the window)" if outside else ""
        title.set_text(titles[i] + note)  # before a full redraw too: the layout makes room for it
        if extents[i] != window:  # a new window: redraw the axes, ticks and labels once
            set_window(ax, extents[i])
            canvas.draw()
            still, window, density_of = canvas.copy_from_bbox(fig.bbox), extents[i], None
        canvas.restore_region(still)
        if image is not None:
            image.set_visible(backgrounds[i] is not None)
            if backgrounds[i] is not None and density_of is not backgrounds[i]:
                density = density_on_grid(backgrounds[i], extents[i], 100, device, dtype)[2]
                image.set_data(density)
                image.set_extent(extents[i])
                image.set_clim(0.0, float(density.max()) or 1.0)
                density_of = backgrounds[i]
        points.set_offsets(arrays[i])
        for artist in moving:
            if artist.get_visible():
                ax.draw_artist(artist)
        frame = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
        images.append(frame.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [round(1000 / fps)] * n
    durations[-1] = max(durations[-1], round(1000 * hold))
    with atomic_output(path) as tmp:  # a GIF whole or not at all
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


class _Recorder:
    """Collects ``(label, x)`` states from a sampler's callback, as numpy copies in data units
    (``to_data`` maps the sampler's space to them; default: they are the same), and the noise level
    or time of each (``level``, for ``background_at``)."""

    def __init__(
        self,
        x_init: torch.Tensor,
        label: str = "start",
        to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
        level: float | None = None,
    ):
        self.to_data = to_data
        self.labels, self.states, self.levels = [], [], []
        self.add(label, x_init, level)
        check_2d("x_init", self.states[0])

    def add(self, label: str, x: torch.Tensor, level: float | None = None) -> None:
        self.labels.append(label)
        self.states.append(to_numpy(x if self.to_data is None else self.to_data(x)))
        self.levels.append(level)

    def write(
        self,
        path: str | Path,
        n_frames: int,
        spacing: str = "linear",
        keep: Sequence[int] | None = None,
        background_at: Callable[[float], Density] | None = None,
        window: str = "fixed",
        **gif_kwargs,
    ) -> Path:
        """Write ``n_frames`` states (always the first and the last; ``frame_indices`` with
        ``spacing``, or the indices ``keep``) as a GIF; with ``background_at``, each over the density
        of its level, framed by that density (``window="level"``) or by one window throughout."""
        keep = frame_indices(len(self.states), n_frames, spacing) if keep is None else list(keep)
        titles = [self.labels[i] for i in keep]
        if background_at is not None:
            levels = [self.levels[i] for i in keep]
            densities = {level: background_at(level) for level in dict.fromkeys(levels)}
            gif_kwargs["backgrounds"] = [densities[level] for level in levels]
            if window == "level":
                extents = {
                    level: _wider(gif_kwargs.get("extent"), resolve_extent(None, density))
                    for level, density in densities.items()
                }
                gif_kwargs["extents"] = [extents[level] for level in levels]
                titles = [f"{title}\nwindow ±{_reach(extents[level]):.3g}" for title, level in zip(
                    titles, levels, strict=True)]  # fmt: skip
        return write_gif([self.states[i] for i in keep], path, titles=titles, **gif_kwargs)


def _wider(extent: Extent | None, other: Extent) -> Extent:
    """The smallest window holding ``extent`` (if any) and ``other``, symmetric about the origin."""
    reach = max(_reach(other), _reach(extent) if extent is not None else 0.0)
    return (-reach, reach, -reach, reach)


def _reach(extent: Extent) -> float:
    """The largest distance of ``extent``'s edges from the origin, rounded up to a tidy number."""
    reach = max(abs(v) for v in extent)
    tidy = 10 ** math.floor(math.log10(reach))
    return math.ceil(reach / tidy * 2) / 2 * tidy


def langevin_animation(
    score_fn: ScoreFn,
    x_init: torch.Tensor,
    path: str | Path,
    step_size: float = 0.05,
    n_steps: int = 400,
    n_frames: int = 48,
    *,
    generator: torch.Generator | None = None,
    **drawing: Unpack[Drawing],
) -> Path:
    """The score-functions tutorial's "using Langevin dynamics to sample from a mixture of 2 Gaussians" as a GIF of particles.

    Runs ``scorefield.langevin.langevin`` from ``x_init [N, 2]`` and keeps ``n_frames`` states (fewer if
    there are fewer steps; ``spacing``, default ``"log"``: a chain moves most in its first steps),
    drawn as ``drawing`` says (``Drawing``). Returns the GIF's path.
    """
    recorder = _Recorder(x_init, label="start (step 0)", to_data=drawing.pop("to_data", None))
    spacing = drawing.pop("spacing", "log")
    langevin(
        score_fn,
        x_init,
        n_steps,
        step_size=step_size,
        generator=generator,
        callback=lambda info: recorder.add(f"Langevin step {info['i'] + 1}/{n_steps}", info["x"]),
    )
    return recorder.write(path, n_frames, spacing, **drawing)


def annealed_langevin_animation(
    score_fn: NoiseScoreFn,
    x_init: torch.Tensor,
    path: str | Path,
    sigmas: torch.Tensor | Sequence[float],
    step_size: float,
    n_steps_each: int,
    denoise: bool = True,
    n_frames: int = 48,
    *,
    generator: torch.Generator | None = None,
    **drawing: Unpack[Drawing],
) -> Path:
    """Annealed Langevin (Song & Ermon 2019, Alg. 1; the score-functions tutorial's "run Langevin for all noise levels") as a GIF.

    ``sigmas`` largest first; each frame's title names its noise level and its step within the
    level. The frames are shared out between the levels, log-spaced within each (a level's chain
    moves most in its first steps), with the start and the end always shown; without ``spacing``
    given. With ``background_at`` each frame shows the smoothed density of its level
    (``background_at(σ)``, e.g. ``mixture.smooth``), framed by it with ``window="level"``. Drawn as
    ``drawing`` says (``Drawing``). Returns the GIF's path.
    """
    levels = torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()
    n_levels = len(levels)

    def level(k: int) -> float:
        return levels[min(k // n_steps_each, n_levels - 1)]

    def label(k: int) -> str:
        if k >= n_levels * n_steps_each:
            return f"final denoising step at σ = {levels[-1]:.3g}"
        i = k // n_steps_each
        return f"σ = {levels[i]:.3g}, step {k % n_steps_each + 1}/{n_steps_each} at this level"

    recorder = _Recorder(x_init, label=f"start, σ = {levels[0]:.3g}", to_data=drawing.pop("to_data", None),
                         level=levels[0])  # fmt: skip
    annealed_langevin(
        score_fn,
        x_init,
        sigmas,
        n_steps_each=n_steps_each,
        step_size=step_size,
        denoise=denoise,
        generator=generator,
        callback=lambda info: recorder.add(label(info["i"]), info["x"], level(info["i"])),
    )
    spacing = drawing.pop("spacing", None)
    keep = None
    if spacing is None and len(recorder.states) > n_frames:
        keep = _per_level_frames(n_frames, n_levels, n_steps_each, denoise)
    return recorder.write(path, n_frames, spacing or "linear", keep=keep, **drawing)


def _per_level_frames(n_frames: int, n_levels: int, n_steps_each: int, denoise: bool) -> list[int]:
    """The states of an annealed chain to draw: the start, the frames left shared out between the
    levels (log-spaced within each, ending on its last step) and the denoised end."""
    budget = max(n_frames - 1 - int(denoise), n_levels)
    keep = [0]
    for i in range(n_levels):
        count = min(budget // n_levels + (i < budget % n_levels), n_steps_each)
        within = [n_steps_each - 1] if count < 2 else frame_indices(n_steps_each, count, "log")
        keep += [1 + i * n_steps_each + k for k in within]  # state 1 + k is step k of the level
    if denoise:
        keep.append(1 + n_levels * n_steps_each)
    return sorted(set(keep))


def reverse_sde_animation(
    score_fn: NoiseScoreFn,
    sde: SDE,
    x_T: torch.Tensor,
    path: str | Path,
    n_steps: int = 200,
    predictor: str = "reverse_diffusion",
    corrector: str | None = "langevin",
    n_frames: int = 48,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Path:
    """Reverse-SDE sampling (Song et al. 2021, Alg. 1, predictor-corrector) from the prior ``x_T`` as a GIF.

    ``score_fn(x, t[B])``; each frame's title gives its time. ``options`` are ``Drawing``'s keywords
    (how it is drawn; ``spacing`` defaults to ``"log_end"``, frames crowding near ``t = 0`` where the
    structure appears; ``background_at(t)`` draws ``p_t``) and ``scorefield.samplers.sample_pc``'s
    (e.g. ``snr``, ``t_end``, ``denoise``). The last frame is the returned sample (after the final
    Tweedie denoising unless ``denoise=False``). Returns the GIF's path.
    """
    drawing = {key: options.pop(key) for key in Drawing.__optional_keys__ & options.keys()}
    spacing = drawing.pop("spacing", "log_end")
    recorder = _Recorder(x_T, label="t = 1 (prior)", to_data=drawing.pop("to_data", None), level=1.0)
    x, _ = sample_pc(
        score_fn,
        sde,
        x_T,
        n_steps,
        predictor=predictor,
        corrector=corrector,
        generator=generator,
        callback=lambda info: recorder.add(f"t = {info['t']:.3f}", info["x"], info["t"]),
        **options,
    )
    if options.get("denoise", True):
        recorder.add("denoised (Tweedie step)", x, recorder.levels[-1])
    return recorder.write(path, n_frames, spacing, **drawing)
