"""Tables of numbers from ``.npy`` or ``.csv`` files, one example per row.

``read_table`` returns the numbers and the CSV header's column names, ``load_table`` the numbers
alone; a row holding NaN or Inf is refused, named by its file line in a CSV and by its 0-based index
in a ``.npy`` file. ``read_labelled_table`` takes one column of a CSV apart as class labels (any text).
``default_columns`` names the features of data without names of their own.

A CSV is read as UTF-8, a byte-order mark (as Excel writes it) dropped. Its first line is a header when
``header`` is True, data when False, and when None (the default) a header if it is not all numbers.
Numbers are read as NumPy's own reader (``np.loadtxt``) reads them: ASCII digits, a point, an exponent,
``inf`` and ``nan``; ``1_000``, Arabic-Indic or full-width digits are not numbers, though Python's
``float`` takes them. A CSV larger than ``MAX_CSV_BYTES`` is refused before it is read (its cells
become Python objects first); a ``.npy`` file's header is read first and a shape that the file's size
cannot hold is refused before anything is allocated (``read_npy``).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "MAX_CSV_BYTES",
    "csv_header",
    "default_columns",
    "load_table",
    "read_labelled_table",
    "read_npy",
    "read_table",
]

MAX_CSV_BYTES = 256 * 2**20  # larger tables belong in a .npy file (numpy.save), read without this limit
# a number as np.loadtxt reads it: ASCII only, no digit separators
_NUMBER = re.compile(
    r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)\s*", re.ASCII | re.IGNORECASE
)


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
    return _NUMBER.fullmatch(cell) is not None


def _csv_rows(path: Path, first_only: bool = False) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV file (``first_only``: the first), each with its 1-based line number."""
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise ValueError(
            f"{path} holds {size / 2**20:.0f} MiB of text, more than the {MAX_CSV_BYTES >> 20} MiB a CSV may "
            "hold; save the table as .npy (numpy.save), which has no such limit"
        )
    rows = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append((reader.line_num, row))
                    if first_only:
                        break
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not a readable CSV text file ({error})") from None
    return rows


def _parse_row(
    path: Path, line: int, row: list[str], names: tuple[str, ...] | None, first: bool
) -> list[float]:
    values = []
    for j, cell in enumerate(row):
        if not _is_number(cell):
            column = repr(names[j]) if names else str(j + 1)
            hint = (
                "; if it is a header, say so (data.header = true, --header)"
                if first
                else "; fix or remove the row"
            )
            raise ValueError(f"{path} line {line}: {cell.strip()!r} in column {column} is not a number{hint}")
        values.append(float(cell))
    return values


def _header(row: list[str], header: bool | None) -> tuple[str, ...] | None:
    """The column names of a CSV whose first row is ``row`` (None: the row is data)."""
    if header is None:
        header = not all(_is_number(cell) for cell in row)
    return tuple(cell.strip() for cell in row) if header else None


def csv_header(path: str | Path, header: bool | None = None) -> tuple[str, ...] | None:
    """The names in the header of a CSV file as ``read_table`` reads it (None: it has none), reading
    only its first line."""
    rows = _csv_rows(Path(path), first_only=True)
    return _header(rows[0][1], header) if rows else None


def _label_index(path: Path, names: tuple[str, ...] | None, label_column: str | None) -> int | None:
    if label_column is None:
        return None
    if names is None or label_column not in names:
        found = f"its columns are {', '.join(names)}" if names else "it has no header line naming its columns"
        raise ValueError(f"{path} has no column {label_column!r} to read the labels from; {found}")
    return names.index(label_column)


def _read_csv(
    path: Path, label_column: str | None = None, header: bool | None = None
) -> tuple[np.ndarray, tuple[str, ...] | None, list[str] | None]:
    """Rows of numbers, the header's names and, with ``label_column``, that column's cells (taken out of
    the rows and the names): the first row is the header as ``header`` says (None: when it is not all
    numbers; else the names are None). Errors name the file line, 1-based and counting the header line."""
    rows = _csv_rows(path)
    if not rows:
        raise ValueError(f"{path}: the file holds no rows; write one example per row")
    names = _header(rows[0][1], header)
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
        values.append(_parse_row(path, line, row, names, line == first_line))
    array = np.asarray(values, dtype=np.float64)
    bad = _first_bad_row(array)
    if bad is not None:
        raise ValueError(
            f"{path} line {data[bad][0]}: the row holds NaN, Inf or a number beyond ±3.4e38; remove or impute it"
        )
    return array, names, labels


