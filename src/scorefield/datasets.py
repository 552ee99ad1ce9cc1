"""Data: 2-D toy samplers, scikit-learn's bundled tables, ``.npy`` / ``.csv`` files, and a scaler.

- Toys ``(n, generator=None) -> [n, 2]`` (float32), registered in ``TOY``: the tutorials' two-Gaussian
  mixture plus the usual benchmarks of the field (FFJORD's eight Gaussians, checkerboard, pinwheel,
  swiss roll; moons; concentric rings). Every draw comes from ``generator``.
- ``digits`` (8x8 handwritten digits, values 0..16) and ``breast_cancer`` (30 features): bundled with
  scikit-learn, so nothing is downloaded.
- ``load_table``: a ``.npy`` or ``.csv`` file of numbers, one example per row; a row holding NaN or
  Inf is refused with its 0-based index.
- ``Standardizer``: per-feature ``(x - mean) / std`` with its inverse and the log-determinant that
  turns a log-density of standardised data back into one of the data's own units.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .distributions import two_gaussians as _two_gaussians_mixture

__all__ = [
    "BUNDLED",
    "TOY",
    "Standardizer",
    "breast_cancer",
    "checkerboard",
    "digits",
    "eight_gaussians",
    "load_data",
    "load_table",
    "moons",
    "pinwheel",
    "rings",
    "swiss_roll",
    "two_gaussians",
]


def _uniform(n: int, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return int(n)


def two_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The tutorials' mixture ``0.8 N(-(5, 5), I) + 0.2 N((5, 5), I)`` (``distributions.two_gaussians``)."""
    return _two_gaussians_mixture().sample(_check_n(n), generator=generator)


def eight_gaussians(
    n: int, generator: torch.Generator | None = None, radius: float = 2.0, std: float = 0.1
) -> torch.Tensor:
    """Eight equal Gaussians at angles ``k pi / 4`` on a circle of ``radius`` (Grathwohl et al. 2019)."""
    n = _check_n(n)
    k = torch.randint(8, (n,), generator=generator)
    angle = k * (math.pi / 4)
    centers = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centers + std * _normal((n, 2), generator)


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons``), centred near the origin."""
    n = _check_n(n)
    angle = _uniform(n, generator, 0.0, math.pi)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    points = torch.stack([x - 0.5, y - 0.25], dim=1)
    return points + noise * _normal((n, 2), generator)


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.2) -> torch.Tensor:
    """The 2-D swiss roll ``(t cos t, t sin t) / 5``, ``t ~ U(1.5 pi, 4.5 pi)`` (sklearn make_swiss_roll)."""
    n = _check_n(n)
    t = _uniform(n, generator, 1.5 * math.pi, 4.5 * math.pi)
    points = torch.stack([t * t.cos(), t * t.sin()], dim=1)
    return (points + noise * _normal((n, 2), generator)) / 5


def rings(
    n: int,
    generator: torch.Generator | None = None,
    radii: tuple[float, ...] = (1.0, 2.0, 3.0),
    noise: float = 0.08,
) -> torch.Tensor:
    """Concentric circles of ``radii``, each holding points in proportion to its length."""
    n = _check_n(n)
    radii_t = torch.tensor(radii, dtype=torch.float32)
    ring = torch.multinomial(radii_t / radii_t.sum(), n, replacement=True, generator=generator)
    angle = _uniform(n, generator, 0.0, 2 * math.pi)
    points = radii_t[ring, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return points + noise * _normal((n, 2), generator)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the eight black squares of a 4x4 checkerboard covering ``[-2, 2]^2`` (FFJORD)."""
    n = _check_n(n)
    x = _uniform(n, generator, -2.0, 2.0)
    y = _uniform(n, generator, 0.0, 1.0) - 2 * torch.randint(2, (n,), generator=generator)
    y = y + torch.floor(x) % 2  # shift to the square of the other colour in odd columns
    return torch.stack([x, y], dim=1)


def pinwheel(
    n: int,
    generator: torch.Generator | None = None,
    n_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> torch.Tensor:
    """Gaussian blobs bent into ``n_arms`` spiral arms (Johnson et al. 2016; FFJORD's pinwheel)."""
    n = _check_n(n)
    arm = torch.randint(n_arms, (n,), generator=generator)
    feature = _normal((n, 2), generator) * torch.tensor([radial_std, tangential_std])
    feature[:, 0] += 1.0
    angle = arm * (2 * math.pi / n_arms) + rate * torch.exp(feature[:, 0])
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    return 2 * (rotation @ feature[:, :, None]).squeeze(-1)


TOY: dict[str, Callable[..., torch.Tensor]] = {
    "two_gaussians": two_gaussians,
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "swiss_roll": swiss_roll,
    "rings": rings,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
}


def digits(images: bool = False) -> torch.Tensor:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16): ``[N, 64]``, or ``[N, 1, 8, 8]``."""
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().data.astype(np.float32))
    return x.reshape(-1, 1, 8, 8) if images else x


def breast_cancer() -> torch.Tensor:
    """scikit-learn's bundled Wisconsin breast-cancer table: 569 examples, 30 features, ``[N, 30]``."""
    from sklearn.datasets import load_breast_cancer

    return torch.from_numpy(load_breast_cancer().data.astype(np.float32))


