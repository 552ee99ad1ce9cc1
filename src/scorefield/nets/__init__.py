"""Networks: noise and class-label embeddings, an MLP, a U-Net and a wrapper that softly clips a
network's input (``Squashed``). They know nothing about SDEs or losses."""

from .embeddings import EMBEDDINGS, GaussianFourierEmbedding, LabelEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .squashed import Squashed
from .unet import UNet

__all__ = [
    "EMBEDDINGS",
    "GaussianFourierEmbedding",
    "LabelEmbedding",
    "MLP",
    "SinusoidalEmbedding",
    "Squashed",
    "UNet",
]
