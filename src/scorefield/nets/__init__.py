"""Networks: noise and class-label embeddings, an MLP, a U-Net and a wrapper that softly clips a
network's input (``Squashed``). They know nothing about SDEs or losses. ``Network``, the base of the MLP
and the U-Net, runs them in bfloat16 and compiled on request (``accelerated``)."""

from .accelerated import PRECISIONS, Network
from .embeddings import EMBEDDINGS, GaussianFourierEmbedding, LabelEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .squashed import Squashed
from .unet import UNet

__all__ = [
    "EMBEDDINGS",
    "GaussianFourierEmbedding",
    "LabelEmbedding",
    "MLP",
    "Network",
    "PRECISIONS",
    "SinusoidalEmbedding",
    "Squashed",
    "UNet",
]
