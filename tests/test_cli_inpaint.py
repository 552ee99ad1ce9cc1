"""`scorefield inpaint`: observed cells come back bit for bit, filled cells follow the run's conditional
law, the same seed gives the same file, image runs take images, and every bad input is refused in one
line with exit status 2 before any sampling."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_cli import expect_error, forbid, run_cli
from test_cli_plot import IMAGE_TINY
from test_guidance import CENTRES, cond_overrides, write_clusters

from scorefield.cli import main

FAST = ["--nfe", 41, "--resample", 4, "--quiet"]  # 10 steps of 4 evaluations, and the denoising one


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def unlabelled(labelled, path) -> None:
    """The features of ``write_clusters``' CSV without its label column: ``a,b``."""
    with open(labelled, newline="") as f:
        rows = [[a, b] for a, _, b in csv.reader(f)]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two Gaussian clusters, (a, b) near (-2, 0) and (2, 1), learned without labels ("plain") and with
    them ("labelled", shorter: only the mechanics of --label are checked on it); and the digits preset,
    shrunk and trained one step ("digits")."""
    folder = tmp_path_factory.mktemp("inpaint")
    write_clusters(folder / "labelled.csv")
    unlabelled(folder / "labelled.csv", folder / "plain.csv")
    plain = [o for o in cond_overrides(folder / "plain.csv") if not o.startswith(("data.label", "model.num"))]
    jobs = {
        "plain": sets(*plain),
        "labelled": sets(*cond_overrides(folder / "labelled.csv"), "train.steps=20"),
        "digits": ["--config", "configs/digits_vp.toml", *sets(*IMAGE_TINY)],
    }
    for name, args in jobs.items():
        assert main(["train", *args, "--out", str(folder / name), "--quiet"]) == 0, name
    return folder


@pytest.fixture
def files(tmp_path):
    """A table (a observed at -2 or 2 with b to fill; both observed; neither) and its mask, as .npy and .csv."""
    data = np.array([[-2.0, 99.0], [2.0, 99.0], [-2.25, 0.5], [0.0, 0.0]] * 60)
    mask = np.array([[1, 0], [1, 0], [1, 1], [0, 0]] * 60)
    np.save(tmp_path / "data.npy", data)
    np.save(tmp_path / "mask.npy", mask.astype(bool))
    np.savetxt(tmp_path / "data.csv", data, delimiter=",", header="a,b", comments="")
    np.savetxt(tmp_path / "mask.csv", mask, delimiter=",", fmt="%d", header="a,b", comments="")
    return tmp_path, data, mask.astype(bool)


def inpaint(capsys, run, data, mask, out, *extra) -> tuple[int, str, str]:
    return run_cli(capsys, "inpaint", "--run", run, "--data", data, "--mask", mask, "--out", out, *extra)


# --------------------------------------------------------------------------------------------------
# what works


def test_observed_cells_come_back_exactly_and_filled_ones_follow_the_conditional(capsys, runs, files):
    folder, data, mask = files
    code, out, err = inpaint(
        capsys, runs / "plain", folder / "data.npy", folder / "mask.npy", folder / "o.npy"
    )
    assert code == 0, err
    # the defaults: sequential Monte Carlo, 16 particles on 51 evaluations (about 800 network evaluations)
    assert (
        "filled 240 of 480 cells in 180 of 240 rows" in out
        and "51 score evaluations per row, 16 particles" in out
    )
    filled = np.load(folder / "o.npy")
    assert filled.shape == data.shape and np.isfinite(filled).all()
    assert np.array_equal(filled[mask], data.astype(np.float32)[mask])
    # b given a = -2 (truth 0 ± 0.3) and given a = 2 (truth 1 ± 0.3)
    b_left, b_right = filled[0::4, 1], filled[1::4, 1]
    assert abs(b_left.mean() - CENTRES["left"][1]) < 0.35 and abs(b_right.mean() - CENTRES["right"][1]) < 0.35
    assert 0.05 < b_left.std() < 0.6 and 0.05 < b_right.std() < 0.6
    free = filled[3::4]  # rows without an observed cell: draws of the joint law, near one of the clusters
    # (a briefly trained model: one in 60 of its joint draws lands at |a| = 4.0, past the data's 2.25)
    assert (np.abs(free[:, 0]) < 4.5).all() and (np.quantile(np.abs(free[:, 0]), 0.9) < 3.0)
    assert (np.abs(free[:, 1] - 0.5) < 2.0).all()


def test_csv_in_csv_out_same_seed_same_bits(capsys, runs, files):
    folder, data, mask = files
    args = (runs / "plain", folder / "data.csv", folder / "mask.csv")
    assert inpaint(capsys, *args, folder / "a.csv", *FAST, "--seed", 3)[0] == 0
    assert inpaint(capsys, *args, folder / "b.csv", *FAST, "--seed", 3)[0] == 0
    assert inpaint(capsys, *args, folder / "c.csv", *FAST, "--seed", 4)[0] == 0
    text = (folder / "a.csv").read_text()
    assert text.splitlines()[0] == "a,b" and text == (folder / "b.csv").read_text()
    first, other = (np.loadtxt(folder / f"{n}.csv", delimiter=",", skiprows=1) for n in "ac")
    assert np.array_equal(first[mask], other[mask]) and not np.array_equal(first, other)
    # row i's noise is keyed by (seed, i): other blocks, the first holding no observed cell, change nothing
    order = np.r_[3:40:4, 0:40:4, 1:40:4, 2:40:4]  # ten rows without an observed cell first
    np.save(folder / "some.npy", data[order])
    np.save(folder / "some_mask.npy", mask[order])
    some = (runs / "plain", folder / "some.npy", folder / "some_mask.npy")
    assert inpaint(capsys, *some, folder / "d.npy", *FAST, "--batch-size", 10)[0] == 0
    assert inpaint(capsys, *some, folder / "e.npy", *FAST, "--batch-size", 40)[0] == 0
    assert np.allclose(np.load(folder / "d.npy"), np.load(folder / "e.npy"), atol=1e-4)


def test_one_mask_row_applies_to_every_row_and_a_full_mask_changes_nothing(capsys, runs, files):
    folder, data, _ = files
    np.savetxt(folder / "one.csv", [[1, 0]], delimiter=",", fmt="%d")
    code, out, err = inpaint(
        capsys, runs / "plain", folder / "data.npy", folder / "one.csv", folder / "o.npy", *FAST
    )
    assert code == 0 and "filled 240 of 480 cells in 240 of 240 rows" in out, err
    filled = np.load(folder / "o.npy")
    assert np.array_equal(filled[:, 0], data[:, 0].astype(np.float32)) and (filled[:, 1] != 99).all()
    np.save(folder / "all.npy", np.ones_like(data))
    code, out, _ = inpaint(capsys, runs / "plain", folder / "data.npy", folder / "all.npy", folder / "f.npy")
    assert code == 0 and "filled 0 of 480 cells" in out and "0 score evaluations" in out
    assert np.array_equal(np.load(folder / "f.npy"), data.astype(np.float32))


def test_a_label_and_guidance_condition_the_completions(capsys, runs, files):
    folder, _, mask = files
    run, outs = runs / "labelled", {}
    for label in ("left", "right"):
        code, out, err = inpaint(
            capsys, run, folder / "data.npy", folder / "mask.npy", folder / f"{label}.npy", *FAST,
            "--label", label, "--guidance", 1.5,
        )  # fmt: skip
        assert code == 0 and f"class '{label}'" in out and "guidance 1.5" in out, err
        outs[label] = np.load(folder / f"{label}.npy")
        assert np.array_equal(outs[label][mask], np.load(folder / "data.npy").astype(np.float32)[mask])
    assert not np.array_equal(outs["left"], outs["right"])


def test_images_in_the_runs_shape_or_flat_with_a_grid(capsys, runs, tmp_path):
    images = np.random.default_rng(0).integers(0, 17, size=(6, 1, 8, 8)).astype(np.float64)
    np.save(tmp_path / "images.npy", images)
    np.savetxt(tmp_path / "flat.csv", images.reshape(6, 64), delimiter=",")
    bottom = np.zeros((1, 1, 8, 8), dtype=bool)
    bottom[..., :4, :] = True  # the top half observed, the bottom half filled
    np.save(tmp_path / "top.npy", bottom)
    results = []
    for data, out in (("images.npy", "i.npy"), ("flat.csv", "f.npy")):
        code, msg, err = inpaint(
            capsys, runs / "digits", tmp_path / data, tmp_path / "top.npy", tmp_path / out, "--nfe", 9, "--resample", 2
        )  # fmt: skip
        assert code == 0 and "filled 192 of 384 cells in 6 of 6 rows" in msg, err
        results.append(np.load(tmp_path / out))
        assert (tmp_path / out).with_suffix(".png").stat().st_size > 100
    assert results[0].shape == (6, 1, 8, 8) and np.array_equal(results[0], results[1])
    assert np.array_equal(results[0][..., :4, :], images[..., :4, :]) and np.isfinite(results[0]).all()


def test_help_states_the_mask_convention(capsys):
    code, out, _ = run_cli(capsys, "inpaint", "--help")
    assert code == 0 and "1 (or True) marks an observed cell" in " ".join(out.split())
    assert "0 = to fill" in out


# --------------------------------------------------------------------------------------------------
# what is refused, before any sampling


def bad_masks(folder) -> dict[str, str]:
    """Mask files that cannot serve ``files``' data (240 rows of 2 cells), by the message that refuses them."""
    np.save(folder / "rows.npy", np.ones((7, 2)))
    np.save(folder / "wide.npy", np.ones((240, 3)))
    np.savetxt(folder / "half.csv", [[1, 0.5]] * 240, delimiter=",")
    two = np.ones((240, 2))
    two[5, 1] = 2
    np.save(folder / "two.npy", two)
    np.save(folder / "none.npy", np.zeros((240, 2), dtype=bool))
    np.save(folder / "text.npy", np.array([["1", "0"]] * 240))
    (folder / "mask.txt").write_text("1,0\n")
    return {
        "rows.npy": "has shape (7, 2) but the data have (240, 2)",
        "wide.npy": "has shape (240, 3) but the data have (240, 2)",
        "half.csv": "holds 0.5 (row 0, 0-based): a mask holds only 1 (observed, kept) and 0 (to fill)",
        "two.npy": "holds 2.0 (row 5, 0-based)",
        "none.npy": "marks every cell 0 (to fill): there is nothing to condition on",
        "text.npy": "expected 0 and 1 or booleans, found dtype <U1",
        "mask.txt": "unknown format '.txt'; use .npy or .csv",
        "missing.npy": "mask file",
    }


