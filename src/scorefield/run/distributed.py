"""Many processes under torchrun: joining the process group, and sharing work between the processes.

``distributed(device)`` joins the process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)
and yields this process's ``Dist`` (rank, world size) and device; a single process gets ``Dist()``
and nothing is joined. Training shares every step's global batch by rows: ``Dist.rows`` is this
process's contiguous share and ``local_rows`` evaluates a network on it alone (``wrap`` puts the
network in ``DistributedDataParallel``, which averages the gradients). Inference shares blocks:
``blocks`` deals out blocks of items round-robin and ``gather`` gives every process all of them.
The reductions below are no-ops on one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..utils import default_device

__all__ = ["Dist", "blocks", "dist_state", "distributed", "gather", "local_rows"]


@dataclass(frozen=True)
class Dist:
    """This process's place among ``world`` processes (rank 0 is the main one, which writes files)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> tuple[int, int]:
        """This process's contiguous share ``[lo, hi)`` of the rows of a global batch."""
        return self.rank * batch // self.world, (self.rank + 1) * batch // self.world

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (gradients averaged over the processes); itself alone."""
        if self.world == 1:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )

    def reduce(self, op) -> Callable[[torch.Tensor], None] | None:
        """An in-place ``all_reduce`` with ``op`` (``dist.ReduceOp``) over the processes; None alone."""
        if self.world == 1:
            return None
        return lambda value: dist.all_reduce(value, op=op)

    def max_int(self, value: int, device: torch.device) -> int:
        """The largest of every process's ``value`` (e.g. a signal number seen by one of them)."""
        if self.world == 1:
            return value
        flag = torch.tensor([value], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def dist_state() -> Dist:
    """This process's ``Dist``: from the process group when one has been joined, else ``Dist()``."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


@contextmanager
def distributed(device_name: str = "auto"):
    """Under torchrun (``WORLD_SIZE > 1``) join the process group (gloo on CPU, nccl on CUDA) and yield
    ``(Dist, device)``; a single process yields ``(Dist(), device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = default_device(None if device_name == "auto" else device_name)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield dist_state(), device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist_state(), device
    finally:
        dist.destroy_process_group()


def local_rows(module: nn.Module, lo: int, hi: int, batch: int) -> Callable:
    """``module(x, c)`` (or ``module(x, c, y)`` with labels ``y``) on this process's rows ``[lo, hi)`` of
    every ``batch`` rows, zeros elsewhere.

    A loss may evaluate the score on its batch repeated (sliced score matching's projections), so
    row ``r`` belongs to example ``r mod batch``. Those zero rows give losses nobody reads.
    """
    cache: dict[int, torch.Tensor] = {}

    def score_fn(x: torch.Tensor, c, y=None):
        repeats = x.shape[0] // batch
        if repeats not in cache:
            offsets = torch.arange(repeats, device=x.device)[:, None] * batch
            cache[repeats] = (offsets + torch.arange(lo, hi, device=x.device)).flatten()
        rows = cache[repeats]
        c_rows = c[rows] if isinstance(c, torch.Tensor) and c.ndim == 1 and c.shape[0] == x.shape[0] else c
        labels = () if y is None else (y[rows] if y.ndim == 1 and y.shape[0] == x.shape[0] else y,)
        return torch.zeros_like(x).index_copy(0, rows, module(x[rows], c_rows, *labels))

    return score_fn


def blocks(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """This process's blocks ``(start, stop)`` of ``n`` items in blocks of ``batch_size``."""
    d = dist_state()
    for index, start in enumerate(range(0, n, batch_size)):
        if index % d.world == d.rank:
            yield start, min(start + batch_size, n)


def gather(out: torch.Tensor) -> torch.Tensor:
    """Each block was filled by one process and is zero in the others: their sum has every block."""
    if dist_state().world > 1:
        dist.all_reduce(out)
    return out
