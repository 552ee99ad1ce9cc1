"""What the command line reads and writes: flag values, files checked before any work, arrays, messages.

Every user error here is a ``UsageError``, which ``main`` reports as one line with exit status 2.
Outputs are checked writable before any compute (``check_writable``) and written whole, atomically
(``write_array``, ``write_figure``), so a failure never damages a good file. Under torchrun only
process 0 speaks (``say``).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..datasets import MAX_CSV_BYTES, default_columns, read_npy, read_table
from ..files import atomic_write
from ..run.train import RunError

__all__ = [
    "ARRAY_SUFFIXES",
    "PROG",
    "UsageError",
    "check_writable",
    "device_flag",
    "is_main_process",
    "output_path",
    "positive_int",
    "refuse_non_finite",
    "read_data",
    "read_mask",
    "say",
    "write_array",
    "write_figure",
]

PROG = "scorefield"
ARRAY_SUFFIXES = (".npy", ".csv")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class UsageError(Exception):
    """Bad input on the command line; reported as one line with exit status 2."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str, stream=None) -> None:
    if is_main_process():
        print(message, file=stream or sys.stdout, flush=True)


# --------------------------------------------------------------------------------------------------
# flag values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def device_flag(name: str) -> str:
    """``name`` if it names a device of this machine: "auto", "cpu", "cuda" or "cuda:k" (else UsageError)."""
    if not DEVICE.fullmatch(name):
        raise UsageError(f'device {name!r} is unknown; use "cpu", "cuda" or "cuda:k"')
    if name.startswith("cuda"):
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise UsageError(
                f"device {name} is not available: this machine has {count} CUDA device(s); use cpu"
            )
    return name


def output_path(suffixes: tuple[str, ...]):
    """An argparse type: a path ending in one of ``suffixes``."""

    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r} must end in {' or '.join(suffixes)}")
        return path

    return parse


