"""Data: 2-D toy samplers, scikit-learn's bundled tables, ``.npy`` / ``.csv`` files, and a scaler.

- Toys ``(n, generator=None) -> [n, 2]`` (float32), registered in ``TOY``: the tutorials' two-Gaussian
  mixture plus the usual benchmarks of the field (FFJORD's eight Gaussians, checkerboard, pinwheel,
  swiss roll; moons; concentric rings). Every draw comes from ``generator``.
- ``digits`` (8x8 handwritten digits, values 0..16) and ``breast_cancer`` (30 features): bundled with
  scikit-learn, so nothing is downloaded.
- ``read_table`` / ``load_table``: a ``.npy`` or ``.csv`` file of numbers, one example per row, with
  (``read_table``) the CSV header's column names; a row holding NaN or Inf is refused, named by its
  file line in a CSV and by its 0-based index in a ``.npy`` file.
- Images ``[N, C, H, W]`` in pixel units (float32 holding integers): ``digits(images=True)``, MNIST idx
  files (``read_idx``, ``mnist``), the CIFAR-10 binary batches (``read_cifar10``, ``cifar10``) and a
  folder of PNG/JPEG files (``image_folder``). ``IMAGE_LEVELS`` names the image data sets and their
  number of grey levels; nothing is downloaded, the user points ``data.path`` at files they have.
- ``Standardizer``: per-feature ``(x - mean) / std`` with its inverse and the log-determinant that
  turns a log-density of standardised data back into one of the data's own units; ``image_scaler``
  is the one that maps pixels to ``[-1, 1]``. ``random_hflip`` is the usual image augmentation.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from .distributions import two_gaussians as _two_gaussians_mixture
from .scalers import Standardizer

__all__ = [
    "BUNDLED",
    "IMAGE_FILES",
    "IMAGE_LEVELS",
    "TOY",
    "Standardizer",
    "breast_cancer",
    "checkerboard",
    "cifar10",
    "digits",
    "eight_gaussians",
    "image_folder",
    "image_scaler",
    "DigitsSplit",
    "digits_split",
    "default_columns",
    "load_data",
    "load_table",
    "read_data",
    "read_table",
    "mnist",
    "moons",
    "pinwheel",
    "random_hflip",
    "read_cifar10",
    "read_idx",
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


class DigitsSplit(NamedTuple):
    """Images ``[N, 1, 8, 8]`` float32 in pixel units (integers 0..16) and labels ``[N]`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplit:
    """The train/test split of scikit-learn's digits used by every digits number in scorefield.

    Stratified: in each class, a fraction ``test_fraction`` (rounded) of its images, chosen by a
    permutation seeded by ``seed``, goes to the test side. The defaults give 1438 training and 359
    test images (35 to 37 of each digit).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    x = digits(images=True)
    y = torch.from_numpy(load_digits().target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    is_test = torch.zeros(x.shape[0], dtype=torch.bool)
    for c in range(10):
        members = perm[y[perm] == c]
        is_test[members[: round(test_fraction * members.numel())]] = True
    return DigitsSplit(x[~is_test], y[~is_test], x[is_test], y[is_test])


BUNDLED: dict[str, Callable[[], torch.Tensor]] = {
    "digits": digits,
    "digits_images": lambda: digits(images=True),
    "digits_images_train": lambda: digits_split().x_train,  # the split every digits number is measured on
    "digits_images_test": lambda: digits_split().x_test,
    "breast_cancer": breast_cancer,
}


# --------------------------------------------------------------------------------------------------
# image files: MNIST idx, CIFAR-10 binary batches, folders of PNG/JPEG

IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CIFAR10_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32x32 planes
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    return path


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic ``1f 8b`` (whatever its suffix)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: not a valid gzip file ({error})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """An array in LeCun's IDX format (MNIST; raw or gzipped): ``[N, ...]`` in native byte order.

    Header: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each size as a big-endian uint32;
    the values follow, big-endian. MNIST's images have magic 2051 (``00 00 08 03``), its labels 2049.
    """
    path = _existing(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file (magic {raw[:4].hex()}; MNIST's are 00000803 and 00000801)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: the IDX header is cut short")
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: the header promises shape {shape} ({expected} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def mnist(path: str | Path) -> torch.Tensor:
    """MNIST-style images from an idx file (e.g. ``train-images-idx3-ubyte[.gz]``): ``[N, 1, H, W]``
    float32 holding 0..255."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{path}: expected unsigned-byte images [N, H, W] (magic 2051), got {images.dtype} of shape "
            f"{images.shape}"
        )
    return torch.from_numpy(images.astype(np.float32))[:, None]


def _cifar10_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("data_batch_*.bin"))
        if not files:
            raise ValueError(f"{path}: the folder holds no data_batch_*.bin files of CIFAR-10")
        return files
    return [path]


def read_cifar10(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's binary format: records of 1 label byte and 3072 pixel bytes (the red, green, blue
    32x32 planes, row-major). ``path`` is one ``.bin`` file or a folder of ``data_batch_*.bin``, read
    in order. Returns images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` uint8."""
    images, labels = [], []
    for file in _cifar10_files(_existing(path)):
        raw = _read_bytes(file)
        if not raw or len(raw) % CIFAR10_RECORD:
            raise ValueError(
                f"{file}: {len(raw)} bytes is not a whole number of CIFAR-10 records ({CIFAR10_RECORD} bytes)"
            )
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
        labels.append(records[:, 0])
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def cifar10(path: str | Path) -> torch.Tensor:
    """CIFAR-10 images (see ``read_cifar10``): ``[N, 3, 32, 32]`` float32 holding 0..255."""
    return torch.from_numpy(read_cifar10(path)[0].astype(np.float32))


def image_folder(path: str | Path) -> torch.Tensor:
    """Every ``.png`` / ``.jpg`` / ``.jpeg`` file under a folder (sorted by path, subfolders too), all of
    one size: ``[N, 1, H, W]`` when every file is greyscale, else ``[N, 3, H, W]`` (RGB); float32
    holding 0..255. Palette images are expanded and alpha channels dropped."""
    from PIL import Image

    folder = _existing(path)
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder of PNG or JPEG images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: the folder holds no .png, .jpg or .jpeg files")
    pictures = []
    for file in files:
        try:
            with Image.open(file) as picture:
                picture.load()
        except OSError as error:
            raise ValueError(f"{file}: not a readable image ({error})") from None
        if picture.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"):
            raise ValueError(f"{file}: image mode {picture.mode} is not 8-bit greyscale or colour")
        if pictures and picture.size != pictures[0].size:
            raise ValueError(
                f"{file}: size {picture.size} differs from {pictures[0].size} of {files[0]}; resize them alike"
            )
        pictures.append(picture.convert("RGBA").convert("RGB") if picture.mode == "P" else picture)
    grey = all(picture.mode in ("1", "L", "LA") for picture in pictures)
    arrays = [np.asarray(picture.convert("L" if grey else "RGB"), dtype=np.uint8) for picture in pictures]
    images = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    images = images[:, None] if grey else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(images.astype(np.float32))


IMAGE_FILES: dict[str, Callable[[str | Path], torch.Tensor]] = {
    "mnist": mnist,
    "cifar10": cifar10,
    "image_folder": image_folder,
}
# every image data set and its number of grey levels per channel (pixel values 0 .. levels - 1)
IMAGE_LEVELS: dict[str, int] = {
    "digits_images": 17,
    "digits_images_train": 17,
    "digits_images_test": 17,
    "mnist": 256,
    "cifar10": 256,
    "image_folder": 256,
}


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``[B, C, H, W]`` mirrored left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _first_bad_row(values: np.ndarray) -> int | None:
    """The first row holding NaN, Inf or a number beyond float32's range (it would become Inf), else None."""
    with np.errstate(over="ignore"):
        finite = np.isfinite(values.astype(np.float32))
    bad = ~finite.reshape(values.shape[0], -1).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def default_columns(d: int) -> tuple[str, ...]:
    """The names ``x0 .. x{d-1}`` of data whose features have no names of their own."""
    return tuple(f"x{i}" for i in range(d))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV file, each with its 1-based line number in the file."""
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not a readable CSV text file ({error})") from None


def _parse_row(path: Path, line: int, row: list[str], names: tuple[str, ...] | None) -> list[float]:
    values = []
    for j, cell in enumerate(row):
        try:
            values.append(float(cell))
        except ValueError:
            column = repr(names[j]) if names else str(j + 1)
            raise ValueError(
                f"{path} line {line}: {cell.strip()!r} in column {column} is not a number; fix or remove the row"
            ) from None
    return values


def _read_csv(path: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Rows of numbers and the header's names: a first row that is not all numbers is the header (else
    the names are None). Errors name the file line, 1-based and counting the header line."""
    rows = _csv_rows(path)
    if not rows:
        raise ValueError(f"{path}: the file holds no rows; write one example per row")
    names = None
    if not all(_is_number(cell) for cell in rows[0][1]):
        names = tuple(cell.strip() for cell in rows[0][1])
    first_line, first = rows[0]
    data = rows[1:] if names else rows
    if not data:
        raise ValueError(f"{path}: the file holds a header but no rows; write one example per row")
    values = []
    for line, row in data:
        if len(row) != len(first):
            raise ValueError(
                f"{path} line {line} has {len(row)} columns but line {first_line} has {len(first)}; "
                "give every row the same columns"
            )
        values.append(_parse_row(path, line, row, names))
    array = np.asarray(values, dtype=np.float64)
    bad = _first_bad_row(array)
    if bad is not None:
        raise ValueError(
            f"{path} line {data[bad][0]}: the row holds NaN, Inf or a number beyond ±3.4e38; remove or impute it"
        )
    return array, names


