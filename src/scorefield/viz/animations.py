"""Animations of samplers as GIFs: particles carried by Langevin dynamics, annealed Langevin and the
reverse SDE, drawn frame by frame with matplotlib into Pillow images (``write_gif``).

Each animation runs its sampler from the given start (on the start's device and in its dtype),
records the states through the sampler's callback, and writes ``n_frames`` evenly spaced ones. How
they are drawn is the same for every animation: the keywords of ``Drawing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

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
    _check_2d,
    _density_image,
    _frame,
    _label_plane,
    _numpy,
    _resolve_extent,
    _scatter,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Drawing",
    "annealed_langevin_animation",
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
    none); ``columns``: the names of the two axes; ``data``: points drawn in grey under the particles.
    """

    background: Density | None
    extent: Extent | None
    fps: float
    to_data: Callable[[torch.Tensor], torch.Tensor] | None
    columns: Sequence[str] | None
    data: ArrayLike | None
    device: Device
    dtype: torch.dtype


def write_gif(
    frames: Sequence[ArrayLike],
    path: str | Path,
    extent: Extent | None = None,
    background: Density | None = None,
    titles: Sequence[str] | None = None,
    fps: float = 12.0,
    size: float = 3.4,
    dpi: int = 80,
    columns: Sequence[str] | None = None,
    data: ArrayLike | None = None,
    *,
    device: Device = CPU,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A GIF of 2-D particles, one frame per ``[N, 2]`` array of ``frames`` (the score-functions tutorial's Langevin animation).

    Each frame is drawn with matplotlib (over ``background``'s density and the ``data`` points, in
    grey, if given) into a Pillow image, its axes named by ``columns``. Every frame carries a title
    (``titles`` or ``"frame i/n"``), which keeps consecutive frames distinct, so the file holds
    exactly ``len(frames)`` frames. The window defaults to the data's whole range, else the
    background's or the last frame's, each axis scaled to its own data. The background's density is
    evaluated on ``device`` in ``dtype``.
    """
    arrays = [_numpy(f) for f in frames]
    if not arrays:
        raise ValueError("write_gif needs at least one frame")
    for array in arrays:
        _check_2d("each frame", array)
    if titles is None:
        titles = [f"frame {i + 1}/{len(arrays)}" for i in range(len(arrays))]
    if len(titles) != len(arrays):
        raise ValueError(f"got {len(titles)} titles for {len(arrays)} frames")
    if data is not None:
        extent = _resolve_extent(extent, data)  # the data's whole range, as plot_samples frames it
    extent = _resolve_extent(extent, background, arrays[-1], tail=0.005, device=device)  # 99%: strays
    fig = Figure(figsize=(size, size), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if background is not None:
        _density_image(ax, background, extent, 80, device, dtype)
    if data is not None:
        _scatter(ax, _numpy(data), "data", DATA_COLOR, size=2.0, alpha=0.4)
    points = _scatter(ax, arrays[0], "particles", SAMPLE_COLOR, size=4.0, alpha=0.7)
    _frame(ax, extent)
    _label_plane(ax, columns)
    ax.tick_params(labelsize="x-small")
    title = ax.set_title("", fontsize="small")
    images = []
    for array, text in zip(arrays, titles, strict=True):
        points.set_offsets(array)
        title.set_text(text)
        canvas.draw()
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


class _Recorder:
    """Collects ``(label, x)`` states from a sampler's callback, as numpy copies in data units
    (``to_data`` maps the sampler's space to them; default: they are the same)."""

    def __init__(
        self,
        x0: torch.Tensor,
        label: str = "start",
        to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.to_data = to_data
        self.labels, self.states = [], []
        self.add(label, x0)
        _check_2d("x0", self.states[0])

    def add(self, label: str, x: torch.Tensor) -> None:
        self.labels.append(label)
        self.states.append(_numpy(x if self.to_data is None else self.to_data(x)))

    def write(self, path: str | Path, n_frames: int, **gif_kwargs) -> Path:
        """Write ``n_frames`` evenly spaced states (always the first and the last) as a GIF."""
        if n_frames < 2:
            raise ValueError(f"n_frames must be >= 2, got {n_frames}")
        keep = np.unique(np.linspace(0, len(self.states) - 1, n_frames).round().astype(int))
        return write_gif(
            [self.states[i] for i in keep], path, titles=[self.labels[i] for i in keep], **gif_kwargs
        )


def langevin_animation(
    score_fn: ScoreFn,
    x0: torch.Tensor,
    path: str | Path,
    step_size: float = 0.05,
    n_steps: int = 400,
    n_frames: int = 48,
    *,
    generator: torch.Generator | None = None,
    **drawing: Unpack[Drawing],
) -> Path:
    """The score-functions tutorial's "using Langevin dynamics to sample from a mixture of 2 Gaussians" as a GIF of particles.

    Runs ``scorefield.langevin.langevin`` from ``x0 [N, 2]`` and keeps ``n_frames`` evenly spaced
    states (fewer if there are fewer steps), drawn as ``drawing`` says (``Drawing``). Returns the
    GIF's path.
    """
    recorder = _Recorder(x0, to_data=drawing.pop("to_data", None))
    langevin(
        score_fn,
        x0,
        step_size,
        n_steps,
        generator=generator,
        callback=lambda k, x: recorder.add(f"Langevin step {k + 1}/{n_steps}", x),
    )
    return recorder.write(path, n_frames, **drawing)


def annealed_langevin_animation(
    score_fn: NoiseScoreFn,
    x0: torch.Tensor,
    path: str | Path,
    sigmas: torch.Tensor | Sequence[float],
    step_lr: float,
    n_steps_each: int,
    denoise: bool = True,
    n_frames: int = 48,
    *,
    generator: torch.Generator | None = None,
    **drawing: Unpack[Drawing],
) -> Path:
    """Annealed Langevin (Song & Ermon 2019, Alg. 1; the score-functions tutorial's "run Langevin for all noise levels") as a GIF.

    ``sigmas`` largest first; each frame's title names its noise level; drawn as ``drawing`` says
    (``Drawing``). Returns the GIF's path.
    """
    levels = torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()

    def label(k: int) -> str:
        if k >= len(levels) * n_steps_each:
            return "final denoising step"
        return f"σ = {levels[k // n_steps_each]:.3g}, step {k % n_steps_each + 1}/{n_steps_each}"

    recorder = _Recorder(x0, to_data=drawing.pop("to_data", None))
    annealed_langevin(
        score_fn,
        x0,
        sigmas,
        step_lr,
        n_steps_each,
        denoise=denoise,
        generator=generator,
        callback=lambda k, x: recorder.add(label(k), x),
    )
    return recorder.write(path, n_frames, **drawing)


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
    (how it is drawn) and ``scorefield.samplers.sample_pc``'s (e.g. ``snr``, ``eps``, ``denoise``).
    The last frame is the returned sample (after the final Tweedie denoising unless
    ``denoise=False``). Returns the GIF's path.
    """
    drawing = {key: options.pop(key) for key in Drawing.__optional_keys__ & options.keys()}
    recorder = _Recorder(x_T, label="t = 1 (prior)", to_data=drawing.pop("to_data", None))
    x = sample_pc(
        score_fn,
        sde,
        x_T,
        n_steps,
        predictor=predictor,
        corrector=corrector,
        generator=generator,
        callback=lambda info: recorder.add(f"t = {info['t']:.3f}", info["x"]),
        **options,
    )
    if options.get("denoise", True):
        recorder.add("denoised", x)
    return recorder.write(path, n_frames, **drawing)
