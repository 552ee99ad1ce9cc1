"""Networks: noise embeddings and an MLP. They know nothing about SDEs or losses."""

from .embeddings import EMBEDDINGS, GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import MLP

__all__ = ["EMBEDDINGS", "GaussianFourierEmbedding", "MLP", "SinusoidalEmbedding"]
