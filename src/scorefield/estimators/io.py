"""What goes into and comes out of the scikit-learn estimators (``density``): the rows they are
given, checked and converted; the device and the random seeds they are told to use; and the pair of
files (safetensors weights, JSON parameters and fitted state) that ``save`` writes and ``load`` reads.
"""

from __future__ import annotations

import hashlib
import json
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_random_state

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6: the same checks as an estimator method

    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


from ..files import atomic_output
from ..utils import default_device, derive_seed, make_generator

__all__ = [
    "FORMAT",
    "LoadError",
    "CONSTANT_RTOL",
    "MIN_FIT_ROWS",
    "numeric_rows",
    "Streams",
    "read_pair",
    "resolve_device",
    "root_seed",
    "row_keys",
    "torch_seed",
    "validate_rows",
    "write_pair",
]

# fit needs MIN_FIT_ROWS rows (a held-out split of at least 2 is taken from them). A column whose
# standard deviation is at most CONSTANT_RTOL * (|mean| + 1) counts as constant and is refused: it has
# no density, and the whitener's floor would turn it into a spurious ~+2 nats per row.
MIN_FIT_ROWS, CONSTANT_RTOL = 10, 1e-12
# the format number of the files ``write_pair`` writes; ``read_pair`` reads only this one
FORMAT = 1
# torch seeds drawn from a numpy random state for ``sample`` lie in [0, SEED_HIGH)
SEED_HIGH = np.iinfo(np.int64).max


# -- rows ------------------------------------------------------------------------------------------
def validate_rows(
    estimator: BaseEstimator, X, reset: bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``X`` as a tensor of ``dtype`` that owns its memory; sets (``reset``, at ``fit``) or checks the
    estimator's ``n_features_in_`` and ``feature_names_in_`` through scikit-learn's ``validate_data``.

    At ``fit`` it also needs ``MIN_FIT_ROWS`` rows and no constant column. The copy is C-contiguous
    and writable whatever ``X`` was (``X[::-1]``, ``X[:, ::-1]``, a read-only DataFrame block), since
    ``torch.from_numpy`` accepts neither negative strides nor, silently, read-only memory.
    """
    ndim = getattr(X, "ndim", None)
    if ndim is not None and ndim != 2:
        raise ValueError(
            f"X must be 2-D [n_samples, n_features], got shape {tuple(np.shape(X))}. Reshape your data: "
            "X.reshape(-1, 1) for a single feature, X.reshape(1, -1) for a single row."
        )
    X = numeric_rows(estimator, X, reset)
    if reset:
        if len(X) < MIN_FIT_ROWS:
            raise ValueError(
                f"X has {len(X)} rows (n_samples={len(X)}), but fit needs at least {MIN_FIT_ROWS} (a held-out split of "
                "validation_fraction is taken from them); pass more rows."
            )
        _check_no_constant_column(X, getattr(estimator, "feature_names_in_", None))
    return torch.from_numpy(np.array(X, dtype=np.float64, order="C", copy=True)).to(dtype)


def numeric_rows(estimator: BaseEstimator, X, reset: bool, **checks) -> np.ndarray:
    """``validate_data(estimator, X, reset, dtype=float64, **checks)`` with two clearer refusals: a column
    of text (named, with the advice to drop it) and a value beyond float32's range, where the models
    compute (it would overflow there to infinity and the solvers fail deep inside)."""
    try:
        X = validate_data(estimator, X, reset=reset, dtype=np.float64, **checks)
    except ValueError as err:
        if "could not convert" not in str(err) and "convert string" not in str(err):
            raise
        _refuse_text_columns(X)
        raise
    names = getattr(estimator, "feature_names_in_", None)
    with np.errstate(invalid="ignore"):
        beyond = np.flatnonzero((np.abs(X) > np.finfo(np.float32).max).any(0))
    if beyond.size:
        raise ValueError(
            f"X has values beyond float32's range (about 3.4e38) in column(s) {_columns(beyond, names)}; "
            "the model computes in float32: rescale the column(s) (other units, a log) before using them."
        )
    return X


def _refuse_text_columns(X) -> None:
    """Raise naming the columns of ``X`` that hold text (a DataFrame's or an array's)."""
    columns = X.columns if hasattr(X, "columns") else None
    data = np.asarray(X, dtype=object)
    if data.ndim != 2:
        return
    bad, example = [], None
    for j in range(data.shape[1]):
        try:
            data[:, j].astype(np.float64)
        except (TypeError, ValueError):
            bad.append(j)
            if example is None:
                example = next(v for v in data[:, j] if isinstance(v, str) and not _is_number(v))
    if bad:
        names = None if columns is None else np.asarray([str(c) for c in columns], dtype=object)
        raise ValueError(
            f"X has text in column(s) {_columns(np.asarray(bad), names)} (e.g. {example!r}), which has "
            "no density; drop the column(s), or encode them as numbers, before passing X."
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _columns(indices: np.ndarray, names) -> str:
    """Column indices (with their names when known) for a message, at most ten."""
    listed = ", ".join(f"{j} ({names[j]!r})" if names is not None else str(j) for j in indices[:10])
    return listed + (f" and {indices.size - 10} more" if indices.size > 10 else "")


def _check_no_constant_column(X: np.ndarray, names: np.ndarray | None) -> None:
    """Refuse a column whose spread is at most ``CONSTANT_RTOL * (|mean| + 1)``: it has no density."""
    mean, std = X.mean(0), X.std(0)
    constant = np.flatnonzero(std <= CONSTANT_RTOL * (np.abs(mean) + 1))
    if not constant.size:
        return
    raise ValueError(
        f"X has {constant.size} constant column(s), index {_columns(constant, names)}, which have no density (each would "
        "add a spurious ~2 nats per row and spread its samples); drop the column(s) before fit."
    )


# -- device and seeds ------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists here (``None``: CUDA when available, else the CPU)."""
    try:
        resolved = default_device(device)
        torch.empty(0, device=resolved)  # an unknown name, no CUDA build, a missing GPU index: all fail here
    except (RuntimeError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"device={str(device)!r} is not available on this machine ({reason}); pass device='cpu', "
            "or device=None to use CUDA only when it is available."
        ) from None
    return resolved


class Streams:
    """Independent random streams named by purpose, all derived from one seed (``utils.derive_seed``, as
    runs derive theirs): ``seed("split")``, ``generator("batches")``. A new purpose never shifts the
    draws of another, as ``seed + k`` offsets would."""

    def __init__(self, seed: int):
        self.root = int(seed)

    def seed(self, purpose: str) -> int:
        return derive_seed(self.root, purpose)

    def generator(self, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
        return make_generator(self.seed(purpose), device)


def row_keys(X: np.ndarray) -> torch.Tensor:
    """A 64-bit hash of each row's float64 values (NaN and -0.0 made canonical first): ``[N]`` int64.

    Keys for ``KeyedNoise``: noise keyed by a row's values is the same whatever rows come with it."""
    X = np.asarray(X, dtype=np.float64)
    canonical = np.ascontiguousarray(np.where(np.isnan(X), np.nan, X) + 0.0)
    return torch.tensor(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
            for row in canonical
        ],
        dtype=torch.int64,
    )


def root_seed(random_state) -> int:
    """The seed every stream of a fit derives from: an int ``random_state`` itself, else one drawn from
    it (None: numpy's global random state; a ``RandomState``)."""
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(SEED_HIGH, dtype=np.int64))


