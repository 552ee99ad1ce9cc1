"""Image files and image helpers. Images are ``[N, C, H, W]`` in pixel units (float32 holding integers).

- MNIST idx files (``read_idx``, ``mnist``), the CIFAR-10 binary batches (``read_cifar10``,
  ``cifar10``) and a folder of PNG/JPEG files (``image_folder``), registered in ``IMAGE_FILES``;
  nothing is downloaded, the user points ``data.path`` at files they have.
- ``IMAGE_LEVELS`` names every image data set (the bundled digits too) and its number of grey levels.
- ``image_scaler`` is the ``Standardizer`` that maps pixels to ``[-1, 1]``; ``random_hflip`` is the
  usual image augmentation.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..scalers import Standardizer

__all__ = [
    "IMAGE_FILES",
    "IMAGE_LEVELS",
    "cifar10",
    "image_folder",
    "image_scaler",
    "mnist",
    "random_hflip",
    "read_cifar10",
    "read_idx",
]

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
