"""Checkpoints without pickles: tensors in safetensors, everything else in a JSON sidecar.

A checkpoint of step ``k`` is two files in ``RUN/checkpoints/``:

- ``step-000000k.safetensors``: every tensor of the state (weights, EMA weights, optimizer moments,
  RNG states as uint8 tensors, scaler statistics) under its path in the state, e.g.
  ``optimizer.state.0.exp_avg``;
- ``step-000000k.json``: the state's structure with tensors replaced by references, the scalars
  (step, optimizer hyper-parameters, ...), free metadata (the config), and the size and SHA-256 of
  the safetensors file.

Both are written atomically (temporary file in the same folder, flush, fsync, ``os.replace``, fsync
of the folder); the JSON goes last, so a checkpoint exists only once both are complete. Loading
verifies size and hash and raises ``CheckpointError``; ``latest_good`` walks back from the newest
checkpoint to the newest one that verifies. Nothing is ever read with ``pickle`` or ``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
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

FORMAT = "scorefield-checkpoint-1"
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
    if isinstance(node, dict):
        if "__tensor__" in node:
            try:
                return tensors[node["__tensor__"]]
            except KeyError:
                raise CheckpointError(f"the weights file lacks tensor {node['__tensor__']!r}") from None
        if "__int_keys__" in node:
            return {int(k): _unpack(v, tensors) for k, v in node["__int_keys__"]}
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


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint (either of its two files, or its stem); ``CheckpointError`` if bad."""
    path = Path(path)
    weights_path, json_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    try:
        sidecar = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {weights_path} is incomplete: {json_path.name} is missing"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint metadata {json_path} is unreadable ({error})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a scorefield checkpoint (format {FORMAT})")
    try:
        blob = weights_path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint weights {weights_path} are unreadable ({error})") from None
    if len(blob) != sidecar.get("size") or hashlib.sha256(blob).hexdigest() != sidecar.get("sha256"):
        raise CheckpointError(
            f"checkpoint {weights_path} is corrupt: its size or SHA-256 differs from the one "
            f"recorded in {json_path.name}"
        )
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"checkpoint {weights_path} cannot be parsed ({error})") from None
    state = _unpack(sidecar.get("state", {}), tensors)
    return Checkpoint(weights_path, int(sidecar["step"]), state, sidecar.get("meta", {}))


def latest_good(run_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint of ``run_dir`` that verifies, a warning naming each newer one skipped.

    None when ``run_dir`` holds no checkpoint at all; ``CheckpointError`` (with the newest one's
    fault) when it holds some but none verifies.
    """
    ckpt_dir = checkpoint_dir(run_dir)
    skipped: list[tuple[int, CheckpointError]] = []
    for step in list_checkpoints(run_dir):
        try:
            ckpt = load_checkpoint(_paths(ckpt_dir, step)[0])
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