BUNDLED: dict[str, Callable[[], torch.Tensor]] = {
    "digits": digits,
    "digits_images": lambda: digits(images=True),
    "breast_cancer": breast_cancer,
}


def _first_bad_row(values: np.ndarray) -> int | None:
    bad = ~np.isfinite(values).reshape(values.shape[0], -1).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def _read_csv(path: Path) -> np.ndarray:
    """Rows of numbers; a first row that is not numeric is taken as a header and skipped."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: the file holds no rows")

    def parse(row: list[str]) -> list[float]:
        return [float(cell) for cell in row]

    try:
        parse(rows[0])
    except ValueError:
        rows = rows[1:]  # a header
    values = []
    for i, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise ValueError(f"{path}: row {i} has {len(row)} columns but row 0 has {len(rows[0])}")
        try:
            values.append(parse(row))
        except ValueError:
            raise ValueError(f"{path}: row {i} holds a value that is not a number: {row}") from None
    if not values:
        raise ValueError(f"{path}: the file holds a header but no rows")
    return np.asarray(values, dtype=np.float64)


def load_table(path: str | Path) -> torch.Tensor:
    """A table of numbers from a ``.npy`` or ``.csv`` file, one example per row: ``[N, d]`` float32.

    A 1-D array is one feature, ``[N, 1]``. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file and the first (0-based) row holding NaN or Inf, or anything else
    that is not a table of numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: not a numeric .npy array ({error})") from None
        if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
            raise ValueError(f"{path}: expected real numbers, found dtype {values.dtype}")
    elif suffix == ".csv":
        values = _read_csv(path)
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .npy or .csv")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty table [rows, features], got shape {values.shape}")
    bad = _first_bad_row(values)
    if bad is not None:
        raise ValueError(f"{path}: row {bad} contains NaN or Inf; remove or impute it")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


class DataSpec(Protocol):
    """What ``load_data`` reads (``config.DataConfig`` is one)."""

    name: str | None
    path: str | None
    n: int
    seed: int


def load_data(spec: DataSpec) -> torch.Tensor:
    """The training data a spec names: a file (``spec.path``), a toy (``spec.n`` draws seeded by
    ``spec.seed``) or a bundled data set (``spec.name``)."""
    if spec.path is not None:
        return load_table(spec.path)
    if spec.name in TOY:
        generator = torch.Generator().manual_seed(spec.seed)
        return TOY[spec.name](spec.n, generator=generator)
    if spec.name in BUNDLED:
        return BUNDLED[spec.name]()
    raise ValueError(
        f"unknown data set {spec.name!r}; choose one of {', '.join(sorted(TOY) + sorted(BUNDLED))}"
    )


class Standardizer:
    """Per-feature standardisation ``z = (x - mean) / std`` with its inverse and log-determinant.

    Features are everything after the batch dimension (a pixel of an image is one feature). A
    constant feature keeps ``std = 1``. If ``p_z`` is the density of standardised data, the density
    in data units is ``log p_x(x) = log p_z(z) + log_det`` with ``log_det = -sum log std``, the same
    for every example.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.mean, self.std = mean, std

    def fit(self, x: torch.Tensor, min_std: float = 1e-8) -> Standardizer:
        if x.ndim < 2 or x.shape[0] < 1:
            raise ValueError(f"need data [N, ...] with N >= 1, got shape {tuple(x.shape)}")
        x64 = x.to(torch.float64)
        std = x64.std(0, correction=0) if x.shape[0] > 1 else torch.ones_like(x64[0])
        self.mean = x64.mean(0).to(x.dtype)
        self.std = torch.where(std > min_std, std, torch.ones_like(std)).to(x.dtype)
        return self

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("the Standardizer is not fitted; call fit(x) first")
        return self.mean, self.std

    def _check(self, x: torch.Tensor) -> None:
        mean, _ = self._fitted()
        if tuple(x.shape[1:]) != tuple(mean.shape):
            raise ValueError(
                f"data have shape {tuple(x.shape[1:])} per example but the scaler was fitted on "
                f"{tuple(mean.shape)}"
            )

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        mean, std = self._fitted()
        return (x - mean.to(x)) / std.to(x)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        mean, std = self._fitted()
        return z * std.to(z) + mean.to(z)

    @property
    def log_det(self) -> torch.Tensor:
        """``log |det dz/dx| = -sum log std`` (0-d): add it to ``log p_z`` to get ``log p_x``."""
        return -self._fitted()[1].to(torch.float64).log().sum()

    def state_dict(self) -> dict[str, torch.Tensor]:
        mean, std = self._fitted()
        return {"mean": mean, "std": std}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Standardizer:
        return cls(state["mean"], state["std"])
