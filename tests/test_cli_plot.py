"""`scorefield plot` and the PNG grid of `scorefield sample`, checked for truth: every column drawn and
named, axes in the data's units and scaled to each column, images filling their figure on the run's
pixel scale, the grid enlarged with grey borders, and the figures that cannot be drawn refused in one
line before any work."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import AxesImage
from matplotlib.quiver import Quiver
from PIL import Image
from test_cli import TINY as CLI_TINY

from scorefield import viz
from scorefield.cli import main

# test_cli's tiny run, with data from each test's own table and fewer sampler steps
TINY = [*(s for s in CLI_TINY if not s.startswith(("data.n=", "sample.steps="))), "sample.steps=5"]
IMAGE_TINY = [  # the digits preset, shrunk (as in test_images.py)
    "model.channels=8",
    "model.n_res_blocks=1",
    "model.embed_dim=16",
    "train.batch_size=16",
    "train.steps=1",
    "train.ckpt_every=1",
    "train.log_every=1",
    "train.warmup=1",
    "train.device=cpu",
]
FIVE = ("eruptions", "waiting", "pressure", "rate", "depth")
PIXELS = (0.0, 17.0)  # digits: 17 grey levels, drawn black at 0 and white at 17


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def table(n: int = 400) -> np.ndarray:
    """Five columns in very different units: Old Faithful-like eruptions (~2-5 min) and waiting
    (~40-100 min), and columns in the thousands, the hundredths and the negatives."""
    g = np.random.default_rng(0)
    eruptions = np.where(g.random(n) < 0.35, g.normal(2.0, 0.25, n), g.normal(4.3, 0.4, n))
    waiting = 33 + 10 * eruptions + g.normal(0, 5, n)
    return np.stack([eruptions, waiting, g.normal(1000, 200, n), g.exponential(0.01, n), -3 * eruptions], 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot")
    data = table()
    for name, columns in (("five", FIVE), ("two", FIVE[:2])):
        path = folder / f"{name}.csv"
        np.savetxt(path, data[:, : len(columns)], delimiter=",", header=",".join(columns), comments="")
        args = ["train", *sets(*TINY, f'data.path="{path}"'), "--out", str(folder / name), "--quiet"]
        assert main(args) == 0
    config = "configs/digits_vp.toml"
    assert (
        main(["train", "--config", config, *sets(*IMAGE_TINY), "--out", str(folder / "digits"), "--quiet"])
        == 0
    )
    return folder, data


@pytest.fixture
def drawn(monkeypatch):
    """The figures the command draws, by function (the GIF's by its canvas), as it returns them."""
    made: dict[str, object] = {}
    for name in ("plot_samples", "plot_score_field", "plot_denoising_strip"):

        def spy(*args, _original=getattr(viz, name), _name=name, **kwargs):
            made[_name] = _original(*args, **kwargs)
            return made[_name]

        monkeypatch.setattr(viz, name, spy)

    class Canvas(FigureCanvasAgg):
        def __init__(self, figure):
            super().__init__(figure)
            made["gif"] = figure

    monkeypatch.setattr(viz.animations, "FigureCanvasAgg", Canvas)
    return made


def plot(capsys, run, out, *what: str) -> tuple[int, str]:
    code = main(["plot", "--run", str(run), "--what", *what, "--n", "400", "--steps", "4", "--out", str(out)])
    return code, capsys.readouterr().err


def covers(lo_hi, values: np.ndarray) -> bool:
    """The axis holds the column's whole range, in its own units (at most 1.5 times as wide)."""
    lo, hi = sorted(lo_hi)
    return lo <= values.min() and values.max() <= hi and hi - lo <= 1.5 * np.ptp(values)


def rows_of(points: np.ndarray, data: np.ndarray) -> bool:
    """Every point is a row of ``data`` (in data units, to float32 precision)."""
    distance = np.abs(points[:, None, :] - data[None, :, :]) / np.abs(data).max(0)
    return bool((distance.max(-1).min(-1) < 1e-6).all())


# --------------------------------------------------------------------------------------------------
# tables


def test_samples_of_a_five_column_table_is_a_pair_plot_of_every_named_column(capsys, runs, drawn, tmp_path):
    folder, data = runs
    assert plot(capsys, folder / "five", tmp_path, "samples") == (0, "")
    fig = drawn["plot_samples"]
    assert len(fig.axes) == 5 * 6 // 2
    panels = {(a.get_subplotspec().rowspan.start, a.get_subplotspec().colspan.start): a for a in fig.axes}
    assert [panels[4, j].get_xlabel() for j in range(5)] == list(FIVE)
    assert [panels[i, 0].get_ylabel() for i in range(1, 5)] == list(FIVE[1:])
    for (i, j), ax in panels.items():
        assert covers(ax.get_xlim(), data[:, j]), (FIVE[j], ax.get_xlim())
        if i != j:
            assert covers(ax.get_ylim(), data[:, i]), (FIVE[i], ax.get_ylim())
            assert rows_of(ax.collections[0].get_offsets(), data[:, [j, i]])  # the data, in data units
    assert (tmp_path / "samples.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "what, draws",
    [
        ("field", "draws the score as arrows in a plane"),
        ("langevin", "animates the sampler's particles in a plane"),
    ],
)
def test_plane_figures_of_a_five_column_table_say_why_not_and_what_can(capsys, runs, tmp_path, what, draws):
    folder, _ = runs
    code, err = plot(capsys, folder / "five", tmp_path / "figs", "samples", what)
    assert code == 2
    assert err.splitlines() == [
        f"scorefield: error: --what {what} {draws} and needs 2 columns; the run has 5 "
        f"({', '.join(FIVE)}); --what samples draws every pair"
    ]
    assert not (tmp_path / "figs").exists() or not any(
        (tmp_path / "figs").iterdir()
    )  # refused before any work


def test_two_column_figures_are_in_data_units_scaled_to_each_named_column(capsys, runs, drawn, tmp_path):
    folder, data = runs
    data = data[:, :2]
    names = FIVE[:2]
    assert plot(capsys, folder / "two", tmp_path, "samples", "field", "denoise", "langevin") == (0, "")
    samples, field, denoise, gif = (
        drawn[k] for k in ("plot_samples", "plot_score_field", "plot_denoising_strip", "gif")
    )
    for fig in (samples, field, denoise, gif):
        for ax in fig.axes:
            assert (ax.get_xlabel(), ax.get_ylabel()) == names
            assert ax.get_aspect() == "auto"  # not a thin line: each axis to its own column
            assert covers(ax.get_xlim(), data[:, 0]) or fig is denoise, ax.get_xlim()
            assert covers(ax.get_ylim(), data[:, 1]) or fig is denoise, ax.get_ylim()
    assert rows_of(samples.axes[0].collections[0].get_offsets(), data)
    (arrows,) = [c for c in field.axes[0].collections if isinstance(c, Quiver)]
    assert covers((arrows.XY[:, 0].min(), arrows.XY[:, 0].max()), data[:, 0])
    for ax in denoise.axes:  # the clean data are drawn as they are in the file, not standardised
        (clean,) = [c for c in ax.collections if c.get_label() == "clean data"]
        assert rows_of(clean.get_offsets(), data)
        lo, hi = ax.get_ylim()
        assert lo <= data[:, 1].min() and data[:, 1].max() <= hi  # noise may widen the window
    assert rows_of(
        gif.axes[0].collections[0].get_offsets(), data
    )  # the GIF draws the data under the particles
    for name in ("samples.png", "field.png", "denoise.png", "langevin.gif"):
        assert (tmp_path / name).stat().st_size > 5_000, name


def test_plot_refuses_an_unwritable_folder_before_any_work(capsys, runs, tmp_path):
    folder, _ = runs
    (tmp_path / "file").write_text("taken")
    code, err = plot(capsys, folder / "two", tmp_path / "file", "samples")
    assert code == 2 and err.startswith("scorefield: error: cannot write") and len(err.splitlines()) == 1


# --------------------------------------------------------------------------------------------------
# images


def test_denoise_of_images_fills_its_figure_on_the_run_pixel_scale(capsys, runs, drawn, tmp_path):
    folder, _ = runs
    assert plot(capsys, folder / "digits", tmp_path, "denoise") == (0, "")
    fig = drawn["plot_denoising_strip"]
    assert len(fig.axes) == 4 * 3  # clean, noisy, denoised at each of 4 times
    images = [a for ax in fig.axes for a in ax.images if isinstance(a, AxesImage)]
    assert len(images) == len(fig.axes)  # no axes left empty
    levels = {round(k * 255 / PIXELS[1]) for k in range(17)}  # grey levels 0..16 on black 0, white 17
    assert set(np.unique(images[0].get_array())) <= levels | {128}  # the clean images, and the grey border
    with Image.open(tmp_path / "denoise.png") as png:
        pixels = np.asarray(png.convert("L"))
    assert (pixels == 255).mean() < 0.2  # the saved figure is images, not white space


def test_sample_writes_an_enlarged_grid_with_grey_borders_on_the_pixel_scale(capsys, runs, tmp_path):
    folder, _ = runs
    common = [
        "sample",
        "--run",
        str(folder / "digits"),
        "--n",
        "10",
        "--sampler",
        "em",
        "--steps",
        "2",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "s.png")]) == 0
    x = np.load(tmp_path / "s.npy")[:, 0]
    with Image.open(tmp_path / "s.png") as png:
        grid = np.asarray(png).astype(int)
    scale, pad, columns = 8, 2, 4  # 8x8 digits enlarged to 64 pixels; ceil(sqrt(10)) per row
    assert grid.shape == (3 * 8 * scale + 4 * pad, columns * 8 * scale + 5 * pad)
    border = np.ones(grid.shape, bool)
    for k in range(10):
        top, left = pad + (k // columns) * (8 * scale + pad), pad + (k % columns) * (8 * scale + pad)
        expected = np.round(np.clip(x[k] / PIXELS[1], 0, 1) * 255)
        np.testing.assert_array_equal(
            grid[top : top + 8 * scale, left : left + 8 * scale], np.kron(expected, np.ones((8, 8)))
        )
        border[top : top + 8 * scale, left : left + 8 * scale] = False
    assert (grid[border] == 128).all()  # thin grey borders between and around, and the two empty slots

    assert main([*common, "--grid-scale", "3", "--out", str(tmp_path / "k.npy")]) == 0
    with Image.open(tmp_path / "k.png") as png:
        assert png.size == (columns * 8 * 3 + 5 * pad, 3 * 8 * 3 + 4 * pad)
    capsys.readouterr()
    for extra, message in (
        (["--grid-scale", "0"], "argument --grid-scale: expected a positive integer, got 0"),
        (["--grid-scale", "3000"], "--grid-scale 3000: a grid of 10 images of 8x8 enlarged 3000 times"),
    ):
        assert main([*common, *extra, "--out", str(tmp_path / "bad.npy")]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"scorefield: error: {message}")
    table_run = ["sample", "--run", str(folder / "two"), "--n", "3", "--grid-scale", "2", "--quiet"]
    assert main([*table_run, "--out", str(tmp_path / "t.npy")]) == 2
    assert "--grid-scale sizes the PNG grid of an image run" in capsys.readouterr().err
    assert (
        not (tmp_path / "bad.npy").exists() and not (tmp_path / "t.npy").exists()
    )  # refused before sampling
