"""Toy samplers, bundled data, table files and the Standardizer against their definitions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scorefield.datasets import (
    BUNDLED,
    TOY,
    Standardizer,
    breast_cancer,
    checkerboard,
    digits,
    eight_gaussians,
    load_data,
    load_table,
    moons,
    pinwheel,
    rings,
    swiss_roll,
    two_gaussians,
)
from scorefield.distributions import Gaussian


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(TOY))
def test_toys_are_seeded_by_their_generator_only(name):
    sampler = TOY[name]
    torch.manual_seed(1)
    a = sampler(500, generator=gen(3))
    torch.manual_seed(2)  # the global RNG must not matter
    b = sampler(500, generator=gen(3))
    c = sampler(500, generator=gen(4))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(TOY))
def test_toys_refuse_a_bad_count(name):
    with pytest.raises(ValueError, match="positive integer"):
        TOY[name](0)


def binomial_ok(count: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_two_gaussians_has_the_tutorials_mode_weights():
    n = 20_000
    x = two_gaussians(n, gen())
    upper = int((x.sum(1) > 0).sum())
    assert binomial_ok(upper, n, 0.2)
    lower = x[x.sum(1) < 0]
    assert torch.allclose(lower.mean(0), torch.tensor([-5.0, -5.0]), atol=0.05)
    assert torch.allclose(lower.std(0), torch.ones(2), atol=0.05)


def test_eight_gaussians_are_equal_and_on_the_circle():
    n = 16_000
    x = eight_gaussians(n, gen(), radius=2.0, std=0.1)
    angle = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angle / (math.pi / 4)).long() % 8
    counts = torch.bincount(k, minlength=8)
    assert all(binomial_ok(int(c), n, 1 / 8) for c in counts)
    centers = 2.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    residual = x - centers
    assert torch.allclose(residual.std(0), torch.full((2,), 0.1), rtol=0.05)


def test_moons_lie_on_two_half_circles():
    noise = 0.05
    x = moons(4000, gen(), noise=noise) + torch.tensor([0.5, 0.25])  # undo the centring
    d_upper = ((x - torch.tensor([0.0, 0.0])).norm(dim=1) - 1).abs()
    d_lower = ((x - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs()
    nearest = torch.minimum(d_upper, d_lower)
    assert nearest.max() < 6 * noise
    assert binomial_ok(int((d_upper < d_lower).sum()), 4000, 0.5)


def test_swiss_roll_radius_equals_its_angle_parameter():
    x = swiss_roll(4000, gen(), noise=0.0) * 5
    t = x.norm(dim=1)
    assert t.min() >= 1.5 * math.pi - 1e-4 and t.max() <= 4.5 * math.pi + 1e-4
    assert torch.allclose(torch.cos(t) * t, x[:, 0], atol=1e-3)


def test_rings_hold_points_in_proportion_to_their_length():
    n = 12_000
    x = rings(n, gen(), radii=(1.0, 2.0, 3.0), noise=0.05)
    ring = torch.round(x.norm(dim=1)).long()
    counts = torch.bincount(ring, minlength=4)[1:]
    for count, p in zip(counts, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert binomial_ok(int(count), n, p)


def test_checkerboard_fills_the_black_squares_uniformly():
    n = 16_000
    x = checkerboard(n, gen())
    assert x.min() >= -2 and x.max() <= 2
    cell = torch.floor(x).long()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    index = (cell[:, 0] + 2) * 4 + (cell[:, 1] + 2)
    counts = torch.bincount(index, minlength=16)
    counts = counts[counts > 0]
    assert counts.numel() == 8
    assert all(binomial_ok(int(c), n, 1 / 8) for c in counts)


def test_pinwheel_has_the_symmetry_of_its_arms():
    x = pinwheel(20_000, gen(), n_arms=5)
    angle = torch.atan2(x[:, 1], x[:, 0]).double()
    first = torch.stack([angle.cos().mean(), angle.sin().mean()]).norm()
    fifth = torch.stack([(5 * angle).cos().mean(), (5 * angle).sin().mean()]).norm()
    assert first < 0.05  # no preferred direction
    assert fifth > 0.3  # five aligned arms


def test_digits_and_breast_cancer_are_bundled():
    table = digits()
    images = digits(images=True)
    assert table.shape == (1797, 64) and images.shape == (1797, 1, 8, 8)
    assert torch.equal(images.reshape(1797, 64), table)
    assert table.min() == 0 and table.max() == 16 and torch.equal(table, table.round())
    cancer = breast_cancer()
    assert cancer.shape == (569, 30) and torch.isfinite(cancer).all()
    assert set(BUNDLED) == {
        "digits",
        "digits_images",
        "digits_images_train",
        "digits_images_test",
        "breast_cancer",
    }
    train, test = BUNDLED["digits_images_train"](), BUNDLED["digits_images_test"]()
    assert train.shape == (1438, 1, 8, 8) and test.shape == (359, 1, 8, 8)
    # the two sides partition the bundled images: same multiset of rows, sorted
    whole = BUNDLED["digits_images"]().reshape(1797, 64)
    parts = torch.cat([train, test]).reshape(1797, 64)
    key = lambda x: sorted(map(tuple, x.long().tolist()))  # noqa: E731
    assert key(parts) == key(whole)


# --------------------------------------------------------------------------------------------------
# files


def test_npy_and_csv_tables_load_as_float32(tmp_path):
    values = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    np.save(tmp_path / "t.npy", values)
    np.savetxt(tmp_path / "t.csv", values, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "plain.csv", values, delimiter=",")
    np.save(tmp_path / "one.npy", values[:, 0])
    for name in ("t.npy", "t.csv", "plain.csv"):
        x = load_table(tmp_path / name)
        assert x.dtype == torch.float32
        assert torch.allclose(x, torch.from_numpy(values).float())
    assert load_table(tmp_path / "one.npy").shape == (4, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_a_row_with_nan_or_inf_is_named(tmp_path, bad, suffix):
    values = np.ones((6, 2))
    values[4, 1] = bad
    values[5, 0] = bad
    path = tmp_path / f"data{suffix}"
    np.save(path, values) if suffix == ".npy" else np.savetxt(path, values, delimiter=",")
    where = r"row 4 \(0-based\) contains" if suffix == ".npy" else r"line 5: the row holds"  # headerless
    with pytest.raises(ValueError, match=rf"{where} NaN, Inf or a number beyond") as info:
        load_table(path)
    assert str(path) in str(info.value)


def test_malformed_tables_are_refused(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "words.csv").write_text("a,b\n1,2\n3,x\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header_only.csv").write_text("a,b\n")
    (tmp_path / "t.txt").write_text("1,2\n")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    cases = {
        "ragged.csv": "line 2 has 1 columns but line 1 has 2",
        "words.csv": "line 3: 'x' in column 'b' is not a number",
        "empty.csv": "no rows",
        "header_only.csv": "no rows",
        "t.txt": "unknown table format",
        "cube.npy": "expected a non-empty table",
        "objects.npy": "not a numeric",
        "text.npy": "expected real numbers",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            load_table(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_table(tmp_path / "missing.csv")


def test_load_data_reads_toys_bundled_sets_and_files(tmp_path):
    spec = SimpleNamespace(name="moons", path=None, n=300, seed=5)
    assert torch.equal(load_data(spec), moons(300, gen(5)))
    assert load_data(SimpleNamespace(name="breast_cancer", path=None, n=1, seed=0)).shape == (569, 30)
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    assert load_data(SimpleNamespace(name="moons", path=str(tmp_path / "x.npy"), n=1, seed=0)).shape == (3, 2)
    with pytest.raises(ValueError, match="unknown data set"):
        load_data(SimpleNamespace(name="nope", path=None, n=1, seed=0))


# --------------------------------------------------------------------------------------------------
# Standardizer


def test_standardizer_standardises_and_inverts():
    x = torch.randn(1000, 3, generator=gen(), dtype=torch.float64) * torch.tensor([0.1, 3.0, 20.0]) + 7
    scaler = Standardizer().fit(x)
    z = scaler.transform(x)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(0, correction=0), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(scaler.inverse_transform(z), x)


def test_log_det_converts_a_density_to_data_units():
    """log N(x; mu, diag s^2) = log N(z; 0, I) - sum log s, with z = (x - mu)/s (change of variables)."""
    x = torch.randn(500, 3, generator=gen(1), dtype=torch.float64) * torch.tensor([0.5, 2.0, 9.0]) - 3
    scaler = Standardizer().fit(x)
    in_data_units = Gaussian(scaler.mean, torch.diag(scaler.std**2)).log_prob(x)
    standard = Gaussian(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    assert torch.allclose(standard.log_prob(scaler.transform(x)) + scaler.log_det, in_data_units)


def test_standardizer_keeps_constant_features_and_image_shapes():
    x = digits(images=True)
    scaler = Standardizer().fit(x)
    assert scaler.mean.shape == (1, 8, 8)
    constant = x.std(0) == 0
    assert constant.any() and (scaler.std[constant] == 1).all()
    assert torch.isfinite(scaler.transform(x)).all()
    restored = Standardizer.from_state_dict(scaler.state_dict())
    assert torch.equal(restored.transform(x), scaler.transform(x))
    with pytest.raises(ValueError, match="fitted on"):
        scaler.transform(x.reshape(-1, 64))
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(x)
