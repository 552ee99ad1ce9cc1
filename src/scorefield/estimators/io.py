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
from safetensors.torch import load_file, save_file
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
    "CONSTANT_RTOL",
    "MIN_FIT_ROWS",
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
# torch seeds drawn from a numpy random state for ``sample`` lie in [0, SEED_HIGH)
SEED_HIGH = np.iinfo(np.int64).max


# -- rows ------------------------------------------------------------------------------------------
def validate_rows(estimator: BaseEstimator, X, reset: bool) -> torch.Tensor:
    """``X`` as a float32 tensor that owns its memory; sets (``reset``, at ``fit``) or checks the
    estimator's ``n_features_in_`` and ``feature_names_in_`` through scikit-learn's ``validate_data``.

    At ``fit`` it also needs ``MIN_FIT_ROWS`` rows and no constant column. The copy is C-contiguous
    and writable whatever ``X`` was (``X[::-1]``, ``X[:, ::-1]``, a read-only DataFrame block), since
    ``torch.from_numpy`` accepts neither negative strides nor, silently, read-only memory.
    """
    ndim = getattr(X, "ndim", None)
    if ndim is not None and ndim != 2:
        raise ValueError(
            f"X must be 2-D [n_samples, n_features], got shape {tuple(np.shape(X))}; reshape a single "
            "feature with X.reshape(-1, 1) or a single row with X.reshape(1, -1)."
        )
    X = validate_data(estimator, X, reset=reset, dtype=np.float64)
    if reset:
        if len(X) < MIN_FIT_ROWS:
            raise ValueError(
                f"X has {len(X)} rows, but fit needs at least {MIN_FIT_ROWS} (a held-out split of "
                "validation_fraction is taken from them); pass more rows."
            )
        _check_no_constant_column(X, getattr(estimator, "feature_names_in_", None))
    return torch.from_numpy(np.array(X, dtype=np.float32, order="C", copy=True))


def _check_no_constant_column(X: np.ndarray, names: np.ndarray | None) -> None:
    """Refuse a column whose spread is at most ``CONSTANT_RTOL * (|mean| + 1)``: it has no density."""
    mean, std = X.mean(0), X.std(0)
    constant = np.flatnonzero(std <= CONSTANT_RTOL * (np.abs(mean) + 1))
    if not constant.size:
        return
    cols = ", ".join(f"{j} ({names[j]!r})" if names is not None else str(j) for j in constant[:10]) + (
        f" and {constant.size - 10} more" if constant.size > 10 else ""
    )
    raise ValueError(
        f"X has {constant.size} constant column(s), index {cols}, which have no density (each would "
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
    """Write ``tensors`` to ``path`` (safetensors) and ``meta`` to ``path + '.json'``.

    Missing parent folders are created. Both files are first written beside their targets under
    temporary names and then renamed over them, so an interrupted write leaves any earlier pair
    whole and no partial file under the final names.
    """
    path = Path(path)
    meta_path = _meta_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # both temporaries are complete before either replaces its target (the side file first)
    with atomic_output(path) as tmp, atomic_output(meta_path) as tmp_meta:
        save_file(tensors, str(tmp))
        tmp_meta.write_text(json.dumps(meta, indent=2, default=_json_default))


def read_pair(path: str | Path, class_name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON side file and the tensors of a pair ``write_pair`` wrote for an estimator of class ``class_name``.

    Raises ``FileNotFoundError`` when either file is missing and ``ValueError`` when they hold
    another class.
    """
    path = Path(path)
    meta_path = _meta_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"no saved estimator at path {str(path)!r} (expected it and {meta_path.name}); pass the "
            "file that save() wrote."
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("class") != class_name:
        raise ValueError(
            f"path {str(path)!r} holds a {meta.get('class')}, not a {class_name}; load it with "
            f"{meta.get('class')}.load."
        )
    return meta, load_file(str(path))