def _read_npy(path: Path) -> np.ndarray:
    """A real-valued array from a ``.npy`` file (no pickles); a row holding NaN or Inf is named 0-based."""
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a numeric .npy array ({error})") from None
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"{path}: expected real numbers, found dtype {values.dtype}")
    if values.ndim in (1, 2) and values.size:
        bad = _first_bad_row(values)
        if bad is not None:
            raise ValueError(
                f"{path}: row {bad} (0-based) contains NaN, Inf or a number beyond ±3.4e38; remove or impute it"
            )
    return values


def read_table(path: str | Path) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """A table of numbers from a ``.npy`` or ``.csv`` file, one example per row: ``[N, d]`` float32,
    and the names of its columns (a CSV's header; None for a ``.npy`` file or a CSV without one).

    A 1-D array is one feature, ``[N, 1]``. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for anything that is not a table of finite numbers: a bad row is named by its file
    line in a CSV (1-based, counting the header line) and by its 0-based index in a ``.npy`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    names = None
    if suffix == ".npy":
        values = _read_npy(path)
    elif suffix == ".csv":
        values, names = _read_csv(path)
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .npy or .csv")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty table [rows, features], got shape {values.shape}")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), names


def load_table(path: str | Path) -> torch.Tensor:
    """The numbers of ``read_table(path)``, ``[N, d]`` float32, without the column names."""
    return read_table(path)[0]


class DataSpec(Protocol):
    """What ``load_data`` reads (``config.DataConfig`` is one)."""

    name: str | None
    path: str | None
    n: int
    seed: int


def read_data(spec: DataSpec) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The training data a spec names (see ``load_data``) and the names of their features: a CSV's
    header, else ``x0, x1, ...`` (``default_columns``; one per feature of a flattened example)."""
    names = None
    if spec.name in IMAGE_FILES:
        if spec.path is None:
            raise ValueError(f"data set {spec.name!r} is read from files: set data.path to them")
        x = IMAGE_FILES[spec.name](spec.path)
    elif spec.path is not None:
        x, names = read_table(spec.path)
    elif spec.name in TOY:
        generator = torch.Generator().manual_seed(spec.seed)
        x = TOY[spec.name](spec.n, generator=generator)
    elif spec.name in BUNDLED:
        x = BUNDLED[spec.name]()
    else:
        raise ValueError(
            f"unknown data set {spec.name!r}; choose one of "
            f"{', '.join(sorted(TOY) + sorted(BUNDLED) + sorted(IMAGE_FILES))}"
        )
    return x, names or default_columns(math.prod(x.shape[1:]))


def load_data(spec: DataSpec) -> torch.Tensor:
    """The training data a spec names: image files of a format in ``IMAGE_FILES`` (``spec.name``, read
    from ``spec.path``), a table (``spec.path``), a toy (``spec.n`` draws seeded by ``spec.seed``) or a
    bundled data set (``spec.name``)."""
    return read_data(spec)[0]


def image_scaler(shape: tuple[int, ...], levels: int) -> Standardizer:
    """Pixels with ``levels`` values ``0 .. levels - 1`` to ``[-1, 1]``: ``z = 2 x / levels - 1``.

    A ``Standardizer`` with mean and std ``levels / 2`` in every feature of ``shape``, so runs store
    and rebuild it like any other. Dequantized pixels ``k + u`` (``u ~ U[0, 1)``) fill ``[-1, 1)``
    exactly, bins of width 1 in pixel units have width ``2 / levels`` in ``z``, and
    ``log_det = -d log(levels / 2)`` turns ``log p_z`` into a density in pixel units
    (docs/math.md#images-dequantisation-and-bits-per-dimension; use ``likelihood.bits_per_dim`` with
    ``bin_width = 1`` on it).
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    half = torch.full(tuple(shape), levels / 2)
    return Standardizer(half, half.clone())
