"""Networks: noise embeddings, an MLP, a U-Net and a wrapper that softly clips a network's input
(``Squashed``). They know nothing about SDEs or losses."""

from .embeddings import EMBEDDINGS, GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .squashed import Squashed
from .unet import UNet

__all__ = ["EMBEDDINGS", "GaussianFourierEmbedding", "MLP", "SinusoidalEmbedding", "Squashed", "UNet"]
