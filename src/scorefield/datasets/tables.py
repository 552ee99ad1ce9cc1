"""Tables of numbers from ``.npy`` or ``.csv`` files, one example per row.

``read_table`` returns the numbers and the CSV header's column names, ``load_table`` the numbers
alone; a row holding NaN or Inf is refused, named by its file line in a CSV and by its 0-based index
in a ``.npy`` file. ``read_labelled_table`` takes one column of a CSV apart as class labels (any text).
``default_columns`` names the features of data without names of their own.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

__all__ = ["default_columns", "load_table", "read_labelled_table", "read_table"]


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


def _label_index(path: Path, names: tuple[str, ...] | None, label_column: str | None) -> int | None:
    if label_column is None:
        return None
    if names is None or label_column not in names:
        found = f"its columns are {', '.join(names)}" if names else "it has no header line naming its columns"
        raise ValueError(f"{path} has no column {label_column!r} to read the labels from; {found}")
    return names.index(label_column)


def _read_csv(
    path: Path, label_column: str | None = None
) -> tuple[np.ndarray, tuple[str, ...] | None, list[str] | None]:
    """Rows of numbers, the header's names and, with ``label_column``, that column's cells (taken out of
    the rows and the names): a first row that is not all numbers is the header (else the names are
    None). Errors name the file line, 1-based and counting the header line."""
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
    at = _label_index(path, names, label_column)
    labels = None if at is None else []
    if at is not None:
        names = names[:at] + names[at + 1 :]
    values = []
    for line, row in data:
        if len(row) != len(first):
            raise ValueError(
                f"{path} line {line} has {len(row)} columns but line {first_line} has {len(first)}; "
                "give every row the same columns"
            )
        if at is not None:
            labels.append(row[at].strip())
            if not labels[-1]:
                raise ValueError(f"{path} line {line}: the label (column {label_column!r}) is empty")
            row = row[:at] + row[at + 1 :]
        values.append(_parse_row(path, line, row, names))
    array = np.asarray(values, dtype=np.float64)
    bad = _first_bad_row(array)
    if bad is not None:
        raise ValueError(
            f"{path} line {data[bad][0]}: the row holds NaN, Inf or a number beyond ±3.4e38; remove or impute it"
        )
    return array, names, labels


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
        values, names, _ = _read_csv(path)
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


def read_labelled_table(
    path: str | Path, label_column: str
) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor, tuple[str, ...]]:
    """A CSV table whose column ``label_column`` (named in its header) holds class labels, any text:
    the other columns as ``[N, d]`` float32 and their names, the labels as class indices ``[N]`` int64,
    and the class names, index ``k`` naming class ``k``. The classes are the distinct labels, in
    numeric order when all of them are numbers (``2`` before ``10``), else in alphabetical order.
    Errors as ``read_table``'s, and a ``ValueError`` for a missing column or an empty label.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix.lower() != ".csv":
        raise ValueError(
            f"{path}: labels are read from a column of a .csv file with a header, not {path.suffix!r}"
        )
    values, names, labels = _read_csv(path, label_column)
    if values.shape[1] == 0:
        raise ValueError(f"{path}: besides the labels ({label_column!r}) the file has no columns of numbers")
    numeric = all(_is_number(label) for label in labels)
    classes = tuple(sorted(set(labels), key=(lambda c: (float(c), c)) if numeric else None))
    index = {name: k for k, name in enumerate(classes)}
    y = torch.tensor([index[label] for label in labels], dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), names, y, classes