def read_npy(path: str | Path) -> np.ndarray:
    """The array of a ``.npy`` file, no pickles: its header is read first, and a shape that the file's
    size cannot hold (a few hundred bytes claiming 10^12 rows) is refused before anything is
    allocated. ``ValueError`` for anything that is not a plain ``.npy`` array."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(
                    f".npy format version {version[0]}.{version[1]} is not read here; use numpy.save"
                )
        except (ValueError, EOFError, SyntaxError) as error:
            raise ValueError(f"{path}: not a .npy array ({error})") from None
        if dtype.hasobject:
            raise ValueError(f"{path}: not a numeric .npy array (it holds Python objects, dtype {dtype})")
        claimed, held = math.prod(shape) * dtype.itemsize, size - f.tell()
        if claimed > held:
            raise ValueError(
                f"{path}: its header claims shape {shape} of {dtype} ({claimed} bytes) but the file holds "
                f"{held} bytes of data; the file is cut short or not what it claims"
            )
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, EOFError) as error:
            raise ValueError(f"{path}: not a .npy array ({error})") from None


def _read_npy(path: Path) -> np.ndarray:
    """A real-valued array from a ``.npy`` file (``read_npy``); a row holding NaN or Inf is named 0-based."""
    try:
        values = read_npy(path)
    except ValueError as error:
        raise ValueError(str(error).replace("not a .npy array", "not a numeric .npy array")) from None
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"{path}: expected real numbers, found dtype {values.dtype}")
    if values.ndim in (1, 2) and values.size:
        bad = _first_bad_row(values)
        if bad is not None:
            raise ValueError(
                f"{path}: row {bad} (0-based) contains NaN, Inf or a number beyond ±3.4e38; remove or impute it"
            )
    return values


def read_table(
    path: str | Path, header: bool | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """A table of numbers from a ``.npy`` or ``.csv`` file, one example per row: ``[N, d]`` of ``dtype``,
    and the names of its columns (a CSV's header; None for a ``.npy`` file or a CSV without one).
    ``header``: whether a CSV's first line is a header (None: when it is not all numbers).

    A 1-D array is one feature, ``[N, 1]``. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for anything that is not a table of finite numbers: a bad row is named by its file
    line in a CSV (1-based, counting the header line) and by its 0-based index in a ``.npy`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    names = None
    if header is not None and suffix != ".csv":
        raise ValueError(f"{path}: a header line belongs to a .csv file, not {suffix!r}")
    if suffix == ".npy":
        values = _read_npy(path)
    elif suffix == ".csv":
        values, names, _ = _read_csv(path, header=header)
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .npy or .csv")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty table [rows, features], got shape {values.shape}")
    as_numpy = np.float64 if dtype == torch.float64 else np.float32
    return torch.from_numpy(np.ascontiguousarray(values, dtype=as_numpy)).to(dtype), names


def load_table(path: str | Path) -> torch.Tensor:
    """The numbers of ``read_table(path)``, ``[N, d]`` float32, without the column names."""
    return read_table(path)[0]


def read_labelled_table(
    path: str | Path, label_column: str, header: bool | None = None
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
    values, names, labels = _read_csv(path, label_column, header)
    if values.shape[1] == 0:
        raise ValueError(f"{path}: besides the labels ({label_column!r}) the file has no columns of numbers")
    numeric = all(_is_number(label) for label in labels)
    classes = tuple(sorted(set(labels), key=(lambda c: (float(c), c)) if numeric else None))
    index = {name: k for k, name in enumerate(classes)}
    y = torch.tensor([index[label] for label in labels], dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), names, y, classes
