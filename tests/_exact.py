"""Exact diffused scores for the sampler and likelihood tests."""

import torch

from scorefield.distributions import GaussianMixture


def held_apart_mixture(dtype=torch.float64) -> GaussianMixture:
    """Three modes, held apart, with unequal weights so weight errors show."""
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.5]], dtype=dtype)
    covs = (0.5**2 * torch.eye(2, dtype=dtype)).expand(3, 2, 2).clone()
    return GaussianMixture(means, covs, torch.tensor([0.6, 0.3, 0.1], dtype=dtype))


def exact_score(mixture, sde):
    """``score_fn(x, t[B])`` of the exact marginal ``p_t``; samplers pass one time per batch."""

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t).reshape(-1)
        if not bool((t == t[0]).all()):
            raise AssertionError("the exact score helper expects one time per batch")
        return mixture.diffuse(sde, float(t[0])).score(x.to(mixture.means.dtype)).to(x.dtype)

    return score_fn
