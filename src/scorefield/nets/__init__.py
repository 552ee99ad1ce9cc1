"""Networks: noise embeddings, an MLP and a U-Net. They know nothing about SDEs or losses."""

from .embeddings import EMBEDDINGS, GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .unet import UNet

__all__ = ["EMBEDDINGS", "GaussianFourierEmbedding", "MLP", "SinusoidalEmbedding", "UNet"]
