#!/usr/bin/env bash
# The GPU check: runnable as is on a CUDA machine that has the project's `make test` environment
# (.venv, or python3 with the package installed) and a CUDA build of torch; it installs nothing.
#
#   bash bench/device_check.sh            # all of it, about 10-20 minutes on one recent GPU
#
# 1. the test suite on the GPU machine (train.device = "auto" picks CUDA; the bf16 and compile tests
#    run on CUDA too), its summary in bench/results/device_tests.txt;
# 2. the throughput table on CUDA (SCOREFIELD_BENCH_DEVICE=cuda): bench/results/throughput_cuda.md;
# 3. the cifar10_vp preset trained STEPS steps by `scorefield train` on random CIFAR-10-format data,
#    eager fp32 and bf16, against a minimal training loop of diffusers' UNet2DModel in the DDPM
#    CIFAR-10 layout (the same size) on random data, as a ratio of steps/s:
#    bench/results/device_cifar10.md (skipped with a line where diffusers is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
STEPS=${STEPS:-300}
RESULTS=bench/results
mkdir -p "$RESULTS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "device_check: torch sees no CUDA device")'
"$PY" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

echo "== 1. test suite"
set +e
"$PY" -m pytest -q -x -p no:cacheprovider >"$WORK/tests.txt" 2>&1
status=$?
set -e
{ echo "pytest exit status $status on $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"; tail -n 30 "$WORK/tests.txt"; } >"$RESULTS/device_tests.txt"
tail -n 3 "$WORK/tests.txt"

echo "== 2. throughput on CUDA"
SCOREFIELD_BENCH_DEVICE=cuda "$PY" -m bench throughput

echo "== 3. cifar10_vp preset vs diffusers' UNet2DModel, $STEPS steps"
STEPS=$STEPS WORK=$WORK RESULTS=$RESULTS "$PY" - <<'PYTHON'
import json, os, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch

steps, work, results = int(os.environ["STEPS"]), Path(os.environ["WORK"]), Path(os.environ["RESULTS"])
data = work / "cifar"
data.mkdir()
rng = np.random.default_rng(0)  # 10000 random records: 1 label byte, 3072 pixel bytes
(data / "data_batch_1.bin").write_bytes(rng.integers(0, 256, (10000, 3073), dtype=np.uint8).tobytes())
log_every = 50


def scorefield_rate(precision: str) -> float:
    out = work / f"run_{precision}"
    sets = [f'data.path="{data}"', f"train.steps={steps}", f"train.log_every={log_every}",
            f"train.ckpt_every={steps}", f'train.precision="{precision}"', "train.warmup=10"]
    cmd = [sys.executable, "-m", "scorefield", "train", "--config", "configs/cifar10_vp.toml", "--out", str(out),
           "--device", "cuda", "--quiet", *[a for s in sets for a in ("--set", s)]]
    subprocess.run(cmd, check=True)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l]
    return statistics.median(l["steps_per_s"] for l in lines[1:])  # the first holds the warm-up


def diffusers_rate(precision: str) -> float | None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    torch.manual_seed(0)
    model = UNet2DModel(  # DDPM's CIFAR-10 layout (Ho et al. 2020): 35.7M parameters
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256), dropout=0.1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ).cuda()
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=2e-4)
    g = torch.Generator("cuda").manual_seed(0)
    x0 = torch.rand(10000, 3, 32, 32, device="cuda", generator=g) * 2 - 1
    def step():
        x = x0[torch.randint(10000, (128,), device="cuda", generator=g)]
        t = torch.rand(128, device="cuda", generator=g) * (1 - 1e-5) + 1e-5
        log_mean = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1  # the preset's VP SDE: log m(t)
        mean, std = log_mean.exp()[:, None, None, None], (1 - (2 * log_mean).exp()).sqrt()[:, None, None, None]
        z = torch.randn(x.shape, device="cuda", generator=g)
        with torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16"):
            out = model(mean * x + std * z, t * 999).sample
        loss = (out.float() - z).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1e-4)

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


rows = []
for precision in ("fp32", "bf16"):
    ours, peer = scorefield_rate(precision), diffusers_rate(precision)
    ratio = "diffusers not installed" if peer is None else f"{ours / peer:.3f}"
    rows.append(f"| {precision} | {ours:.3f} | {'-' if peer is None else f'{peer:.3f}'} | {ratio} |")
text = "\n".join([
    "# cifar10_vp on CUDA: scorefield's trainer against a minimal diffusers UNet2DModel loop", "",
    f"Command: `bash bench/device_check.sh` (STEPS={steps})  ",
    f"Machine: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", "",
    "Both train a DDPM-layout U-Net at batch 128 on random data; scorefield: `scorefield train` on the preset "
    "(steps/s the median of its metric lines after the first); diffusers: AdamW, clipping, EMA, the VP "
    "SDE's eps loss, timed after 10 warm-up steps. Ratio > 1: scorefield is faster.", "",
    "| precision | scorefield steps/s | diffusers steps/s | scorefield / diffusers |", "|---|---|---|---|", *rows, "",
])
(results / "device_cifar10.md").write_text(text)
print(text)
PYTHON
echo "== done: $RESULTS/device_tests.txt, $RESULTS/throughput_cuda.md, $RESULTS/device_cifar10.md"
