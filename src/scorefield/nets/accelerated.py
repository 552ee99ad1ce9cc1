"""The networks at the speed of the hardware: bfloat16 autocast, ``torch.compile`` and channels-last.

``Network`` is the base of the project's networks (``MLP``, ``UNet``): a subclass writes its computation
in ``network(x, ...)`` and ``forward`` runs it as ``accelerate`` set it:

- ``precision = "bf16"``: under ``torch.autocast`` to bfloat16 on the device of ``x`` (matrix products
  and convolutions in bfloat16, the reductions autocast keeps in float32), the output returned in the
  dtype of ``x``. The weights, their gradients, the optimiser's state, the weight average and
  everything outside the network (the SDE's arithmetic, the loss, the ODE of the likelihood) stay in
  float32 or float64.
- ``compile = True``: through ``torch.compile``. Where the platform cannot compile (no C compiler for
  the CPU backend, an unsupported device, ...) the first call warns once and the network runs eagerly
  from then on; an error of the inputs is raised as eager execution raises it.
- ``channels_last = True`` (the U-Net): its feature maps in channels-last memory format.

None of it touches the parameters or their names, so checkpoints are float32 and the same under every
setting, and a copy (``copy.deepcopy``, the weight average's ``EMA.averaged``) keeps the setting: the
compiled function is one per process, taking the module as an argument, never stored on it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["PRECISIONS", "Network", "bf16_unsupported", "check_precision"]

PRECISIONS = ("fp32", "bf16")


def bf16_unsupported(device: torch.device | str) -> str | None:
    """Why bfloat16 autocast would not run natively on ``device`` (one sentence), or None where it does:
    a CUDA GPU with bfloat16 arithmetic (compute capability 8.0 and up), a CPU with AVX-512-BF16 or AMX
    (elsewhere oneDNN emulates bfloat16, slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"the GPU {torch.cuda.get_device_name(device)} has no bfloat16 arithmetic"
    if device.type == "cpu":
        # torch.cpu's probes of the instruction sets (private names, but the only public-facing ones)
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        if native and torch.backends.mkldnn.is_available():
            return None
        return "this CPU has neither AVX-512-BF16 nor AMX, where bfloat16 runs slower than float32"
    return f"bfloat16 autocast runs on CPU and CUDA devices, not {device.type}"


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise ``ValueError`` (one sentence) unless ``precision`` is one of ``PRECISIONS`` and runs on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    reason = bf16_unsupported(device) if precision == "bf16" else None
    if reason is not None:
        raise ValueError(f"precision bf16 cannot run here: {reason}; use fp32")


_COMPILED: dict[str, Any] = {}  # the one compiled forward of this process, made on first use
_COMPILE_FAILED: list[str] = []  # the reason compiling failed here, once it has


def _compiled_forward():
    if "forward" not in _COMPILED:
        # inductor's layout optimisation (channels-last feature maps around convolutions) gives zero
        # gradients to the U-Net's 4x4 levels in bf16 on a CPU (torch 2.13): it stays off
        options = {"layout_optimization": False}
        _COMPILED["forward"] = torch.compile(Network.accelerated_forward, options=options)
    return _COMPILED["forward"]


def compile_failed() -> str | None:
    """Why ``torch.compile`` failed in this process (the networks then run eagerly), or None."""
    return _COMPILE_FAILED[0] if _COMPILE_FAILED else None


class Network(nn.Module):
    """A network whose ``forward`` runs ``network`` in the precision, compilation and memory format
    that ``accelerate`` sets (float32, eager, contiguous by default)."""

    def __init__(self) -> None:
        super().__init__()
        self.precision, self.compiled, self.channels_last = "fp32", False, False

    def accelerate(
        self, precision: str = "fp32", compile: bool = False, channels_last: bool = False
    ) -> Network:
        """Set how ``forward`` runs (see the module docstring); ``ValueError`` (one sentence) where
        ``precision`` cannot run on the device of the parameters. Returns the network."""
        device = next(self.parameters()).device
        check_precision(precision, device)
        self.precision, self.compiled, self.channels_last = precision, bool(compile), bool(channels_last)
        return self

    def network(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def accelerated_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``network`` under the autocast of ``precision``, its output in the dtype of ``x``."""
        if self.precision == "fp32":
            return self.network(x, *args, **kwargs)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.network(x, *args, **kwargs)
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self.compiled or _COMPILE_FAILED:
            return self.accelerated_forward(x, *args, **kwargs)
        try:
            return _compiled_forward()(self, x, *args, **kwargs)
        except Exception as error:  # told apart below: the eager call raises an error of the inputs itself
            failure = error
        out = self.accelerated_forward(x, *args, **kwargs)
        lines = str(failure).strip().splitlines()
        _COMPILE_FAILED.append(f"{type(failure).__name__}: {lines[0] if lines else ''}"[:200])
        warnings.warn(
            f"torch.compile cannot compile the network here ({_COMPILE_FAILED[0]}); running it eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
        return out
