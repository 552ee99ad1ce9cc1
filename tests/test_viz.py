import json
import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.quiver import Quiver
from matplotlib.text import Text
from PIL import Image

from scorefield import viz
from scorefield.distributions import Gaussian, GaussianMixture, Parzen, two_gaussians
from scorefield.metrics import mode_weights
from scorefield.samplers import tweedie
from scorefield.sde import VESDE, VPSDE
from scorefield.utils import make_generator
from scorefield.viz import (
    annealed_langevin_animation,
    at_level,
    grid_scale,
    image_grid,
    image_grid_size,
    langevin_animation,
    plot_denoising_strip,
    plot_gaussian_score_line,
    plot_loss_curve,
    plot_naive_vs_annealed,
    plot_ode_trajectories,
    plot_samples,
    plot_score_divergence,
    plot_score_error,
    plot_score_field,
    reverse_sde_animation,
    tweedie_denoiser,
    write_gif,
)
from scorefield.viz.base import hdr_levels
from scorefield.viz.training import _smooth

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)


def _of_type(fig: Figure, kind) -> list:
    return [a for ax in fig.axes for a in (*ax.collections, *ax.images) if isinstance(a, kind)]


def _labelled(ax, label: str) -> PathCollection:
    (found,) = [c for c in ax.collections if c.get_label() == label]
    return found


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def _gif_frames(path) -> int:
    with Image.open(path) as image:
        return image.n_frames


def _smoothed_score(p):
    """The exact noise-conditional score of an analytic ``p``: the score of ``p * N(0, σ²I)``."""
    return lambda x, sigma: p.smooth(float(sigma[0])).score(x)


def _gaussian_score(points: np.ndarray) -> np.ndarray:
    """``-Σ^{-1}(x - μ)`` written out independently of the library."""
    return -np.linalg.solve(COV.numpy(), (points - MEAN.numpy()).T).T


# --- score fields -------------------------------------------------------------------------------
def test_score_field_draws_the_exact_score_true_beside_learned():
    p = Gaussian(MEAN, COV)
    extent, grid = (-3.0, 5.0, -4.0, 3.0), 9
    fig = plot_score_field(p, lambda x: 0.5 * p.score(x), extent=extent, grid=grid)
    assert len(fig.axes) == 2
    quivers = _of_type(fig, Quiver)
    assert len(quivers) == 2 and all(q.N == grid * grid for q in quivers)
    true, learned = quivers
    np.testing.assert_allclose(np.stack([true.U, true.V], 1), _gaussian_score(true.XY), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.stack([learned.U, learned.V], 1), 0.5 * _gaussian_score(learned.XY), rtol=1e-5, atol=1e-6
    )
    assert true.scale == learned.scale  # one arrow scale, so the panels compare by eye
    # the density underneath peaks at the mean
    image = _of_type(fig, AxesImage)[0]
    density = image.get_array()
    iy, ix = np.unravel_index(np.argmax(density), density.shape)
    xs, ys = np.linspace(*extent[:2], density.shape[1]), np.linspace(*extent[2:], density.shape[0])
    assert abs(xs[ix] - 1.0) < 0.1 and abs(ys[iy] + 0.5) < 0.1


def test_score_field_of_a_bare_score_function_normalised_with_data():
    data = torch.randn(50, 2, generator=make_generator(0))
    fig = plot_score_field(lambda x: -x, extent=(-2, 2, -2, 2), grid=7, data=data, normalize=True)
    assert len(fig.axes) == 1 and not _of_type(fig, AxesImage)
    assert fig.axes[0].get_title() == "score"  # a bare score is not called the true one
    (q,) = _of_type(fig, Quiver)
    cell = 4 / 6  # 7 arrows across a window 4 wide and 4 high
    drawn = np.hypot(q.U / cell, q.V / cell) / q.scale  # arrow lengths in grid cells
    np.testing.assert_allclose(drawn[np.hypot(*q.XY.T) > 0], 0.8, rtol=1e-6)
    assert _labelled(fig.axes[0], "data").get_offsets().shape == (50, 2)
    with pytest.raises(ValueError, match="extent"):
        plot_score_field(lambda x: -x)


