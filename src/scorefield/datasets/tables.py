"""Tables of numbers from ``.npy`` or ``.csv`` files, one example per row.

``read_table`` returns the numbers and the CSV header's column names, ``load_table`` the numbers
alone; a row holding NaN or Inf is refused, named by its file line in a CSV and by its 0-based index
in a ``.npy`` file. ``default_columns`` names the features of data without names of their own.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

__all__ = ["default_columns", "load_table", "read_table"]


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