def test_bad_masks_are_refused_in_one_line(capsys, monkeypatch, runs, files):
    folder, _, _ = files
    forbid(monkeypatch, "inpaint")
    for name, message in bad_masks(folder).items():
        out = folder / "o.npy"
        expect_error(
            capsys, ["inpaint", "--run", runs / "plain", "--data", folder / "data.npy", "--mask", folder / name,
                     "--out", out], message,
        )  # fmt: skip
        assert not out.exists()


def test_bad_data_flags_and_outputs_are_refused_in_one_line(capsys, monkeypatch, runs, files):
    folder, data, _ = files
    forbid(monkeypatch, "inpaint")
    broken = data.copy()
    broken[3, 0] = np.nan
    np.save(folder / "nan.npy", broken)
    np.save(folder / "wide.npy", np.ones((240, 3)))
    (folder / "taken.npy").mkdir()
    plain, labelled = runs / "plain", runs / "labelled"
    cases = [
        (plain, "nan.npy", [], "row 3 (0-based) contains NaN"),
        (plain, "wide.npy", [], "shape (3,) per example but the run"),
        (plain, "absent.csv", [], "absent.csv does not exist"),
        (plain, "data.npy", ["--nfe", 4, "--resample", 4], "--nfe 4 is too small for --resample 4"),
        (
            plain,
            "data.npy",
            ["--particles", 4, "--resample", 2],
            "--particles 4 replaces RePaint's resampling",
        ),
        (plain, "data.npy", ["--label", "left"], "is unconditional (model.num_classes = 0)"),
        (
            labelled,
            "data.npy",
            ["--guidance", 2, "--null-label"],
            "--guidance weighs the samples of one class",
        ),
        (
            plain,
            "data.npy",
            ["--null-label"],
            "--null-label is the unconditional model of a class-conditional",
        ),
        (labelled, "data.npy", ["--label", "middle"], "label 'middle' is out of range"),
        (plain, "data.npy", ["--out", folder / "taken.npy"], "it is a folder"),
        (plain, "data.npy", ["--out", "/proc/o.npy"], "cannot write /proc/o.npy"),
        (plain, "data.npy", ["--out", folder / "o.png"], "must end in .npy or .csv"),
    ]
    for run, name, extra, message in cases:
        out = [] if "--out" in extra else ["--out", folder / "o.npy"]
        args = ["inpaint", "--run", run, "--data", folder / name, "--mask", folder / "mask.npy", *out, *extra]
        expect_error(capsys, args, message)
    assert not (folder / "o.npy").exists()
