"""The networks in bfloat16 and compiled (``nets.accelerated``): runs train and resume bitwise within a
setting, keep float32 checkpoints, sample as well as in float32, refuse what the platform cannot run in
one sentence, and fall back to eager execution with one warning where ``torch.compile`` fails."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from scorefield.cli import main
from scorefield.datasets import load_data
from scorefield.metrics import energy_distance
from scorefield.nets import MLP, UNet, accelerated
from scorefield.run.build import build
from scorefield.run.checkpoint import latest_good
from scorefield.run.config import ConfigError, load_config
from scorefield.run.finished import load_run
from scorefield.run.train import train

ROOT = Path(__file__).resolve().parent.parent
BF16 = accelerated.bf16_unsupported("cpu") is None
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no native bfloat16 (AVX-512-BF16 or AMX)")
# the CUDA cases exist where a GPU with bfloat16 does (bench/device_check.sh runs them)
ON_CUDA = pytest.mark.skipif(
    not (torch.cuda.is_available() and accelerated.bf16_unsupported("cuda") is None),
    reason="no CUDA GPU with bfloat16",
)

TOY = [
    "data.n=2000",
    "model.hidden=64",
    "model.depth=2",
    "model.embed_dim=16",
    "train.batch_size=128",
    "train.ckpt_every=10",
    "train.log_every=10",
    "train.warmup=5",
    "train.keep_last=10",
    "train.device=cpu",
    "sample.sampler=dpm",
    "sample.steps=20",
]
# a U-Net on the 8x8 digits, small enough for a unit test: convolutions and GroupNorm in bfloat16
DIGITS = [
    'data.name="digits_images_train"',
    "data.dequantize=true",
    'model.kind="unet"',
    "model.channels=8",
    "model.channel_mults=[1, 2]",
    "model.n_res_blocks=1",
    "model.embed_dim=16",
    "train.batch_size=32",
    "train.ckpt_every=3",
    "train.log_every=3",
    "train.warmup=2",
    "train.keep_last=10",
    "train.device=cpu",
]


def states(run_dir) -> dict[str, torch.Tensor]:
    ckpt = latest_good(run_dir)
    flat = {f"model.{k}": v for k, v in ckpt.state["model"].items()}
    flat.update({f"ema.{k}": v for k, v in ckpt.state["ema"].items()})
    for index, moments in ckpt.state["optimizer"]["state"].items():
        flat.update({f"opt.{index}.{k}": v for k, v in moments.items() if v.ndim})
    return flat


def assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def no_compile_failure(monkeypatch):
    """A fresh record of compile failures (the process-wide one stays as it was)."""
    monkeypatch.setattr(accelerated, "_COMPILE_FAILED", [])


CASES = [
    pytest.param(TOY, 20, "cpu", id="mlp", marks=needs_bf16),
    pytest.param(DIGITS, 6, "cpu", id="unet", marks=needs_bf16),
    pytest.param(TOY, 20, "cuda", id="mlp-cuda", marks=ON_CUDA),
]


@pytest.mark.parametrize(("base", "steps", "device"), CASES)
def test_a_bf16_run_resumes_bitwise_with_float32_checkpoints(tmp_path, base, steps, device):
    on = [f'train.device="{device}"', 'train.precision="bf16"']
    config = load_config(None, [*base, f"train.steps={steps}", *on])
    half = load_config(None, [*base, f"train.steps={steps // 2}", *on])
    train(config, tmp_path / "straight", progress=False)
    train(half, tmp_path / "resumed", progress=False)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    straight = states(tmp_path / "straight")
    assert_bitwise(straight, states(tmp_path / "resumed"))
    assert {v.dtype for v in straight.values()} == {torch.float32}
    # bf16 is engaged: the same run in float32 ends elsewhere, but nearby
    train(
        load_config(None, [*base, f"train.steps={steps}", f'train.device="{device}"']),
        tmp_path / "fp32",
        progress=False,
    )
    fp32 = states(tmp_path / "fp32")
    differs = [k for k in fp32 if k.startswith("model.") and not torch.equal(fp32[k], straight[k])]
    assert differs
    for key in differs:  # an Adam step moves a weight by at most (1-b1)/sqrt(1-b2) lr = 3.2 lr
        assert (fp32[key] - straight[key]).abs().max() <= 2 * 3.2 * steps * config.train.lr


@needs_bf16
def test_bf16_keeps_float32_outside_the_network():
    net = MLP(3, hidden=32, depth=2).accelerate("bf16")
    x, c = torch.randn(16, 3), torch.rand(16)
    out = net(x, c)
    assert out.dtype == torch.float32
    reference = net.accelerate("fp32")(x, c)
    assert not torch.equal(out, reference)
    # bfloat16 keeps 8 significant bits: a relative error of 2^-8 per rounding, a few roundings deep
    torch.testing.assert_close(out, reference, rtol=0.05, atol=0.02 * float(reference.detach().abs().max()))
    out.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in net.parameters())


@needs_bf16
def test_bf16_samples_match_fp32_quality_on_a_toy(tmp_path):
    """One fp32-trained toy run sampled with its network in fp32 and in bf16 from the same noise: the
    typical sample moves by under 1% of the data's spread (a sample near the boundary between the two
    modes may cross it: the flow is chaotic there), and the energy distance to the data matches fp32's
    within the spread of fp32's own over three sampling seeds."""
    train(load_config(None, [*TOY, "train.steps=300"]), tmp_path, progress=False)
    fp32, bf16 = load_run(tmp_path), load_run(tmp_path, precision="bf16")
    data = load_data(fp32.config.data)[:2000]
    a, b = fp32.sample(2000, seed=0), bf16.sample(2000, seed=0)
    assert 0 < float((a - b).abs().median()) < 0.01 * float(data.std(0).min())
    seeds = [energy_distance(fp32.sample(2000, seed=seed), data) for seed in (1, 2, 3)]
    assert abs(energy_distance(a, data) - energy_distance(b, data)) < max(seeds) - min(seeds)