def check_writable(path: Path, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file (``folder``: a folder) whose
    path is taken by the other kind, a path below a file, or a location that accepts no new files.

    Missing folders on the way are fine (they are created when the output is written); the test is
    to create and delete a temporary file in the nearest folder that exists.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UsageError(
            f"cannot write {path}: it is a symbolic link to {os.readlink(path)}, which does not exist; "
            "name another path"
        )
    if path.exists() and path.is_dir() != folder:
        raise UsageError(f"cannot write {path}: it is a {'file' if folder else 'folder'}; name another path")
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot write {path}: {ancestor} is a file, not a folder; name another path")
    try:
        handle, probe = tempfile.mkstemp(dir=ancestor, prefix=f".{PROG}-probe-")
    except OSError as error:
        raise UsageError(
            f"cannot write {path}: {ancestor} accepts no new files ({error.strerror}); name another path"
        ) from None
    os.close(handle)
    os.unlink(probe)


# --------------------------------------------------------------------------------------------------
# reading and writing arrays and figures


def read_data(
    path: Path, data_shape: tuple[int, ...], header: bool | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """A data file as ``[N, *data_shape]`` of ``dtype`` (a flat row is reshaped to an image of the run's
    shape; a ``.npy`` file may also hold images ``[N, *data_shape]``, as ``sample`` writes them) and its
    column names (a CSV's header, as ``header`` says; else None)."""
    try:
        x, names = read_table(path, header, dtype)
    except (OSError, ValueError) as error:
        images = _read_images(path, data_shape)
        if images is None:
            raise UsageError(str(error)) from None
        return images.to(dtype), None
    numel = int(np.prod(data_shape))
    if len(data_shape) > 1 and x.shape[1] == numel:
        x = x.reshape(-1, *data_shape)
    return x, names


def _read_images(path: Path, data_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The images of a ``.npy`` file shaped ``[N, *data_shape]``, ``data_shape`` an image's; None for any
    other file (``read_table``'s error then stands). A row with NaN or Inf is refused, named 0-based."""
    if Path(path).suffix.lower() != ".npy" or len(data_shape) < 2 or not Path(path).is_file():
        return None
    try:
        values = read_npy(path)
    except (ValueError, OSError):
        return None
    if values.shape[1:] != tuple(data_shape) or not values.shape[0]:
        return None
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise UsageError(f"{path}: expected real numbers, found dtype {values.dtype}")
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(values.astype(np.float32)).reshape(values.shape[0], -1).all(1)
    if bad.any():
        raise UsageError(
            f"{path}: row {int(np.argmax(bad))} (0-based) contains NaN, Inf or a number beyond ±3.4e38; "
            "remove it"
        )
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def read_mask(path: Path, x: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """The mask file of ``inpaint`` for the rows ``x`` (``[N, *shape]``), as booleans shaped like ``x``
    (True = observed, kept; False = to fill), and its column names (a CSV's header, else None).

    ``.npy`` (booleans or numbers) or ``.csv`` (numbers), holding only 0 and 1: as many rows as ``x``,
    or one row for every row; each row flat or shaped like one example, as the data may be. Anything
    else is a ``UsageError`` naming the problem."""
    path, names = Path(path), None
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise UsageError(f"mask {path}: unknown format {path.suffix!r}; use .npy or .csv")
    if not path.is_file():
        raise UsageError(f"mask file {path} does not exist")
    if path.suffix.lower() == ".csv":
        try:
            table, names = read_table(path)
        except (OSError, ValueError) as error:
            raise UsageError(f"mask {error}") from None
        values = table.numpy()
    else:
        try:
            values = read_npy(path)
        except (ValueError, OSError) as error:
            raise UsageError(f"mask {error}") from None
        real = np.issubdtype(values.dtype, np.number) and not np.iscomplexobj(values)
        if values.dtype != np.bool_ and not real:
            raise UsageError(f"mask {path}: expected 0 and 1 or booleans, found dtype {values.dtype}")
        values = values[:, None] if values.ndim == 1 else values
    rows, shape = values.shape[0] if values.ndim else 0, tuple(x.shape[1:])
    if values.ndim < 2 or rows not in (1, x.shape[0]) or values[0].size != int(np.prod(shape)):
        raise UsageError(
            f"mask {path} has shape {values.shape} but the data have {tuple(x.shape)}: give the mask the "
            "data's shape (one row per data row), or one row for every row"
        )
    bad = ~((values == 0) | (values == 1))
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UsageError(
            f"mask {path} holds {values[at].item()!r} (row {at[0]}, 0-based): a mask holds only 1 "
            "(observed, kept) and 0 (to fill)"
        )
    mask = torch.from_numpy(values.astype(bool).reshape(rows, *shape))
    return mask.expand(x.shape), names


def read_labels(path: Path, n: int) -> list[str]:
    """The ``--labels`` file of ``inpaint``: one label per row of the ``n`` data rows, as text (a class name
    or an index, which ``Run.label_index`` reads). ``.npy`` (a 1-D array of integers or strings) or a text
    file (``.txt``, ``.csv``: one label per line). Anything else is a ``UsageError`` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            values = read_npy(path)
        except (ValueError, OSError) as error:
            raise UsageError(f"labels {error}") from None
        if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or values.dtype.kind == "U"):
            raise UsageError(
                f"labels {path}: expected a 1-D array of integers or strings, found {values.dtype} of "
                f"shape {values.shape}"
            )
        labels = [str(v) for v in values.tolist()]
    else:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise UsageError(f"labels {path} is larger than {MAX_CSV_BYTES >> 20} MiB; save them as .npy")
        try:
            labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"labels {path}: not a text file of one label per line ({error})") from None
    if len(labels) != n:
        raise UsageError(f"labels {path} holds {len(labels)} labels for {n} rows of data: give one per row")
    return labels


def refuse_non_finite(values: np.ndarray | torch.Tensor, what: str) -> None:
    """``RunError`` naming the first row of ``values`` (``[N, ...]``) that holds NaN or Inf: a result that
    is not finite is never written or reported as one (the model or its settings diverged)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) or not values.size:
        return
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if bad.any():
        raise RunError(
            f"{int(bad.sum())} of {values.shape[0]} {what} hold NaN or infinite values (the first: row "
            f"{int(np.argmax(bad))}, 0-based); nothing was written: the run's model or its settings diverge"
        )


def write_array(
    path: Path, columns: dict[str, np.ndarray] | np.ndarray, names: tuple[str, ...] | None = None
) -> None:
    """``.npy``: the array (a dict's columns side by side); ``.csv``: a header line (the dict's keys, else
    ``names``, else ``x0, x1, ...``) and one row per example, integer columns written as integers.
    Written atomically; refused (``refuse_non_finite``) when a value is NaN or infinite."""
    for name, values in columns.items() if isinstance(columns, dict) else [("", columns)]:
        refuse_non_finite(values, f"rows ({name})" if name else "rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        array = np.stack(list(columns.values()), axis=1) if isinstance(columns, dict) else columns
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        atomic_write(path, buffer.getvalue())
        return
    if isinstance(columns, dict):
        header, values = list(columns), list(columns.values())
    else:
        rows = columns.reshape(columns.shape[0], -1)
        header, values = list(names or default_columns(rows.shape[1])), list(rows.T)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*(np.asarray(v).tolist() for v in values), strict=True))
    atomic_write(path, text.getvalue().encode())


def write_figure(path: Path, draw) -> None:
    """A figure written atomically: ``draw(tmp)`` writes it to a fresh temporary file of the same suffix
    (matplotlib and Pillow pick the format by it), which then replaces ``path`` whole."""
    atomic_write(path, draw)
