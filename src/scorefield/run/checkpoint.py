"""Checkpoints without pickles: tensors in safetensors, everything else in a JSON sidecar.

A checkpoint of step ``k`` is two files in ``RUN/checkpoints/``:

- ``step-000000k.safetensors``: every tensor of the state (weights, EMA weights, optimizer moments,
  RNG states as uint8 tensors, scaler statistics) under its path in the state, e.g.
  ``optimizer.state.0.exp_avg``;
- ``step-000000k.json``: the state's structure with tensors replaced by references, the scalars
  (step, optimizer hyper-parameters, ...), free metadata (the config), and the size and SHA-256 of
  the safetensors file, and ``format``, the number of the layout (``FORMAT``).

Both are written atomically (temporary file in the same folder, flush, fsync, ``os.replace``, fsync
of the folder); the JSON goes last, so a checkpoint exists only once both are complete. Loading
checks everything before it allocates anything: the sidecar's size and structure, its format number
(a checkpoint of another format is refused, never converted), the weights file's size on disk against
the recorded one, and only then reads the weights and verifies their hash. Every fault is a
``CheckpointError``, so ``latest_good`` can walk back from the newest checkpoint to the newest one that
verifies. Nothing is ever read with ``pickle`` or ``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..files import atomic_write

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "checkpoint_dir",
    "latest_good",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = 3  # the sidecar's layout; bumped whenever what a checkpoint holds changes
MAX_SIDECAR_BYTES = 64 * 2**20  # a sidecar is structure and scalars: anything larger is not one of ours
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^step-(\d{7,})\.(safetensors|json)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class Checkpoint:
    """A verified checkpoint: its step, its state (tensors on the CPU) and its metadata."""

    path: Path
    step: int
    state: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _paths(ckpt_dir: Path, step: int) -> tuple[Path, Path]:
    stem = ckpt_dir / f"step-{step:07d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


# --------------------------------------------------------------------------------------------------
# nested state <-> (flat tensors, JSON structure)


def _pack(node: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        tensors[key] = node.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(node, dict):
        if all(isinstance(k, str) for k in node):
            return {k: _pack(v, f"{key}.{k}" if key else k, tensors) for k, v in node.items()}
        if all(isinstance(k, int) for k in node):  # e.g. an optimizer's per-parameter state
            return {"__int_keys__": [[k, _pack(v, f"{key}.{k}", tensors)] for k, v in node.items()]}
        raise TypeError(f"state keys at {key!r} must be all str or all int")
    if isinstance(node, (list, tuple)):
        return [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"cannot store a {type(node).__name__} at {key!r} in a checkpoint")


def _unpack(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The nested state of ``_pack``'s structure; ``CheckpointError`` for any other structure."""
    if isinstance(node, dict):
        if "__tensor__" in node:
            key = node["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"the weights file lacks tensor {key!r}")
            return tensors[key]
        if "__int_keys__" in node:
            pairs = node["__int_keys__"]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and type(p[0]) is int for p in pairs
            ):
                raise CheckpointError("its __int_keys__ entry is not a list of [int, value] pairs")
            return {k: _unpack(v, tensors) for k, v in pairs}
        return {k: _unpack(v, tensors) for k, v in node.items()}
    if isinstance(node, list):
        return [_unpack(v, tensors) for v in node]
    return node


# --------------------------------------------------------------------------------------------------
# save / load


