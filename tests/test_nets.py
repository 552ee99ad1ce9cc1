"""Networks: embedding formulas, shapes, conditioning actually used, argument errors."""

import math

import pytest
import torch

from scorefield.nets import MLP, GaussianFourierEmbedding, SinusoidalEmbedding


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_sinusoidal_embedding_matches_formula():
    emb = SinusoidalEmbedding(8, max_period=10_000.0)
    c = torch.tensor([-3.0, 0.0, 0.7, 5.0], dtype=torch.float64)
    e = emb(c)
    assert e.shape == (4, 8)
    frequencies = torch.tensor([10_000.0 ** (-k / 4) for k in range(4)], dtype=torch.float64)
    expected = torch.cat([torch.sin(c[:, None] * frequencies), torch.cos(c[:, None] * frequencies)], dim=1)
    torch.testing.assert_close(e, expected)


def test_fourier_embedding_is_sin_cos_of_fixed_frequencies_and_is_saved():
    emb = GaussianFourierEmbedding(16, scale=3.0)
    c = torch.linspace(-4, 4, 7)
    e = emb(c)
    assert e.shape == (7, 16)
    angles = 2 * math.pi * c[:, None] * emb.frequencies
    torch.testing.assert_close(e, torch.cat([angles.sin(), angles.cos()], dim=1))
    assert emb.frequencies.std() > 1.0  # drawn with scale 3, not 1
    fresh = GaussianFourierEmbedding(16, scale=3.0)
    assert not torch.equal(fresh(c), e)
    fresh.load_state_dict(emb.state_dict())  # the random frequencies travel with the weights
    torch.testing.assert_close(fresh(c), e)


@pytest.mark.parametrize("embed_dim", [0, 7])
def test_embeddings_reject_odd_dims(embed_dim):
    for cls in (SinusoidalEmbedding, GaussianFourierEmbedding):
        with pytest.raises(ValueError, match="even"):
            cls(embed_dim)


def test_mlp_shapes_vectors_images_and_energies():
    x = torch.randn(5, 3)
    assert MLP(3, hidden=16, depth=2)(x, torch.zeros(5)).shape == (5, 3)
    images = torch.randn(4, 2, 3, 3)
    assert MLP(18, hidden=16)(images, torch.zeros(4)).shape == (4, 2, 3, 3)
    assert MLP(3, hidden=16, cond=False, out_dim=1)(x).shape == (5, 1)


def test_mlp_width_and_depth():
    net = MLP(3, hidden=32, depth=4, cond=False)
    assert len(net.hidden_layers) == 4
    assert [layer.out_features for layer in net.hidden_layers] == [32] * 4
    assert net.hidden_layers[0].in_features == 3 and net.output.out_features == 3


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_mlp_uses_its_conditioning(embedding):
    net = MLP(2, hidden=16, embedding=embedding)
    x = torch.randn(6, 2)
    c = torch.linspace(-2, 2, 6).requires_grad_(True)
    out = net(x, c)
    (grad_c,) = torch.autograd.grad(out.sum(), c)
    assert (grad_c.abs() > 0).all()
    # a number is broadcast to every example
    torch.testing.assert_close(net(x, 0.5), net(x, torch.full((6,), 0.5)))


def test_mlp_argument_errors():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="conditional"):
        MLP(3)(x)
    with pytest.raises(ValueError, match="unconditional"):
        MLP(3, cond=False)(x, torch.zeros(2))
    with pytest.raises(ValueError, match="features"):
        MLP(4, cond=False)(x)
    with pytest.raises(ValueError, match="unknown embedding"):
        MLP(3, embedding="learned")
    with pytest.raises(ValueError, match="depth"):
        MLP(3, depth=0)
