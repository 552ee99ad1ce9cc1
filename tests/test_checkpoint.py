"""Checkpoints: bitwise round trips without pickles, atomic writes, pruning, integrity checks, fallback."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from scorefield.files import atomic_write
from scorefield.run.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_dir,
    latest_good,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def trained_pair(seed: int = 0, steps: int = 3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer_step(model, optimizer, seed)
    return model, optimizer


def optimizer_step(model, optimizer, seed):
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()


def state_of(model, optimizer):
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch_cpu": torch.get_rng_state()},
        "nested": {"ints": [1, 2, 3], "none": None, "flag": True, "name": "x", "tuple": (0.5, 2)},
    }


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_same(u, v)
    else:
        assert a == b


def test_round_trip_is_bitwise_and_keeps_structure(tmp_path):
    model, optimizer = trained_pair()
    state = state_of(model, optimizer)
    path = save_checkpoint(tmp_path, 12, state, {"config": {"a": 1}})
    assert path == checkpoint_dir(tmp_path) / "step-0000012.safetensors"
    ckpt = load_checkpoint(path)
    assert ckpt.step == 12 and ckpt.meta == {"config": {"a": 1}}
    assert_same(state, ckpt.state)
    assert isinstance(next(iter(ckpt.state["optimizer"]["state"])), int)  # integer keys survive JSON


def test_the_files_are_safetensors_and_json_only(tmp_path):
    model, optimizer = trained_pair()
    path = save_checkpoint(tmp_path, 1, state_of(model, optimizer))
    tensors = load_file(path)  # a plain safetensors file
    assert "optimizer.state.0.exp_avg" in tensors and "rng.torch_cpu" in tensors
    assert tensors["rng.torch_cpu"].dtype == torch.uint8
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["size"] == path.stat().st_size and len(sidecar["sha256"]) == 64
    assert sidecar["state"]["model"]["0.weight"] == {"__tensor__": "model.0.weight"}


def test_a_restored_optimizer_continues_bitwise(tmp_path):
    model, optimizer = trained_pair()
    save_checkpoint(tmp_path, 3, state_of(model, optimizer))
    optimizer_step(model, optimizer, seed=9)

    other, other_opt = trained_pair(seed=1)  # different weights and moments, replaced below
    ckpt = latest_good(tmp_path)
    other.load_state_dict(ckpt.state["model"])
    other_opt.load_state_dict(ckpt.state["optimizer"])
    optimizer_step(other, other_opt, seed=9)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_keep_last_prunes_the_oldest(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"x": torch.tensor(step)}, keep_last=2)
    assert list_checkpoints(tmp_path) == [40, 30]
    assert sorted(p.name for p in checkpoint_dir(tmp_path).iterdir()) == [
        "step-0000030.json",
        "step-0000030.safetensors",
        "step-0000040.json",
        "step-0000040.safetensors",
    ]


def corrupt(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damage_is_detected_and_latest_good_walks_back(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"x": torch.full((4,), float(step))})
    ckpt_dir = checkpoint_dir(tmp_path)
    corrupt(ckpt_dir / "step-0000004.safetensors")  # flipped byte
    (ckpt_dir / "step-0000003.json").unlink()  # a write that never completed
    weights = ckpt_dir / "step-0000002.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated

    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(ckpt_dir / "step-0000004.safetensors")
    with pytest.raises(CheckpointError, match="is incomplete"):
        load_checkpoint(ckpt_dir / "step-0000003.safetensors")
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(ckpt_dir / "step-0000002.json")
    with pytest.warns(UserWarning) as record:
        ckpt = latest_good(tmp_path)
    assert [str(w.message).split(":")[0] for w in record] == [
        f"skipping checkpoint of step {step}" for step in (4, 3, 2)
    ]
    assert ckpt.step == 1 and torch.equal(ckpt.state["x"], torch.ones(4))


def test_unreadable_metadata_and_nothing_at_all(tmp_path):
    assert latest_good(tmp_path) is None
    save_checkpoint(tmp_path, 5, {"x": torch.zeros(1)})
    meta = checkpoint_dir(tmp_path) / "step-0000005.json"
    meta.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(meta)
    meta.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="is not a scorefield checkpoint"):
        load_checkpoint(meta)
    meta.write_text('{"format": "something else"}')
    with pytest.raises(
        CheckpointError, match=f"of format 'something else'; this version reads format {FORMAT} only"
    ):
        load_checkpoint(meta)
    with pytest.raises(
        CheckpointError, match=r"no checkpoint in .* verifies; the newest \(step 5\): .*of format"
    ):
        latest_good(tmp_path)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_unsupported_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store"):
        save_checkpoint(tmp_path, 1, {"x": object()})
    with pytest.raises(TypeError, match="all str or all int"):
        save_checkpoint(tmp_path, 1, {"x": {1: 2, "a": 3}})
    assert list_checkpoints(tmp_path) == []
