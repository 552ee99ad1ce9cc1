"""Inpainting: sampling what is missing

`sf.sample_conditional` completes samples of which some entries are observed: it runs the reverse
diffusion on the missing entries by sequential Monte Carlo: a few particles per row, resampled at
every step by how well they predict the next point of a noisy path of the observed entries. With the exact score of a three-mode mixture the
answer is known in closed form: given the first coordinate, the second follows a mixture of
one-dimensional Gaussians, each mode weighted by how likely it makes the observed value. The
figure compares the completions' histogram with that exact conditional density, at two observed
values: one between two modes (two answers) and one beside a single mode.
"""

import math

import matplotlib.pyplot as plt
import torch

import scorefield as sf

means = torch.tensor([[0.0, -2.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
covs = torch.tensor([[[0.5, 0.2], [0.2, 0.5]], [[0.5, -0.2], [-0.2, 0.5]], [[0.3, 0.0], [0.0, 0.3]]])
mixture = sf.GaussianMixture(means, covs.double(), [0.4, 0.4, 0.2])
sde = sf.VPSDE()


def score(x, t):
    t = float(torch.as_tensor(t).reshape(-1)[0])
    return mixture.diffuse(sde, t).score(x)


def exact_conditional(x1, grid):
    """p(x2 | x1) of the mixture: each mode's conditional Gaussian, weighted by w_k N(x1; mu_k1, S_k11)."""
    density, total = torch.zeros_like(grid), 0.0
    for mean, cov, weight in zip(mixture.means, mixture.covs, mixture.weights, strict=True):
        evidence = (
            weight * torch.exp(-0.5 * (x1 - mean[0]) ** 2 / cov[0, 0]) / math.sqrt(2 * math.pi * cov[0, 0])
        )
        mu = mean[1] + cov[1, 0] / cov[0, 0] * (x1 - mean[0])
        var = cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]
        density += evidence * torch.exp(-0.5 * (grid - mu) ** 2 / var) / torch.sqrt(2 * math.pi * var)
        total += evidence
    return density / total


fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
grid = torch.linspace(-4.5, 4.5, 400, dtype=torch.float64)
for ax, x1 in zip(axes, (0.0, 2.5), strict=True):
    observed = torch.tensor([[x1, float("nan")]], dtype=torch.float64).expand(2000, 2)
    mask = torch.tensor([True, False])  # True where observed
    generator = torch.Generator().manual_seed(0)
    filled, info = sf.sample_conditional(score, sde, observed, mask, generator=generator)
    assert torch.equal(filled[:, 0], observed[:, 0])  # observed entries are returned as they were
    x2 = filled[:, 1]
    exact = exact_conditional(x1, grid)
    exact_mean = float((exact * grid).sum() / exact.sum())
    exact_sd = float(((exact * (grid - exact_mean) ** 2).sum() / exact.sum()).sqrt())
    print(
        f"x1 = {x1}: completions' mean {x2.mean():+.3f} and sd {x2.std():.3f} "
        f"(exact {exact_mean:+.3f} and {exact_sd:.3f}), {info['nfe']} score evaluations each"
    )
    ax.hist(x2.numpy(), bins=60, density=True, alpha=0.6, label="completions")
    ax.plot(grid, exact, "k", label="exact p(x2 | x1)")
    ax.set(title=f"observed x1 = {x1}", xlabel="x2")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