def list_checkpoints(run_dir: str | Path) -> list[int]:
    """Steps that have a checkpoint file (complete or not) in ``run_dir``, newest first."""
    ckpt_dir = checkpoint_dir(run_dir)
    if not ckpt_dir.is_dir():
        return []
    steps = {int(m.group(1)) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))}
    return sorted(steps, reverse=True)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    state: dict[str, Any],
    meta: dict[str, Any] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write the checkpoint of ``step``; then delete all but the ``keep_last`` newest (0 keeps all).

    ``state`` is nested dicts / lists of tensors and JSON scalars (a ``state_dict``, an optimizer's
    ``state_dict``, ...); ``meta`` is plain JSON. Returns the path of the safetensors file.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    ckpt_dir = checkpoint_dir(run_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    structure = _pack(state, "", tensors)
    blob = save_safetensors(tensors)
    weights_path, json_path = _paths(ckpt_dir, step)
    sidecar = {
        "format": FORMAT,
        "step": int(step),
        "weights": weights_path.name,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "state": structure,
        "meta": meta or {},
    }
    atomic_write(weights_path, blob)
    atomic_write(json_path, json.dumps(sidecar, indent=1).encode())
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[keep_last:]:
            for path in reversed(_paths(ckpt_dir, old)):  # the JSON first: it marks a checkpoint complete
                path.unlink(missing_ok=True)
    return weights_path


def _check_sidecar(sidecar: Any, json_path: Path, weights_name: str) -> None:
    """``CheckpointError`` unless ``sidecar`` has the structure ``save_checkpoint`` writes, of ``FORMAT``."""
    if not isinstance(sidecar, dict) or "format" not in sidecar:
        raise CheckpointError(f"{json_path} is not a scorefield checkpoint")
    if sidecar["format"] != FORMAT:
        raise CheckpointError(
            f"{json_path} is a checkpoint of format {sidecar['format']!r}; this version reads format "
            f"{FORMAT} only: train the run again"
        )
    expected = {"step": int, "weights": str, "size": int, "sha256": str, "state": dict, "meta": dict}
    for key, kind in expected.items():
        if type(sidecar.get(key)) is not kind:
            raise CheckpointError(
                f"{json_path} is malformed: its {key!r} is not a{'n' if kind is int else ''} {kind.__name__}"
            )
    if sidecar["step"] < 0 or sidecar["size"] < 0 or not _SHA256.match(sidecar["sha256"]):
        raise CheckpointError(f"{json_path} is malformed: a negative step or size, or a bad SHA-256")
    if sidecar["weights"] != weights_name:
        raise CheckpointError(f"{json_path} names weights {sidecar['weights']!r}, not {weights_name!r}")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint (either of its two files, or its stem); ``CheckpointError`` if bad.

    Sizes are compared with ``stat()`` before anything is read, so a file cannot make this allocate
    more than the recorded checkpoint holds."""
    path = Path(path)
    weights_path, json_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    try:
        if json_path.stat().st_size > MAX_SIDECAR_BYTES:
            raise CheckpointError(
                f"checkpoint metadata {json_path} is larger than {MAX_SIDECAR_BYTES >> 20} MiB: not a sidecar"
            )
        sidecar = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {weights_path} is incomplete: {json_path.name} is missing"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"checkpoint metadata {json_path} is unreadable ({error})") from None
    _check_sidecar(sidecar, json_path, weights_path.name)
    try:
        size = weights_path.stat().st_size
        if size != sidecar["size"]:
            raise CheckpointError(
                f"checkpoint {weights_path} is corrupt: it holds {size} bytes, {json_path.name} "
                f"records {sidecar['size']}"
            )
        blob = weights_path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint weights {weights_path} are unreadable ({error})") from None
    if len(blob) != sidecar["size"] or hashlib.sha256(blob).hexdigest() != sidecar["sha256"]:
        raise CheckpointError(
            f"checkpoint {weights_path} is corrupt: its size or SHA-256 differs from the one "
            f"recorded in {json_path.name}"
        )
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"checkpoint {weights_path} cannot be parsed ({error})") from None
    try:
        state = _unpack(sidecar["state"], tensors)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {json_path} is malformed: {error}") from None
    return Checkpoint(weights_path, sidecar["step"], state, sidecar["meta"])


def latest_good(run_dir: str | Path, check: Callable[[Checkpoint], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint of ``run_dir`` that verifies, a warning naming each newer one skipped.

    ``check`` (a caller's own test of the state and metadata, raising ``CheckpointError``) is part of
    verifying. None when ``run_dir`` holds no checkpoint at all; ``CheckpointError`` (with the newest
    one's fault) when it holds some but none verifies.
    """
    ckpt_dir = checkpoint_dir(run_dir)
    skipped: list[tuple[int, CheckpointError]] = []
    for step in list_checkpoints(run_dir):
        try:
            ckpt = load_checkpoint(_paths(ckpt_dir, step)[0])
            if check is not None:
                check(ckpt)
        except CheckpointError as error:
            skipped.append((step, error))
            continue
        for skipped_step, error in skipped:
            warnings.warn(f"skipping checkpoint of step {skipped_step}: {error}", stacklevel=2)
        return ckpt
    if skipped:
        step, error = skipped[0]
        raise CheckpointError(f"no checkpoint in {ckpt_dir} verifies; the newest (step {step}): {error}")
    return None
