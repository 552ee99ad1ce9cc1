"""Throughput against minimal hand-written loops: the trainer, the samplers, the exact divergence.

Each library path is timed beside the shortest loop that does the same arithmetic, in the same run and
interleaved (``interleaved_times``), and quoted as a ratio (library rate / minimal rate; 1 = no overhead).

- Training: ``scorefield.run.train.train(config, run_dir)`` on ``configs/toy_vp.toml`` (MLP 128 x 3, batch
  256, AdamW, ``sde_dsm``, grad clipping 1.0, EMA 0.999, LR warm-up, metrics every 50 steps). Its
  per-step rate is ``(N2 - N1) / (T(N2) - T(N1))`` from runs of N1 and N2 steps, which cancels the set-up
  (data, model, run directory, the final checkpoint). The minimal loop: random batch indices, AdamW (fused),
  ``sde_dsm``, ``clip_grad_norm_``, the EMA's ``_foreach_lerp_`` - the same model, batch and loss,
  without data order, per-step seeding, LR schedule, loss window or logging.
- Sampling: ``sample_pc`` (Euler-Maruyama predictor, its noise from a ``torch.Generator`` and keyed by
  sample with ``KeyedNoise``), ``sample_ode`` (euler, rk4) and ``sample_multistep`` (DPM-Solver++2M)
  against loops that apply the same update with python-number coefficients; the unit is score
  evaluations per second.
- Exact divergence (``likelihood.divergence``, one batched vector-Jacobian product over all basis
  vectors) against a Python loop of one autograd call per dimension, at d = 2, 16, 64.
- Network settings (``nets.accelerated``): the networks of the digits and CIFAR-10 presets (and the
  estimators' MLPs) in eager float32, bfloat16 autocast, compiled, and both, each against eager float32
  in the same interleaved rounds: training steps/s (the preset's objective, the trainer's fused AdamW, clipping, EMA, on
  random inputs of the preset's shape) and samples/s (DPM-Solver++2M at a fixed NFE), with the seconds
  of the first two steps (``torch.compile``'s warm-up). ``SCOREFIELD_BENCH_DEVICE=cuda`` runs it on a GPU
  (``bench/device_check.sh``). Compiling the CIFAR-10 U-Net is left out on the CPU: its warm-up alone
  exceeds the benchmark's budget on 2 cores.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch

from scorefield import losses, noise
from scorefield.fit import EMA
from scorefield.keyed import KeyedNoise
from scorefield.likelihood import divergence
from scorefield.multistep import sample_multistep
from scorefield.nets import accelerated
from scorefield.nets.mlp import MLP
from scorefield.run.build import OBJECTIVES, build
from scorefield.run.config import load_config
from scorefield.run.train import FUSED_ADAMW_DEVICES, prepare_data, train
from scorefield.samplers import sample_ode, sample_pc
from scorefield.score import ScoreModel
from scorefield.sde import VPSDE

from .common import interleaved_times, markdown_table, median, one_thread, write_results

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIG = CONFIGS / "toy_vp.toml"


# --------------------------------------------------------------------------------------------------
# training


def trainer_and_minimal(n1: int, n2: int, run_dir: Path):
    config = load_config(CONFIG, ["train.ckpt_every=1000000"])

    def trainer(steps: int):
        c = config.model_copy(update={"train": config.train.model_copy(update={"steps": steps})})
        return lambda: train(c, run_dir, force=True, progress=False)

    raw, scaler, _ = prepare_data(config)
    data = scaler.transform(raw)
    diffusion = build(config, tuple(raw.shape[1:]), None)
    model, t = diffusion.model, config.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)
    ema = EMA(model, t.ema_decay)
    params = list(model.parameters())
    generator = torch.Generator().manual_seed(0)

    def minimal(steps: int):
        def run():
            for step in range(steps):
                x = data[torch.randint(data.shape[0], (t.batch_size,), generator=generator)]
                loss = losses.sde_dsm(
                    model, diffusion.sde, x, t_min=config.sde.t_min, generator=generator
                ).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                optimizer.step()
                ema.update(step)

        return run

    return {
        "trainer N1": trainer(n1),
        "trainer N2": trainer(n2),
        "minimal N1": minimal(n1),
        "minimal N2": minimal(n2),
    }


def training_section(quick: bool) -> tuple[str, dict]:
    n1, n2 = (5, 25) if quick else (20, 220)
    repeats = 3 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        times = interleaved_times(trainer_and_minimal(n1, n2, Path(tmp) / "run"), repeats=repeats, warmup=1)
    rates = {}
    for name in ("trainer", "minimal"):
        per_step = [b - a for a, b in zip(times[f"{name} N1"], times[f"{name} N2"], strict=True)]
        rates[name] = [(n2 - n1) / max(d, 1e-9) for d in per_step]
    ratios = [a / b for a, b in zip(rates["trainer"], rates["minimal"], strict=True)]
    setup = median(times["trainer N1"]) - n1 / median(rates["trainer"])
    rows = [
        ["trainer (train(config), set-up cancelled)", median(rates["trainer"]), setup],
        ["minimal loop", median(rates["minimal"]), 0.0],
    ]
    table = markdown_table(["loop", "steps/s (median)", "set-up s"], rows)
    ratio = median(ratios)
    summary = (
        f"trainer / minimal = **{ratio:.3f}** (median of {repeats} interleaved rounds; "
        f"range {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.95)"
    )
    return table + "\n\n" + summary, {"train": ratio}


# --------------------------------------------------------------------------------------------------
# sampling


def sampling_candidates(model, sde: VPSDE, x_T: torch.Tensor, n: int) -> dict:
    """Library calls and minimal loops of ``n`` steps each; returns ``{name: (fn, nfe)}``."""
    batch = x_T.shape[0]
    grid = torch.linspace(1.0, 1e-3, n + 1).tolist()

    def beta(t: float) -> float:
        return sde.beta_min + t * (sde.beta_max - sde.beta_min)

    @torch.no_grad()
    def em_minimal():
        g = torch.Generator().manual_seed(1)
        x = x_T
        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            dt, b = t_next - t, beta(t)
            score = model(x, torch.full((batch,), t))
            x = x + (-0.5 * b * x - b * score) * dt + math.sqrt(-b * dt) * torch.randn(x.shape, generator=g)
        return x

    @torch.no_grad()
    def euler_minimal():
        x = x_T
        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            b = beta(t)
            x = x + (-0.5 * b * (x + model(x, torch.full((batch,), t)))) * (t_next - t)
        return x

    @torch.no_grad()
    def rk4_minimal():
        def velocity(x, t):
            return -0.5 * beta(t) * (x + model(x, torch.full((batch,), t)))

        x = x_T
        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            h = t_next - t
            k1 = velocity(x, t)
            k2 = velocity(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = velocity(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = velocity(x + h * k3, t_next)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    scale, std = sde.marginal(torch.tensor(grid, dtype=torch.float64))
    lam = (scale.log() - std.log()).tolist()
    scale, std = scale.tolist(), std.tolist()

    @torch.no_grad()
    def dpm_minimal():
        x, previous = x_T, None
        for i in range(n):
            d = (x + std[i] ** 2 * model(x, torch.full((batch,), grid[i]))) / scale[i]
            h = lam[i + 1] - lam[i]
            d_hat = d if previous is None else d + (d - previous) * (h / (2 * (lam[i] - lam[i - 1])))
            x = (std[i + 1] / std[i]) * x - (scale[i + 1] * math.expm1(-h)) * d_hat
            previous = d
        return x

    def em():
        sample_pc(model, sde, x_T, n, predictor="euler_maruyama", corrector=None, denoise=False,
                  generator=torch.Generator().manual_seed(1))  # fmt: skip

    def em_keyed():  # noise keyed by sample (as `scorefield sample` draws it): batch-size invariant
        sample_pc(model, sde, x_T, n, predictor="euler_maruyama", corrector=None, denoise=False,
                  generator=KeyedNoise(1, torch.arange(batch)))  # fmt: skip

    return {
        "sample_pc (euler_maruyama)": (em, em_minimal, n),
        "sample_pc (euler_maruyama), KeyedNoise": (em_keyed, em_minimal, n),
        "sample_ode euler": (
            lambda: sample_ode(model, sde, x_T, n, method="euler"),
            euler_minimal,
            n,
        ),
        "sample_ode rk4": (lambda: sample_ode(model, sde, x_T, n, method="rk4"), rk4_minimal, 4 * n),
        "sample_multistep (DPM-Solver++2M)": (
            lambda: sample_multistep(
                model, sde, x_T, noise.time_grid(n - 1), solver="dpm++", order=2, corrector=False
            ),
            dpm_minimal,
            n,
        ),
    }


def sampling_section(quick: bool) -> tuple[str, dict]:
    sde = VPSDE()
    model = ScoreModel(MLP(2, hidden=128, depth=3), sde).eval().requires_grad_(False)
    batch = 1000  # sample.batch_size's default
    x_T = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0))
    n = 10 if quick else 100
    repeats = 3 if quick else 7
    rows, ratios = [], {}
    for name, (library, minimal, nfe) in sampling_candidates(model, sde, x_T, n).items():
        times = interleaved_times({"library": library, "minimal": minimal}, repeats=repeats, warmup=1)
        per_round = [m / lib for lib, m in zip(times["library"], times["minimal"], strict=True)]
        ratios[name] = median(per_round)
        rows.append([name, nfe / median(times["library"]), nfe / median(times["minimal"]), ratios[name]])
    header = ["sampler", "library NFE/s", "minimal NFE/s", "library / minimal (median of rounds)"]
    note = f"MLP 128 x 3 score model, batch {batch}, {n} steps, {repeats} interleaved rounds; target >= 0.95."
    return markdown_table(header, rows) + "\n\n" + note, ratios


# --------------------------------------------------------------------------------------------------
# exact divergence


def divergence_loop(fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The per-dimension baseline: one autograd call per output dimension."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        value = fn(x_in, t).flatten(1)
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        for i in range(value.shape[1]):
            (row,) = torch.autograd.grad(value[:, i].sum(), x_in, retain_graph=True)
            total = total + row.flatten(1)[:, i]
    return total


def divergence_section(quick: bool) -> tuple[str, dict]:
    sde = VPSDE()
    cases = [(2, 256), (16, 256)] if quick else [(2, 256), (16, 256), (64, 256), (64, 32)]
    repeats = 3 if quick else 7
    rows, speedups = [], {}
    for dim, batch in cases:
        model = ScoreModel(MLP(dim, hidden=128, depth=3), sde).eval().requires_grad_(False)

        def flow(x, t, model=model):
            return sde.reverse_drift(x, t, model(x, t), probability_flow=True)

        x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(dim))
        t = torch.full((batch,), 0.5)
        torch.testing.assert_close(divergence(flow, x, t), divergence_loop(flow, x, t), rtol=1e-4, atol=1e-4)
        times = interleaved_times(
            {
                "library": lambda flow=flow, x=x, t=t: divergence(flow, x, t),
                "loop": lambda flow=flow, x=x, t=t: divergence_loop(flow, x, t),
            },
            repeats=repeats,
            warmup=1,
        )
        speedups[dim, batch] = median([b / a for a, b in zip(times["library"], times["loop"], strict=True)])
        rows.append(
            [dim, batch, median(times["library"]) * 1e3, median(times["loop"]) * 1e3, speedups[dim, batch]]
        )
    header = [
        "d",
        "batch",
        "likelihood.divergence ms",
        "per-dimension loop ms",
        "speed-up (median of rounds)",
    ]
    note = (
        "MLP 128 x 3 score model inside the probability-flow drift. Both compute d vector-Jacobian products "
        "(the same arithmetic); batching them removes the per-call overhead of the loop, which is what the "
        "speed-up measures: large where that overhead dominates (small batches), near 1 where the "
        "matrix products do. Target >= 5x at d = 64."
    )
    return markdown_table(header, rows) + "\n\n" + note, speedups


# --------------------------------------------------------------------------------------------------
# network settings: bfloat16 and torch.compile

SETTINGS = {  # name: (precision, compile, channels_last)
    "eager fp32": ("fp32", False, False),
    "eager bf16": ("bf16", False, False),
    "eager bf16, channels-last": ("bf16", False, True),
    "compiled fp32": ("fp32", True, False),
    "compiled bf16": ("bf16", True, False),
}


def build_preset(name: str, overrides: list[str], device: torch.device, setting: tuple) -> tuple:
    """The preset's model built in ``setting`` on ``device``, with its config and data shape; the data
    are never read (CIFAR-10's shape is fixed, the digits' is 8x8)."""
    config = load_config(CONFIGS / f"{name}.toml", overrides)
    shape = (3, 32, 32) if config.data.name == "cifar10" else (1, 8, 8)
    precision, compiled, channels_last = setting
    diffusion = build(config, shape, None, device, precision, compiled)
    diffusion.model.net.channels_last = channels_last
    return config, shape, diffusion


def training_loop(name: str, overrides: list[str], device, setting, batch: int, steps: int):
    """``steps`` training steps of the preset's network per call, on random inputs in [-1, 1] (and random
    labels for a conditional preset), returning the mean loss of each call."""
    config, shape, diffusion = build_preset(name, overrides, device, setting)
    model, t = diffusion.model, config.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, fused=device.type in FUSED_ADAMW_DEVICES)
    ema, params = EMA(model, t.ema_decay), list(model.parameters())
    generator = torch.Generator(device).manual_seed(0)
    k = config.model.num_classes
    objective = OBJECTIVES[config.objective.kind]
    losses_seen: list[float] = []

    def run():
        total = torch.zeros((), device=device)
        for step in range(steps):
            x = torch.rand(batch, *shape, generator=generator, device=device) * 2 - 1
            y = torch.randint(k, (batch,), generator=generator, device=device) if k else None
            extra = {"y": y} if k else {}
            loss = objective(model, x, diffusion, generator, **extra).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            ema.update(step)
            total += loss.detach()
        losses_seen.append(float(total) / steps)

    return run, losses_seen


def sampling_loop(name: str, overrides: list[str], device, setting, batch: int, nfe: int):
    _, shape, diffusion = build_preset(name, overrides, device, setting)
    diffusion.model.eval().requires_grad_(False)
    x_T = torch.randn(batch, *shape, generator=torch.Generator(device).manual_seed(1), device=device)

    return synchronized(
        lambda: sample_multistep(
            diffusion.score_t,
            diffusion.sde,
            x_T,
            noise.time_grid(nfe - 1),
            solver="dpm++",
            order=2,
            corrector=False,
        ),
        device,
    )


def synchronized(fn, device):
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def settings_rows(name, overrides, device, settings, train_batch, sample_batch, steps, nfe, repeats):
    """One row per setting: training steps/s and samples/s, their ratios to eager fp32 (medians over
    interleaved rounds), the warm-up seconds and the mean loss of the timed steps."""
    trainers, samplers, warmups, curves = {}, {}, {}, {}
    for label in settings:
        run, curve = training_loop(name, overrides, device, SETTINGS[label], train_batch, steps)
        trainers[label], curves[label] = synchronized(run, device), curve
        start = time.perf_counter()
        trainers[label]()  # the first call: compilation, oneDNN's kernel choice
        warmups[label] = time.perf_counter() - start
        samplers[label] = sampling_loop(name, overrides, device, SETTINGS[label], sample_batch, nfe)
        samplers[label]()
    train_times = interleaved_times(trainers, repeats=repeats, warmup=0)
    sample_times = interleaved_times(samplers, repeats=repeats, warmup=0)
    base = settings[0]
    rows = []
    for label in settings:
        train_ratio = median([b / a for a, b in zip(train_times[label], train_times[base], strict=True)])
        sample_ratio = median([b / a for a, b in zip(sample_times[label], sample_times[base], strict=True)])
        rows.append(
            [
                label,
                steps / median(train_times[label]),
                train_ratio,
                sample_batch / median(sample_times[label]),
                sample_ratio,
                warmups[label],
                " ".join(f"{v:.3f}" for v in curves[label]),
            ]
        )
    return rows


def estimator_rows(device, repeats: int, quick: bool) -> list[list]:
    """The estimators' MLPs (128 and 256 wide, 3 hidden layers, batch 256, 8 features): training steps/s
    under each setting, against eager fp32."""
    rows = []
    for hidden in (128,) if quick else (128, 256):
        candidates = {}
        for label in ("eager fp32", "eager bf16", "compiled fp32", "compiled bf16"):
            precision, compiled, _ = SETTINGS[label]
            torch.manual_seed(0)
            net = MLP(8, hidden=hidden, depth=3).to(device).accelerate(precision, compiled)
            model, sde = ScoreModel(net, VPSDE()), VPSDE()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x = torch.randn(256, 8, generator=torch.Generator(device).manual_seed(0), device=device)

            def run(model=model, optimizer=optimizer, x=x, sde=sde):
                for _ in range(20):
                    loss = losses.sde_dsm(model, sde, x).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

            candidates[label] = synchronized(run, device)
            candidates[label]()
        times = interleaved_times(candidates, repeats=repeats, warmup=0)
        for label in candidates:
            ratio = median([b / a for a, b in zip(times[label], times["eager fp32"], strict=True)])
            rows.append([f"MLP {hidden} x 3", label, 20 / median(times[label]), ratio])
    return rows


def settings_section(quick: bool) -> tuple[str, dict]:
    device = torch.device(os.environ.get("SCOREFIELD_BENCH_DEVICE", "cpu"))
    cpu = device.type == "cpu"
    usable = [s for s in SETTINGS if SETTINGS[s][0] == "fp32" or accelerated.bf16_unsupported(device) is None]
    repeats = 3 if quick else 5
    header = [
        "setting",
        "train steps/s",
        "x eager fp32",
        "samples/s",
        "x eager fp32",
        "first call s (warm-up)",
        "mean loss per round",
    ]
    digits_settings = [s for s in usable if not (quick and "compiled" in s)]
    digits = settings_rows(
        "digits_vp", [], device, digits_settings, train_batch=64, sample_batch=500,
        steps=5 if quick else 20, nfe=10, repeats=repeats,
    )  # fmt: skip
    cifar_settings = [s for s in usable if not (cpu and "compiled" in s)]
    cifar_batch = 8 if cpu else 128  # the preset's 128 on a GPU; a CPU step of 128 takes minutes
    cifar = settings_rows(
        "cifar10_vp", ['data.path="unused"'], device, cifar_settings, train_batch=cifar_batch,
        sample_batch=cifar_batch, steps=1 if cpu else 20, nfe=2 if cpu else 10, repeats=2 if quick else 3,
    )  # fmt: skip
    estimators = estimator_rows(device, repeats, quick)
    text = (
        f"Device: {device}. Digits: the preset's U-Net (32 channels, 40 classes), training batch 64, "
        f"sampling 500 at 10 NFE. CIFAR-10: the preset's U-Net (DDPM layout, 35.7M parameters), batch "
        f"{cifar_batch}{' (not the preset 128: CPU)' if cpu else ''}. Ratios: medians over {repeats} "
        "interleaved rounds of the per-round ratio to eager fp32. The loss column: the mean loss of each "
        "timed round (random inputs: it shows the settings train alike, not a learning curve)."
    )
    tables = [
        ("digits_vp network", markdown_table(header, digits)),
        ("cifar10_vp network", markdown_table(header, cifar)),
        (
            "the estimators' MLPs (8 features, batch 256; steps/s of 20-step rounds)",
            markdown_table(["network", "setting", "train steps/s", "x eager fp32"], estimators),
        ),
    ]
    body = text + "\n\n" + "\n\n".join(f"**{title}**\n\n{table}" for title, table in tables)
    return body, {"digits": digits, "cifar": cifar, "estimators": estimators}


@one_thread
def main(quick: bool = False) -> None:
    device = os.environ.get("SCOREFIELD_BENCH_DEVICE", "cpu")
    if device != "cpu":  # the minimal-loop sections are the CPU's; on a GPU only the settings table
        settings_md, _ = settings_section(quick)
        title = "Network settings: bfloat16 and torch.compile against eager float32"
        write_results(
            f"throughput_{torch.device(device).type}", f"Throughput on {device}", [(title, settings_md)]
        )
        return
    train_md, _ = training_section(quick)
    sample_md, _ = sampling_section(quick)
    div_md, _ = divergence_section(quick)
    settings_md, _ = settings_section(quick)
    sections = [
        ("Training steps/s: trainer vs minimal loop", train_md),
        ("Sampling score evaluations/s: library vs minimal loop", sample_md),
        ("Exact divergence: batched vector-Jacobian products vs a per-dimension loop", div_md),
        ("Network settings: bfloat16 and torch.compile against eager float32", settings_md),
    ]
    write_results(
        "throughput",
        "Throughput against minimal loops",
        sections,
        "One thread; ratios are medians over interleaved rounds.",
    )