def faithful(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Old Faithful-like data: eruptions ~ 1.6-5.1 minutes, waiting ~ 40-100 minutes."""
    g = np.random.default_rng(seed)
    eruptions = np.where(g.random(n) < 0.35, g.normal(2.0, 0.25, n), g.normal(4.3, 0.4, n))
    return torch.tensor(np.stack([eruptions, 33 + 10 * eruptions + g.normal(0, 5, n)], 1))


def assert_covers(lo_hi: tuple[float, float], values: np.ndarray, slack: float = 1.5) -> None:
    """The axis range holds the values' 1%-99% span, and is at most ``slack`` times its full span
    wider (so in the values' own units, neither standardised nor padded to another axis' width)."""
    lo, hi = sorted(lo_hi)
    q1, q99 = np.quantile(values, [0.01, 0.99])
    assert lo <= q1 and q99 <= hi, (lo_hi, (q1, q99))
    assert hi - lo <= slack * (values.max() - values.min()), (lo_hi, (values.min(), values.max()))


def test_score_field_of_data_scales_each_axis_to_its_column_and_its_arrows_to_the_cells():
    data = faithful()
    mean, std = data.mean(0), data.std(0)
    names = ("eruptions", "waiting")
    fig = plot_score_field(lambda x: -(x - mean) / std, grid=9, data=data, columns=names)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == names
    assert ax.get_aspect() == "auto"
    assert_covers(ax.get_xlim(), data[:, 0].numpy())
    assert_covers(ax.get_ylim(), data[:, 1].numpy())
    (q,) = _of_type(fig, Quiver)
    cell = np.array([np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim())]) / 8
    drawn = np.hypot(q.U / cell[0], q.V / cell[1]) / q.scale  # in cells of each axis' own size
    assert drawn.max() == pytest.approx(0.9, rel=1e-6)
    # an arrow points where the field points in the data's coordinates
    np.testing.assert_allclose(np.stack([q.U, q.V], 1), -(q.XY - mean.numpy()) / std.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="3 column names for 2"):
        plot_score_field(lambda x: -x, data=data, columns=("a", "b", "c"))


class _Conditional(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * t[:, None]


def test_at_level_fixes_a_conditional_score_drawn_in_the_dtype_asked_for():
    model = _Conditional().double()  # a float32 grid would fail on its float64 weights
    score = at_level(model, 0.5)
    x = torch.randn(4, 2, dtype=torch.float64)
    np.testing.assert_allclose(score(x).detach().numpy(), 0.5 * model.linear(x).detach().numpy(), rtol=1e-12)
    with pytest.raises(RuntimeError):  # nothing is guessed from the model: the grid is float32 by default
        plot_score_field(score, extent=(-1, 1, -1, 1), grid=3)
    fig = plot_score_field(score, extent=(-1, 1, -1, 1), grid=3, dtype=torch.float64)
    (q,) = _of_type(fig, Quiver)
    expected = 0.5 * model.linear(torch.as_tensor(q.XY)).detach().numpy()
    np.testing.assert_allclose(np.stack([q.U, q.V], 1), expected, rtol=1e-12)


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_figures_evaluate_on_the_device_and_in_the_dtype_asked_for(device, tmp_path):
    p = Gaussian(MEAN.to(device), COV.to(device))
    seen = set()

    class Recorded:  # p, noting where and in what precision it is evaluated, and where it is sampled
        def log_prob(self, x):
            seen.add((x.device.type, x.dtype))
            return p.log_prob(x)

        def score(self, x):
            seen.add((x.device.type, x.dtype))
            return p.score(x)

        def sample(self, n, generator=None):
            seen.add(("sampled", generator.device.type))
            return p.sample(n, generator=generator)

    where = {"device": device, "dtype": torch.float64}
    dist = Recorded()
    plot_score_field(dist, learned_score=dist.score, grid=4, density_grid=5, **where)  # window from samples
    plot_score_error(dist, dist.score, extent=(-3, 5, -4, 3), grid=4, **where)
    plot_score_divergence(dist, extent=(-3, 5, -4, 3), grid=4, arrows=2, **where)
    write_gif([np.zeros((3, 2))], tmp_path / "a.gif", extent=(-3, 5, -4, 3), background=dist, **where)
    assert seen == {(device, torch.float64), ("sampled", device)}
    seen.clear()
    plot_score_field(dist, extent=(-3, 5, -4, 3), grid=4, density_grid=5)
    assert seen == {("cpu", torch.float32)}  # by default: the CPU, float32, whatever the model


def test_score_error_is_the_norm_of_the_difference_and_its_p_weighted_mean():
    p = Gaussian(MEAN, COV)
    offset = torch.tensor([0.3, -0.4], dtype=torch.float64)  # error exactly 0.5 everywhere
    fig = plot_score_error(p, lambda x: p.score(x) + offset, extent=(-4, 6, -4, 3), grid=20)
    assert len(fig.axes) == 3  # error map, its colour bar, error vs density
    (image,) = _of_type(fig, AxesImage)
    np.testing.assert_allclose(image.get_array(), 0.5, rtol=1e-5)  # a bare function runs in float32
    assert "Eₚ‖error‖² = 0.25" in fig._suptitle.get_text()
    assert len(fig.axes[0].collections) >= 1  # the density contours
    assert _labelled(fig.axes[1], "grid points").get_offsets().shape == (400, 2)


def test_score_error_title_is_the_fisher_divergence_by_quadrature():
    # learned score 0: E_p ||grad log p||^2 = E ||S^-1 (x - mu)||^2 = tr S^-1 (6 standard deviations each way)
    p = Gaussian(MEAN, COV)
    fig = plot_score_error(p, torch.zeros_like, extent=(-7.5, 9.5, -4.7, 3.7), grid=80)
    weighted = float(fig._suptitle.get_text().split("=")[1].split()[0])
    assert weighted == pytest.approx(float(torch.linalg.inv(COV).trace()), rel=0.01)


def test_highest_density_levels_of_a_standard_gaussian():
    # the region {p > c} of N(0, I_2) holds mass m when c = (1 - m) / (2 pi)
    xs = np.linspace(-6, 6, 601)
    r2 = xs[:, None] ** 2 + xs[None, :] ** 2
    levels = hdr_levels(np.exp(-r2 / 2) / (2 * math.pi), masses=(0.9, 0.5))
    np.testing.assert_allclose(levels, [0.1 / (2 * math.pi), 0.5 / (2 * math.pi)], rtol=0.01)


def test_gaussian_score_line_is_minus_x_minus_mu_over_sigma_squared():
    fig = plot_gaussian_score_line(mean=1.5, std=0.5, n=101)
    assert len(fig.axes) == 2  # score and density share the x axis
    (score_line,) = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("score")]
    (density_line,) = fig.axes[1].lines
    x = score_line.get_xdata()
    np.testing.assert_allclose(score_line.get_ydata(), -(x - 1.5) / 0.25, rtol=1e-12)
    pdf = np.exp(-((x - 1.5) ** 2) / (2 * 0.25)) / math.sqrt(2 * math.pi * 0.25)
    np.testing.assert_allclose(density_line.get_ydata(), pdf, rtol=1e-10)
    assert x.min() == pytest.approx(-0.5) and x.max() == pytest.approx(3.5)


def test_divergence_of_a_gaussian_score_is_minus_the_trace_of_the_precision():
    p = Gaussian(MEAN, COV)
    fig = plot_score_divergence(p, extent=(-3, 5, -4, 3), grid=12, arrows=5, dtype=torch.float64)
    assert len(fig.axes) == 2  # the map and its colour bar
    (image,) = _of_type(fig, AxesImage)
    expected = -float(torch.linalg.inv(COV).trace())
    np.testing.assert_allclose(image.get_array(), expected, rtol=1e-10)
    assert _of_type(fig, Quiver)[0].N == 25


def test_divergence_shows_the_data_as_sinks_and_sources_between_them():
    # Parzen score: div s = -d/sigma^2 + tr Cov_r(x_i)/sigma^4 (the responsibilities' spread of the
    # data). Points D = 2 apart, sigma = 0.5: at a point r = 1/(1 + e^8) of the other one, so
    # div = -8 + 64 r (1 - r) (a sink); half-way between, r = 1/2 and div = -8 + 16 = +8 (a source).
    data = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    fig = plot_score_divergence(
        Parzen(data, 0.5), extent=(-2, 2, -2, 2), grid=21, data=data, dtype=torch.float64
    )
    div = _of_type(fig, AxesImage)[0].get_array()  # grid step 0.2: (-1, 0) is column 5, row 10
    r = 1 / (1 + math.exp(8))
    assert div[10, 5] == pytest.approx(-8 + 64 * r * (1 - r), rel=1e-9)
    assert div[10, 15] == pytest.approx(-8 + 64 * r * (1 - r), rel=1e-9)
    assert div[10, 10] == pytest.approx(8.0, rel=1e-9)
    assert div.min() >= -8 - 1e-9  # the spread term is never negative
    assert _labelled(fig.axes[0], "data").get_offsets().shape == (2, 2)


# --- animations ---------------------------------------------------------------------------------
def test_write_gif_keeps_every_frame_even_identical_ones(tmp_path):
    frame = np.zeros((10, 2))
    path = write_gif([frame, frame, frame + 1], tmp_path / "a.gif", extent=(-2, 2, -2, 2))
    assert _gif_frames(path) == 3
    with Image.open(path) as image:
        assert image.size == (630, 630)  # 4.2 inches at 150 dpi: sharp when shown 420 pixels wide
    with pytest.raises(ValueError, match="titles"):
        write_gif([frame], tmp_path / "b.gif", titles=["a", "b"])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        write_gif([np.zeros((4, 3))], tmp_path / "c.gif")


def test_write_gif_counts_the_particles_outside_a_fixed_window(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.animations, "FigureCanvasAgg", _CanvasSpy)
    _CanvasSpy.figures = []
    inside, strays = np.zeros((3, 2)), np.array([[0.0, 0.0], [20.0, 0.0], [0.0, -9.5]])
    write_gif([strays, inside], tmp_path / "a.gif", extent=(-9, 9, -9, 9), titles=["first", "last"])
    (fig,) = _CanvasSpy.figures
    assert fig.axes[0].get_xlim() == (-9, 9)  # the window stays where it was asked to be
    assert fig.axes[0].title.get_text() == "last"  # every particle of the last frame is inside
    _CanvasSpy.figures = []
    write_gif([inside, strays], tmp_path / "b.gif", extent=(-9, 9, -9, 9), titles=["first", "last"])
    assert _CanvasSpy.figures[0].axes[0].title.get_text() == "last (2 of 3 outside the window)"


class _CanvasSpy(FigureCanvasAgg):
    """Agg canvas that keeps the figures it draws (the animations' figures are not returned)."""

    figures: list[Figure] = []

    def __init__(self, figure):
        super().__init__(figure)
        self.figures.append(figure)


def test_animations_draw_in_data_units_on_named_axes(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.animations, "FigureCanvasAgg", _CanvasSpy)
    _CanvasSpy.figures = []
    mean, std = torch.tensor([3.5, 70.0], dtype=torch.float64), torch.tensor([1.1, 13.0], dtype=torch.float64)
    z0 = torch.randn(200, 2, generator=make_generator(0), dtype=torch.float64)
    names = ("eruptions", "waiting")
    langevin_animation(
        lambda z: -z, z0, tmp_path / "l.gif", step_size=0.1, n_steps=20, n_frames=4,
        generator=make_generator(1), to_data=lambda z: mean + std * z, columns=names,
    )  # fmt: skip
    (fig,) = _CanvasSpy.figures
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == names
    last = _labelled(ax, "particles").get_offsets()  # the last frame drawn: samples of N(mean, std^2)
    assert (np.abs(last.mean(0) - mean.numpy()) < 0.3 * std.numpy()).all()
    assert_covers(ax.get_xlim(), last[:, 0])
    assert_covers(ax.get_ylim(), last[:, 1])


def test_langevin_animation_frame_counts(tmp_path):
    p = Gaussian(MEAN, COV)
    x_init = torch.randn(64, 2, generator=make_generator(0), dtype=torch.float64)
    path = langevin_animation(
        p.score,
        x_init,
        tmp_path / "l.gif",
        step_size=0.1,
        n_steps=30,
        n_frames=12,
        background=p,
        generator=make_generator(1),
    )
    assert _gif_frames(path) == 12
    short = langevin_animation(
        p.score, x_init, tmp_path / "s.gif", n_steps=4, n_frames=12, extent=(-4, 4, -4, 4)
    )
    assert _gif_frames(short) == 5  # the start and 4 steps: no more frames than states


def test_annealed_and_reverse_sde_animations(tmp_path):
    mixture = two_gaussians(dtype=torch.float64)
    x_init = 8 * torch.rand(64, 2, generator=make_generator(0), dtype=torch.float64) - 4
    path = annealed_langevin_animation(
        _smoothed_score(mixture),
        x_init,
        tmp_path / "a.gif",
        sigmas=[10.0, 3.0, 1.0],
        step_size=0.05,
        n_steps_each=5,
        n_frames=10,
        generator=make_generator(1),
    )
    assert _gif_frames(path) == 10
    sde = VPSDE()

    def score(x, t):
        return mixture.diffuse(sde, float(t[0])).score(x)

    x_T = sde.prior_sample((64, 2), generator=make_generator(2), dtype=torch.float64)
    path = reverse_sde_animation(
        score,
        sde,
        x_T,
        tmp_path / "r.gif",
        n_steps=20,
        n_frames=8,
        background=mixture,
        generator=make_generator(3),
    )
    assert _gif_frames(path) == 8


# --- naive vs annealed --------------------------------------------------------------------------
def test_naive_vs_annealed_states_each_panels_mode_weights_against_the_truth():
    mixture = two_gaussians(dtype=torch.float64)
    g = make_generator(0)
    naive = two_gaussians(weights=(0.5, 0.5), dtype=torch.float64).sample(600, generator=g)
    annealed = mixture.sample(600, generator=g)
    naive_w, annealed_w = mode_weights(naive, mixture), mode_weights(annealed, mixture)
    fig = plot_naive_vs_annealed(mixture, naive, annealed)
    assert len(fig.axes) == 2
    text = _texts(fig)
    assert text.count("true weights 0.80 / 0.20") == 2
    for w in (naive_w, annealed_w):
        assert f"mode weights {float(w[0]):.2f} / {float(w[1]):.2f}" in text
    assert all(_labelled(ax, "samples").get_offsets().shape == (600, 2) for ax in fig.axes)


# --- denoising, trajectories, samples, loss -----------------------------------------------------
def test_denoising_strip_with_sigmas_shows_the_exact_posterior_mean():
    # data N(0, I): E[x | x + sigma z] = x_noisy / (1 + sigma^2)
    p = Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    x_0 = p.sample(200, generator=make_generator(0))
    levels = [0.1, 0.5, 2.0]
    fig = plot_denoising_strip(x_0, levels, tweedie_denoiser(_smoothed_score(p)), generator=make_generator(1))
    assert len(fig.axes) == 2 * len(levels)
    for j, sigma in enumerate(levels):
        noisy = _labelled(fig.axes[j], "noisy").get_offsets()
        denoised = _labelled(fig.axes[len(levels) + j], "denoised").get_offsets()
        assert noisy.shape == denoised.shape == (200, 2)
        np.testing.assert_allclose(denoised, noisy / (1 + sigma**2), rtol=1e-10)
        assert np.std(noisy - x_0.numpy()) == pytest.approx(sigma, rel=0.1)


def test_denoising_strip_with_an_sde_and_with_images():
    sde = VPSDE()
    p = Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    x_0 = p.sample(100, generator=make_generator(0))

    def denoise(x, t):
        return tweedie(lambda y, s: p.diffuse(sde, float(s[0])).score(y), sde, x, t)

    fig = plot_denoising_strip(x_0, [0.2, 0.6], denoise, sde=sde, generator=make_generator(1))
    for j, t in enumerate([0.2, 0.6]):
        m, std = (float(v) for v in sde.marginal(t))
        noisy = _labelled(fig.axes[j], "noisy").get_offsets()
        denoised = _labelled(fig.axes[2 + j], "denoised").get_offsets()
        np.testing.assert_allclose(denoised, m * noisy / (m**2 + std**2), rtol=1e-8)  # unit variance data


def test_denoising_strip_draws_points_in_data_units_on_named_axes():
    # data N(0, I) in the model's space; drawn through x = mean + std z, the denoised points are
    # mean + std E[z | z_noisy] = mean + std z_noisy / (1 + sigma^2)
    p = Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    z0 = p.sample(300, generator=make_generator(0))
    mean, std = np.array([3.5, 70.0]), np.array([1.1, 13.0])
    names, levels = ("eruptions", "waiting"), [0.1, 1.0]
    fig = plot_denoising_strip(
        z0, levels, tweedie_denoiser(_smoothed_score(p)), generator=make_generator(1),
        to_data=lambda z: torch.as_tensor(mean) + torch.as_tensor(std) * z, columns=names,
    )  # fmt: skip
    clean = mean + std * z0.numpy()
    for j, sigma in enumerate(levels):
        top, bottom = fig.axes[j], fig.axes[len(levels) + j]
        noisy = _labelled(top, "noisy").get_offsets()
        np.testing.assert_allclose(_labelled(top, "clean data").get_offsets(), clean, rtol=1e-12)
        expected = mean + std * ((noisy - mean) / std) / (1 + sigma**2)
        np.testing.assert_allclose(_labelled(bottom, "denoised").get_offsets(), expected, rtol=1e-10)
        for ax in (top, bottom):
            assert (ax.get_xlabel(), ax.get_ylabel()) == names
            assert_covers(ax.get_xlim(), clean[:, 0], slack=3 + 2 * sigma)  # noisy points widen it
            assert_covers(ax.get_ylim(), clean[:, 1], slack=3 + 2 * sigma)


def test_denoising_strip_of_a_wide_table_has_a_histogram_per_column_and_level():
    z0 = torch.randn(400, 5, generator=make_generator(0))
    scale = torch.tensor([1.0, 10.0, 100.0, 1e-3, 5.0])
    names, levels = ("a", "b", "c", "d", "e"), [0.1, 0.5, 2.0]
    fig = plot_denoising_strip(
        z0,
        levels,
        lambda x, s: x,
        to_data=lambda z: 7 + scale * z,
        columns=names,
        generator=make_generator(1),
    )
    assert len(fig.axes) == 5 * 3
    clean = (7 + scale * z0).numpy()
    for i, name in enumerate(names):
        for j in range(3):
            ax = fig.axes[3 * i + j]
            assert ax.get_xlabel() == name
            assert_covers(ax.get_xlim(), clean[:, i], slack=3 + 2 * levels[j])
            assert len(ax.patches) == 3  # clean, noisy and denoised histograms


def test_denoising_strip_of_images_fills_its_figure_in_data_units():
    z0 = torch.rand(6, 1, 8, 8, generator=make_generator(2)) * 2 - 1  # the model's [-1, 1]
    levels = [0.1, 0.3, 1.0]

    def to_pixels(z):
        return (z + 1) * 8.5  # 17 grey levels: pixels in [0, 17]

    fig = plot_denoising_strip(
        z0,
        levels,
        lambda x, s: x,
        n_show=4,
        value_range=(0, 17),
        to_data=to_pixels,
        generator=make_generator(3),
    )
    assert len(fig.axes) == 3 * len(levels)  # clean, noisy, denoised per level
    shown = _of_type(fig, AxesImage)
    assert len(shown) == len(fig.axes)  # no axes left empty
    assert [im.get_array().shape for im in shown] == [(19, 19)] * 9  # 2x2 images of 8x8, padding 1
    expected = np.asarray(image_grid(to_pixels(z0[:4]), nrow=2, padding=1, value_range=(0, 17)))
    for i in range(len(levels)):  # the clean panel of every level shows the images in pixel units
        np.testing.assert_array_equal(shown[3 * i].get_array(), expected)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["clean", "noisy", "denoised"]
    assert [fig.axes[3 * i].get_ylabel() for i in range(3)] == ["σ = 0.1", "σ = 0.3", "σ = 1"]
    FigureCanvasAgg(fig).draw()
    area = sum(ax.get_window_extent().width * ax.get_window_extent().height for ax in fig.axes)
    assert area / (fig.bbox.width * fig.bbox.height) > 0.6  # the images fill the figure


def test_ode_trajectories_end_where_the_linear_flow_sends_them():
    # Data N(0, s^2 I) under VE: p_t = N(0, (s^2 + std(t)^2) I), the flow dx/dt = g^2 x / (2 (s^2 + std^2))
    # scales every point by sqrt(s^2 + std(t)^2): x_eps = x_1 sqrt((s^2 + std_eps^2) / (s^2 + std_1^2)).
    s2, sde = 0.25, VESDE(sigma_min=0.01, sigma_max=3.0)
    p = Gaussian(torch.zeros(2, dtype=torch.float64), s2 * torch.eye(2, dtype=torch.float64))
    x_T = sde.prior_sample((30, 2), generator=make_generator(0), dtype=torch.float64)
    fig = plot_ode_trajectories(
        lambda x, t: p.diffuse(sde, float(t[0])).score(x),
        sde,
        x_T,
        n_steps=40,
        data=p.sample(100, generator=make_generator(1)),
        t_end=1e-3,
    )
    (paths,) = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    segments = paths.get_segments()
    assert len(segments) == 30 and all(len(seg) == 41 for seg in segments)
    ends = np.stack([seg[-1] for seg in segments])
    std_eps, std_1 = float(sde.marginal(1e-3)[1]), float(sde.marginal(1.0)[1])
    np.testing.assert_allclose(ends, x_T.numpy() * math.sqrt((s2 + std_eps**2) / (s2 + std_1**2)), rtol=1e-4)
    np.testing.assert_allclose(np.stack([seg[0] for seg in segments]), x_T.numpy())


def test_image_grid_size_layout_and_values(tmp_path):
    x = torch.zeros(10, 1, 5, 6)
    x[3] = 1.0  # white: row 0, column 3
    x[5] = 1.0  # white: row 1, column 1
    grid = image_grid(x, nrow=4, padding=2, path=tmp_path / "g.png", border=0.0)
    assert grid.mode == "L" and grid.size == (4 * 6 + 5 * 2, 3 * 5 + 4 * 2)
    pixels = np.asarray(grid)
    assert (pixels[2:7, 26:32] == 255).all() and (pixels[9:14, 10:16] == 255).all()
    assert pixels.sum() == 2 * 255 * 30
    with Image.open(tmp_path / "g.png") as saved:
        assert saved.size == grid.size
    rgb = image_grid(torch.rand(3, 3, 4, 4), nrow=8, padding=1, value_range=(0, 1))
    assert rgb.mode == "RGB" and rgb.size == (3 * 4 + 4, 4 + 2)
    with pytest.raises(ValueError, match="C, H, W"):
        image_grid(torch.zeros(2, 4, 4))


def test_image_grid_enlarges_by_nearest_neighbour_with_a_grey_border():
    x = torch.rand(5, 1, 2, 3, generator=make_generator(0))
    scale, padding = 4, 1
    grid = image_grid(x, nrow=3, padding=padding, value_range=(0, 1), scale=scale)
    assert grid.size == image_grid_size(5, 2, 3, nrow=3, padding=1, scale=4) == (3 * 3 * 4 + 4, 2 * 2 * 4 + 3)
    pixels = np.asarray(grid).astype(int)
    plain = np.asarray(image_grid(x, nrow=3, padding=0, value_range=(0, 1), border=0.0)).astype(int)
    border = np.ones(pixels.shape, bool)
    for k in range(5):
        r, c = divmod(k, 3)
        top, left = padding + r * (2 * scale + padding), padding + c * (3 * scale + padding)
        block = pixels[top : top + 2 * scale, left : left + 3 * scale]
        # every source pixel is a scale x scale block of one value
        np.testing.assert_array_equal(
            block, np.kron(plain[2 * r : 2 * r + 2, 3 * c : 3 * c + 3], np.ones((4, 4)))
        )
        border[top : top + 2 * scale, left : left + 3 * scale] = False
    assert (
        border.sum() > 0 and (pixels[border] == 128).all()
    )  # mid-grey between and around, and in the empty slot
    assert [grid_scale(8, 8), grid_scale(28, 28), grid_scale(32, 32), grid_scale(100, 80)] == [8, 3, 2, 1]
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        image_grid(x, scale=0)
    with pytest.raises(ValueError, match="more than 16384 per side"):
        image_grid_size(256, 32, 32, nrow=16, scale=40)


def test_plot_samples_for_points_images_and_tables():
    g = make_generator(0)
    fig = plot_samples(torch.randn(300, 2, generator=g), data=torch.randn(500, 2, generator=g))
    assert len(fig.axes) == 2
    assert _labelled(fig.axes[0], "data").get_offsets().shape == (500, 2)
    assert _labelled(fig.axes[1], "samples").get_offsets().shape == (300, 2)
    fig = plot_samples(torch.rand(20, 3, 4, 4, generator=g), nrow=5)
    (image,) = _of_type(fig, AxesImage)
    assert image.get_array().shape == (4 * 4 + 5 * 1, 5 * 4 + 6 * 1, 3)


def test_plot_samples_frames_each_axis_to_its_column_in_data_units():
    data, samples = faithful(seed=0), faithful(seed=1)
    names = ("eruptions", "waiting")
    fig = plot_samples(samples, data, columns=names)
    for ax in fig.axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == names
        assert ax.get_aspect() == "auto"
        assert_covers(ax.get_xlim(), data[:, 0].numpy())
        assert_covers(ax.get_ylim(), data[:, 1].numpy())
    fig = plot_samples(data[:, :1], columns=("eruptions",))
    assert fig.axes[0].get_xlabel() == "eruptions"
    strays = data.clone()  # inside the window, but for:
    strays[:3] = torch.tensor([20.0, 500.0])  # three samples far outside the data's window
    fig = plot_samples(strays, data, columns=names)
    assert fig.axes[1].get_title() == f"samples ({len(strays)})\n3 outside the window"
    assert fig.axes[0].get_xlim()[1] < 10  # the window stays on the data; the strays are counted


def test_plot_samples_of_a_table_is_a_corner_plot_of_every_column():
    g = np.random.default_rng(0)
    scale = np.array([1.0, 60.0, 1000.0, 1e-2, 3.0])
    data, samples = 5 + g.normal(size=(400, 5)) * scale, 5 + g.normal(size=(300, 5)) * scale
    names = ("a", "b", "c", "d", "e")
    fig = plot_samples(samples, data, columns=names)
    assert len(fig.axes) == 5 * 6 // 2  # the lower triangle and the diagonal
    panels = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        panels[spec.rowspan.start, spec.colspan.start] = ax
    assert sorted(panels) == [(i, j) for i in range(5) for j in range(i + 1)]
    assert [panels[4, j].get_xlabel() for j in range(5)] == list(names)
    assert [panels[i, 0].get_ylabel() for i in range(1, 5)] == list(names[1:])
    for (i, j), ax in panels.items():
        assert_covers(ax.get_xlim(), data[:, j])
        if i == j:
            assert len(ax.patches) == 2  # data's and samples' histograms
        else:
            assert_covers(ax.get_ylim(), data[:, i])
            np.testing.assert_allclose(_labelled(ax, "samples").get_offsets(), samples[:, [j, i]])
            np.testing.assert_allclose(_labelled(ax, "data").get_offsets(), data[:, [j, i]])
    with pytest.raises(ValueError, match="4 column names for 5"):
        plot_samples(samples, columns=names[:4])


def test_loss_curve_reads_metrics_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": k, "loss": math.exp(-k / 50), "lr": 1e-3} for k in range(0, 500, 10)]
    rows.insert(5, {"step": 50, "val_loss": 0.5})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    fig = plot_loss_curve(path)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
    assert labels == ["loss", "val_loss"]
    (raw, smooth) = [ln for ln in ax.lines if ln.get_color() == "C0"]
    assert len(raw.get_xdata()) == 50
    np.testing.assert_allclose(smooth.get_ydata(), _smooth(raw.get_ydata(), 0.8), rtol=1e-12)  # 1 - 10/50
    path.write_text("\n".join(json.dumps({"step": k, "loss": -1.0 - k}) for k in range(5)))
    assert plot_loss_curve(path).axes[0].get_yscale() == "linear"  # ISM/SSM losses go negative
    path.write_text(json.dumps({"step": 0, "lr": 0.1}) + "\n")
    with pytest.raises(ValueError, match="no finite values"):
        plot_loss_curve(path)


def test_smoothing_is_an_unbiased_moving_average():
    np.testing.assert_allclose(_smooth(np.full(20, 3.0), 0.9), 3.0, rtol=1e-12)  # no warm-up bias
    x = np.arange(5.0)
    expected = [
        sum(0.5 ** (i - j) * 0.5 * x[j] for j in range(i + 1)) / (1 - 0.5 ** (i + 1)) for i in range(5)
    ]
    np.testing.assert_allclose(_smooth(x, 0.5), expected, rtol=1e-12)


# --- slices, sinks, smoothing, diffusion ------------------------------------------------------------
def test_score_slice_follows_each_components_line_and_switches_where_the_responsibilities_cross():
    mixture = two_gaussians(dtype=torch.float64)
    fig = viz.plot_score_slice(mixture, [-9.0, -9.0], [9.0, 9.0], n=181)
    ax = fig.axes[0]
    (mixed,) = [ln for ln in ax.lines if ln.get_label() == "mixture's score along the line"]
    u, along = mixed.get_xdata(), mixed.get_ydata()
    length = 18 * math.sqrt(2)
    heavy = -(u - length / 2 + 5 * math.sqrt(2))  # -(u - u_1) for the mode at -(5, 5)
    near = np.abs(u - (length / 2 - 5 * math.sqrt(2))) < 3
    np.testing.assert_allclose(along[near], heavy[near], atol=1e-6)
    (switch,) = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    # responsibilities cross where log 0.8 - (u - u1)^2/2 = log 0.2 - (u - u2)^2/2: past the middle by log 4 / 10√2
    assert switch.get_xdata()[0] == pytest.approx(length / 2 + math.log(4) / (10 * math.sqrt(2)), abs=0.11)


def test_interfering_sinks_split_the_divergence_into_own_sinks_and_a_spread_that_is_never_negative():
    stds = torch.tensor([0.5, 1.0], dtype=torch.float64)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    mixture = GaussianMixture(means, stds[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64), [0.3, 0.7])
    fig = viz.plot_interfering_sinks(mixture, extent=(-3, 3, -3, 3), grid=31, arrows=4)
    alone, together = (ax.images[0].get_array() for ax in fig.axes[:2])
    _, _, points = _grid_points((-3, 3, -3, 3), 31)
    r = mixture.responsibilities(torch.as_tensor(points)).numpy()
    np.testing.assert_allclose(alone.ravel(), r @ np.array([-8.0, -2.0]), rtol=1e-10)
    assert (together >= alone - 1e-9).all() and together.max() > 0  # the spread term: sources between them
    norm = fig.axes[0].images[0].norm
    assert norm.vmin == pytest.approx(-8.0) and norm.vmin < 0 < norm.vmax  # the deepest sink is full blue


def test_divergence_colour_scale_shows_shallow_sinks_beside_tall_sources():
    fig = plot_score_divergence(two_gaussians(), extent=(-9, 9, -9, 9), grid=30, arrows=0)
    image = fig.axes[0].images[0]
    div = image.get_array()
    assert image.norm(div.min()) == pytest.approx(0.0) and image.norm(0.0) == pytest.approx(0.5)
    assert div.min() == pytest.approx(-2.0, abs=1e-4) and div.max() > 10  # -2 is full blue, not white


def _grid_points(extent, n):
    from scorefield.viz.base import plane_grid

    return plane_grid(extent, n)


def test_smoothing_figure_sums_the_kernels_into_the_parzen_density():
    points = torch.tensor([-2.0, -1.5, 2.0], dtype=torch.float64)
    line = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([[[0.25]], [[0.25]]]), [0.8, 0.2])
    fig = viz.plot_smoothing_1d(points, 0.5, line, [0.5, 1.0])
    left, right = fig.axes
    (total,) = [ln for ln in left.lines if "sum" in ln.get_label()]
    x = total.get_xdata()
    parzen = Parzen(points[:, None], 0.5).log_prob(torch.as_tensor(x)[:, None]).exp().numpy()
    np.testing.assert_allclose(total.get_ydata(), parzen, rtol=1e-10)
    smoothed = [ln for ln in right.lines if "σ = 1" in ln.get_label()][0]
    exact = line.smooth(1.0).to(torch.float64).log_prob(torch.as_tensor(x)[:, None]).exp().numpy()
    np.testing.assert_allclose(smoothed.get_ydata(), exact, rtol=1e-6)


def test_dsm_target_points_each_noisy_copy_back_to_its_clean_point():
    clean = torch.tensor([[0.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    line = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([[[0.25]], [[0.25]]]), [0.8, 0.2])
    fig = viz.plot_dsm_target(clean, line, 0.7, n_copies=4, n_pairs=500, generator=make_generator(0))
    arrows = [q for q in fig.axes[0].collections if isinstance(q, Quiver)]
    assert len(arrows) == 2
    for quiver, point in zip(arrows, clean.numpy(), strict=True):
        ends = quiver.XY + np.stack([quiver.U, quiver.V], axis=1)  # the target times σ² lands on x
        np.testing.assert_allclose(ends, np.tile(point, (4, 1)), atol=1e-12)


def test_smoothed_scores_of_the_exact_score_have_no_error():
    mixture = two_gaussians(dtype=torch.float64)
    fig = viz.plot_smoothed_scores(mixture, [0.5, 3.0], _smoothed_score(mixture), (-9, 9, -9, 9), grid=12,
                                   arrows=5, dtype=torch.float64)  # fmt: skip
    errors = [ax.images[0].get_array() for ax in fig.axes[1:4:2]]
    for error in errors:
        assert float(np.max(error)) < 1e-9


def test_diffusion_1d_paths_start_at_the_prior_draws_and_end_on_the_data():
    line = GaussianMixture(torch.tensor([[-1.0], [1.0]]), torch.tensor([[[0.01]], [[0.01]]]), [0.5, 0.5])
    fig = viz.plot_diffusion_1d(line, VPSDE(), n_paths=12, n_steps=100, generator=make_generator(0))
    left, right = fig.axes[:2]
    for ax in (left, right):
        paths = [ln for ln in ax.lines]
        assert len(paths) == 12
        ends = np.array([p.get_ydata()[-1] for p in paths])
        assert np.all(np.minimum(np.abs(ends - 1), np.abs(ends + 1)) < 0.4)  # each on one of the modes
        starts = np.array([p.get_ydata()[0] for p in paths])
        np.testing.assert_allclose(starts, [p.get_ydata()[0] for p in left.lines])  # the same prior draws
    assert left.get_xscale() == "linear" and left.get_xlim() == (0.0, 1.0)  # time on a linear axis


def test_denoising_chain_shares_one_window_and_jumps_to_the_exact_posterior_mean():
    sde = VPSDE()
    p = Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    x_0 = p.sample(200, generator=make_generator(0))

    def denoise(x, t):
        return tweedie(lambda y, s: p.diffuse(sde, float(s[0])).score(y), sde, x, t)

    score = viz.exact_time_score(p, sde)
    x_T = sde.prior_sample((200, 2), generator=make_generator(1), dtype=torch.float64)
    fig = viz.plot_denoising_chain(
        x_0, [0.1, 1.0], denoise, sde, score, x_T, n_steps=20, generator=make_generator(2)
    )
    assert len(fig.axes) == 2 * 3
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes}
    assert len(limits) == 1  # one window for every panel
    for row, t in enumerate([0.1, 1.0]):
        m, std = (float(v) for v in sde.marginal(t))
        noisy = _labelled(fig.axes[3 * row], "noised").get_offsets()
        jumped = _labelled(fig.axes[3 * row + 1], "one jump").get_offsets()
        np.testing.assert_allclose(jumped, m * noisy / (m**2 + std**2), rtol=1e-8)  # E[x_0 | x_t], unit data
    np.testing.assert_allclose(_labelled(fig.axes[5], "chain").get_offsets(), x_T.numpy())  # t = 1: the prior


def test_frame_indices_are_distinct_and_crowd_where_asked():
    for spacing in ("linear", "log", "log_end"):
        index = viz.frame_indices(300, 40, spacing)
        assert len(index) == 40 == len(set(index)) and index[0] == 0 and index[-1] == 299
        assert index == sorted(index)
    log, log_end = viz.frame_indices(300, 40, "log"), viz.frame_indices(300, 40, "log_end")
    assert sum(i < 30 for i in log) > 20 and sum(i > 270 for i in log_end) > 20
    assert viz.frame_indices(5, 12) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="spacing"):
        viz.frame_indices(10, 4, "cubic")


def test_annealed_animation_draws_each_levels_density_in_its_own_window(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.animations, "FigureCanvasAgg", _CanvasSpy)
    _CanvasSpy.figures = []
    mixture = two_gaussians(dtype=torch.float64)
    x_init = 8 * torch.rand(50, 2, generator=make_generator(0), dtype=torch.float64) - 4
    seen = []
    original = viz.animations.set_window

    def spy(ax, extent):
        seen.append(extent)
        original(ax, extent)

    monkeypatch.setattr(viz.animations, "set_window", spy)
    path = annealed_langevin_animation(
        _smoothed_score(mixture), x_init, tmp_path / "a.gif", sigmas=[20.0, 5.0, 1.0], step_size=0.05, n_steps_each=10,
        n_frames=8, background_at=mixture.smooth, window="level", extent=(-9, 9, -9, 9), generator=make_generator(1),
    )  # fmt: skip
    assert _gif_frames(path) == 8
    reaches = sorted({max(abs(v) for v in extent) for extent in seen})
    assert reaches[0] >= 9 and reaches[-1] >= 40  # p_σ at σ = 20 reaches far beyond the data's window
    (fig,) = _CanvasSpy.figures
    assert "window ±" in fig.axes[0].title.get_text()


def test_forward_paths_start_at_the_data_inside_each_sdes_exact_band():
    x_0 = torch.tensor([-1.0, 0.5, 1.5], dtype=torch.float64)
    sdes = {"VE": VESDE(sigma_min=0.01, sigma_max=5.0), "VP": VPSDE()}
    fig = viz.plot_forward_paths(x_0, sdes, n_steps=50, generator=make_generator(0))
    ve, vp = fig.axes
    for ax in (ve, vp):
        lines = ax.get_lines()
        assert len(lines) == 3 and [float(line.get_ydata()[0]) for line in lines] == [-1.0, 0.5, 1.5]
    top = max(float(p.vertices[:, 1].max()) for p in vp.collections[1].get_paths())  # band of x_0 = 1.5
    scale, std = VPSDE().marginal(torch.linspace(0, 1, 51, dtype=torch.float64))
    assert top == pytest.approx(float((scale * 1.5 + 2 * std).max()))  # m(t) x_0 + 2 std(t), exactly
    ve_top = max(float(p.vertices[:, 1].max()) for p in ve.collections[1].get_paths())
    assert ve_top == pytest.approx(1.5 + 2 * 5.0, rel=1e-3)  # VE keeps x_0 and lets the noise explode