def torch_seed(random_state) -> int:
    """A torch seed drawn from ``random_state``: None (numpy's global state), an int, a RandomState or Generator."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(SEED_HIGH))
    return int(check_random_state(random_state).randint(SEED_HIGH, dtype=np.int64))


# -- the saved pair of files -----------------------------------------------------------------------
def _json_default(value):
    """JSON for the numpy scalars and torch devices that ``get_params`` may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to JSON")


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_pair(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` to ``path`` (safetensors) and ``meta`` to ``path + '.json'``, the JSON stamped
    with ``FORMAT``, the library's version and the weights' size and SHA-256.

    Missing parent folders are created. Both files are first written beside their targets under
    temporary names and then renamed over them, so an interrupted write leaves any earlier pair
    whole and no partial file under the final names; a crash between the two renames leaves new
    weights beside an old JSON, which ``read_pair`` refuses by the hash.
    """
    path = Path(path)
    meta_path = _meta_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = save(tensors)
    stamp = {
        "format": FORMAT,
        "library": _library_version(),
        "weights_bytes": len(weights),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    text = json.dumps({**stamp, **meta}, indent=2, default=_json_default)
    # both temporaries are complete before either replaces its target (the side file first)
    with atomic_output(path) as tmp, atomic_output(meta_path) as tmp_meta:
        tmp.write_bytes(weights)
        tmp_meta.write_text(text)


def read_pair(path: str | Path, class_name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON side file and the tensors of a pair ``write_pair`` wrote for an estimator of class ``class_name``.

    Raises ``FileNotFoundError`` when either file is missing, and ``ValueError`` naming the path for
    anything else that keeps the pair from loading: unreadable JSON, another format or class, weights
    whose size or SHA-256 differ from what the JSON records (read only after the size matches), or
    weights that safetensors cannot read.
    """
    path = Path(path)
    meta_path = _meta_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"no saved estimator at path {str(path)!r} (expected it and {meta_path.name}); pass the "
            "file that save() wrote."
        )
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("its JSON side file is not an object")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise LoadError(path, f"its JSON side file cannot be read ({err})") from None
    if meta.get("format") != FORMAT:
        raise LoadError(path, f"it has format {meta.get('format')!r}, this library reads format {FORMAT}")
    if meta.get("class") != class_name:
        raise ValueError(
            f"path {str(path)!r} holds a {meta.get('class')}, not a {class_name}; load it with "
            f"{meta.get('class')}.load."
        )
    if path.stat().st_size != meta.get("weights_bytes"):
        raise LoadError(path, "its weights are not the ones its JSON side file was written with (size)")
    weights = path.read_bytes()
    if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise LoadError(path, "its weights are not the ones its JSON side file was written with (SHA-256)")
    try:
        return meta, load(weights)
    except Exception as err:  # safetensors raises its own error types for a malformed file
        raise LoadError(path, f"its weights cannot be read ({type(err).__name__}: {err})") from None


class LoadError(ValueError):
    """A saved estimator that cannot be loaded: one message naming the path and the reason."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot load the estimator saved at path {str(path)!r}: {reason}.")


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scorefield")
    except PackageNotFoundError:
        return "unknown"