def test_bf16_is_refused_in_one_sentence_where_the_cpu_lacks_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert accelerated.bf16_unsupported("cpu") is not None
    with pytest.raises(ConfigError, match="^precision bf16 cannot run here: this CPU has neither"):
        train(load_config(None, [*TOY, "train.steps=2", 'train.precision="bf16"']), tmp_path, progress=False)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before the run was written
    with pytest.raises(ValueError, match="not mps"):
        accelerated.check_precision("bf16", "mps")
    with pytest.raises(ValueError, match="one of fp32, bf16"):
        MLP(2).accelerate("fp16")


def test_the_cli_refuses_bf16_sampling_in_one_line(monkeypatch, tmp_path, capsys):
    train(load_config(None, [*TOY, "train.steps=2"]), tmp_path / "run", progress=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    out = tmp_path / "x.npy"
    status = main(
        ["sample", "--run", str(tmp_path / "run"), "--n", "4", "--precision", "bf16", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "precision bf16 cannot run here" in err[0]
    assert not out.exists()


def _failing_compile(calls):
    def compiled(net, x, *args, **kwargs):
        calls.append(x.shape)
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(more lines)")

    return lambda: compiled


def test_a_failing_compile_warns_once_and_runs_eagerly(monkeypatch, no_compile_failure):
    calls = []
    monkeypatch.setattr(accelerated, "_compiled_forward", _failing_compile(calls))
    net = UNet(1, 8, channels=8, embed_dim=16)
    with torch.no_grad():
        net.conv_out.weight.normal_()  # a fresh U-Net returns zeros: make the comparison mean something
    x, c = torch.randn(4, 1, 8, 8), torch.rand(4)
    eager = net(x, c)
    net.accelerate(compile=True)
    with pytest.raises(ValueError, match="expected images"):  # an error of the inputs stays the user's
        net(x[:, :, 0], c)
    assert accelerated.compile_failed() is None
    with pytest.warns(RuntimeWarning, match="cannot compile the network here .*InvalidCxxCompiler") as record:
        first = net(x, c)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = net(x, c)
    assert torch.equal(first, eager) and torch.equal(second, eager)
    assert len(calls) == 2  # compiled once for the bad input, once for the good one; never again
    assert "InvalidCxxCompiler" in accelerated.compile_failed()


def test_the_switches_reach_the_network_from_config_and_run(tmp_path):
    config = load_config(None, [*TOY, "train.steps=2", "train.compile=true"])
    assert config.train.compile and config.train.precision == "fp32"
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ['train.precision="fp16"'])
    train(load_config(None, [*TOY, "train.steps=2"]), tmp_path, progress=False)
    run = load_run(tmp_path, compile=True)
    net = run.diffusion.model.net
    assert net.compiled and net.precision == "fp32"
    assert not load_run(tmp_path).diffusion.model.net.compiled


@pytest.mark.parametrize(
    ("shape", "precision", "expected"),
    [((3, 32, 32), "bf16", True), ((3, 32, 32), "fp32", False), ((1, 8, 8), "bf16", False)],
)
def test_bf16_unets_on_large_images_run_channels_last(shape, precision, expected):
    config = load_config(
        ROOT / "configs" / "cifar10_vp.toml",
        [
            'data.path="unused"',
            "model.channels=8",
            "model.channel_mults=[1]",
            "model.attention_resolutions=[]",
        ],
    )
    if precision == "bf16" and not BF16:
        pytest.skip("this CPU has no native bfloat16")
    net = build(config, shape, None, "cpu", precision).model.net
    assert net.channels_last is expected
    x, c = torch.randn(2, *shape), torch.rand(2)
    with torch.no_grad():
        net.conv_out.weight.normal_()  # a fresh U-Net returns zeros
        out = net(x, c)
        net.channels_last = not expected
        other = net(x, c)
    assert out.is_contiguous()  # the output is in the input's format whatever the feature maps'
    # the same arithmetic in another memory layout: equal up to the order of bf16 sums
    torch.testing.assert_close(out, other, rtol=0.05, atol=0.05 * float(other.abs().max()))


@pytest.mark.slow
@needs_bf16
def test_compiled_bf16_gradients_match_eager_at_every_level():
    if accelerated.compile_failed():
        pytest.skip(f"torch.compile fails here: {accelerated.compile_failed()}")
    grads = []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = UNet(1, 1, channels=16, channel_mults=[1, 2], embed_dim=16, num_classes=3)
        with torch.no_grad():  # a fresh U-Net's zero output layer would stop every gradient
            net.conv_out.weight.normal_(std=0.1)
        net.accelerate("bf16", compile=compiled)
        x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        net(
            x, torch.rand(8, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 3
        ).square().sum().backward()
        grads.append({name: p.grad for name, p in net.named_parameters()})
    for name, eager in grads[0].items():
        # bf16 rounding differs between fused and eager kernels by a few per cent; a lost gradient is 100%
        error = float((grads[1][name] - eager).norm() / eager.norm().clamp_min(1e-6))  # some are 0 at init
        assert error < 0.2, f"{name}: compiled gradient off by {error:.0%}"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_compiled_run_resumes_bitwise_and_stays_near_eager(tmp_path, precision):
    if precision == "bf16" and not BF16:
        pytest.skip("this CPU has no native bfloat16")
    if accelerated.compile_failed():
        pytest.skip(f"torch.compile fails here: {accelerated.compile_failed()}")
    setting = [f'train.precision="{precision}"']
    config = load_config(None, [*TOY, "train.steps=20", "train.compile=true", *setting])
    train(config, tmp_path / "straight", progress=False)
    train(
        load_config(None, [*TOY, "train.steps=10", "train.compile=true", *setting]),
        tmp_path / "resumed",
        progress=False,
    )
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert accelerated.compile_failed() is None
    straight = states(tmp_path / "straight")
    assert_bitwise(straight, states(tmp_path / "resumed"))
    train(load_config(None, [*TOY, "train.steps=20", *setting]), tmp_path / "eager", progress=False)
    eager = states(tmp_path / "eager")
    for key in straight:  # fused kernels round differently; Adam's steps are at most 3.2 lr each
        if key.startswith("model."):
            assert (straight[key] - eager[key]).abs().max() <= 2 * 3.2 * 20 * config.train.lr, key


@pytest.mark.slow
def test_a_compiled_network_refuses_a_label_out_of_range_as_eager_does(no_compile_failure):
    net = UNet(1, 8, channels=8, channel_mults=[1], embed_dim=16, num_classes=3).accelerate(compile=True)
    x, c = torch.randn(4, 1, 8, 8), torch.rand(4)
    assert net(x, c, torch.tensor([0, 1, 2, 3])).shape == x.shape  # 3: the null label
    with pytest.raises(ValueError, match=r"labels must lie in 0 \.\. 2"):
        net(x, c, torch.tensor([0, 1, 2, 7]))
    assert accelerated.compile_failed() is None
