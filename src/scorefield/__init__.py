"""scorefield: score-based generative modelling in PyTorch."""
