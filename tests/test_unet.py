"""The U-Net: image shapes in and out (odd sizes too), a zero start, conditioning, gradients, seeding,
and training under ScoreModel."""

from __future__ import annotations

import pytest
import torch

from scorefield import losses
from scorefield.nets.unet import UNet, level_sizes
from scorefield.score import NoiseConditionalScore, ScoreModel
from scorefield.sde import VPSDE

SHAPES = [(1, 8), (1, 28), (3, 32)]


def seeded_unet(seed: int = 0, **kwargs) -> UNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(**{"channels": 16, "n_res_blocks": 1, **kwargs})


def perturbed(net: UNet, seed: int = 1) -> UNet:
    """The net with noise added to every parameter: a fresh net says F = 0 (its output conv and the last
    conv of every residual branch start at zero), a perturbed one shows what flows through."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def test_level_sizes_halve_rounding_up():
    assert level_sizes(28, 4) == [28, 14, 7, 4]
    assert level_sizes(32, 3) == [32, 16, 8]
    assert level_sizes(8, 2) == [8, 4]


@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_output_has_the_shape_of_the_input_and_starts_at_zero(channels, size):
    mults = (1, 2) if size == 8 else (1, 2, 2)
    attention = (4,) if size == 8 else (level_sizes(size, 3)[-1],)
    net = seeded_unet(
        in_channels=channels, image_size=size, channel_mults=mults, attention_resolutions=attention
    )
    x = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(0))
    out = net(x, torch.tensor([-3.0, 0.0, 1.0]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    out = perturbed(net)(x, -1.0)  # a python number is broadcast like MLP's c
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_odd_sizes_through_four_levels():
    net = perturbed(seeded_unet(in_channels=1, image_size=28, channel_mults=(1, 1, 2, 2)))
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert net(x, torch.zeros(2)).shape == x.shape  # 28 -> 14 -> 7 -> 4 and back to 7, 14, 28


def test_parameter_count_follows_the_widths():
    def count(net: UNet) -> int:
        return sum(p.numel() for p in net.parameters())

    small = seeded_unet(in_channels=1, image_size=8, channels=16)
    wide = seeded_unet(in_channels=1, image_size=8, channels=32)
    attention = seeded_unet(in_channels=1, image_size=8, channels=16, attention_resolutions=(8,))
    assert 1e4 < count(small) < 1e6
    assert 3 < count(wide) / count(small) < 4.5  # convolutions dominate: about 4x for twice the width
    # one attention block after each of the 1 + 2 blocks at size 8: GroupNorm, qkv and proj 1x1 convs
    assert count(attention) - count(small) == 3 * (2 * 16 + 16 * 48 + 48 + 16 * 16 + 16)


def test_the_conditioning_changes_the_output():
    net = perturbed(seeded_unet(in_channels=1, image_size=8))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = net(x, torch.full((4,), -2.0)), net(x, torch.full((4,), 1.0))
    assert (a - b).abs().max() > 1e-3 * a.abs().max()
    # per example: changing c of example 0 leaves the others untouched (GroupNorm is per example)
    c = torch.full((4,), -2.0)
    c[0] = 1.0
    mixed = net(x, c)
    assert torch.allclose(mixed[1:], a[1:], atol=1e-6) and torch.allclose(mixed[0], b[0], atol=1e-6)


def test_gradients_reach_every_parameter():
    net = seeded_unet(in_channels=3, image_size=8, channel_mults=(1, 2), attention_resolutions=(4,))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    # fresh, only the zero-initialised output conv (and the zero residual branches) see a gradient
    net(x, torch.tensor([-1.0, 0.5])).square().sum().backward()
    assert x.grad.abs().sum() == 0 and net.conv_out.weight.grad is not None
    perturbed(net)  # once the zero-initialised layers have moved, every parameter sees gradient
    net.zero_grad()
    x.grad = None
    net(x, torch.tensor([-1.0, 0.5])).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_the_same_seed_gives_the_same_network():
    kwargs = {"in_channels": 1, "image_size": 8, "attention_resolutions": (4,)}
    a, b, c = seeded_unet(0, **kwargs), seeded_unet(0, **kwargs), seeded_unet(1, **kwargs)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters(), strict=True))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    perturbed(a), perturbed(b)
    assert torch.equal(a(x, torch.zeros(2)), b(x, torch.zeros(2)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(1, 28, channel_mults=(1, 2), attention_resolutions=(16,))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(1, 8, channel_mults=())
    with pytest.raises(ValueError, match="expected images"):
        UNet(1, 8, channels=8)(torch.zeros(2, 64), torch.zeros(2))


def test_a_score_model_with_the_unet_learns_under_vp():
    """A few sde_dsm steps on a fixed tiny batch with fixed noise lower the loss (same draws before/after)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 1, 8, 8, generator=g) > 0.6).float() * 2 - 1  # binary images in [-1, 1]
    model = ScoreModel(seeded_unet(in_channels=1, image_size=8), VPSDE(0.1, 20.0), param="eps")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        return losses.sde_dsm(model, model.sde, x, generator=torch.Generator().manual_seed(1)).mean()

    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(loss()) < 0.8 * before
    # the same net serves the noise-conditional wrapper (c = log sigma)
    ncsn = NoiseConditionalScore(model.net)
    assert ncsn(x, torch.full((16,), 0.5)).shape == x.shape
