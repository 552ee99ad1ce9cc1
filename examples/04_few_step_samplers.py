"""Few-step samplers

With the exact score of a three-mode Gaussian mixture, every sampler's error is its own, not a
network's. Each sampler starts from the same prior draws and is compared with the probability-flow
ODE solved to a tight tolerance from those draws (the exact map from noise to data), by the RMS
distance to it, against the number of score evaluations it spent: `sample_fast` (UniPC on a grid
chosen for its budget), `sample_multistep` with DPM-Solver++(2M) on the same kind of grid, and the
plain Euler method on the same ODE. Every sampler takes its budget (or its time grid) as its fourth
argument and returns the samples and an `info` dict that counts the evaluations.
"""

import matplotlib.pyplot as plt
import torch

import scorefield as sf

torch.manual_seed(0)
means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.5]], dtype=torch.float64)
covs = (0.5**2 * torch.eye(2, dtype=torch.float64)).expand(3, 2, 2).clone()
mixture = sf.GaussianMixture(means, covs, [0.6, 0.3, 0.1])
sde = sf.VPSDE()


def score(x, t):
    """The exact score of the diffused mixture; the samplers pass one time for the whole batch."""
    t = float(torch.as_tensor(t).reshape(-1)[0])
    return mixture.diffuse(sde, t).score(x)


x_T = sde.prior_sample((2000, 2), generator=torch.Generator().manual_seed(0)).double()
reference, info_ref = sf.sample_ode(score, sde, x_T, rtol=1e-7, atol=1e-7)


def rms(x):
    return float((x - reference).pow(2).sum(1).mean().sqrt())


rows = []
for nfe in (5, 10, 20):
    x, info = sf.sample_fast(score, sde, x_T, nfe)
    rows.append(("sample_fast (UniPC)", info["nfe"], rms(x), x))
for nfe in (10, 20):
    x, info = sf.sample_multistep(score, sde, x_T, nfe, solver="dpm++", order=2)
    rows.append(("sample_multistep (DPM++ 2M)", info["nfe"], rms(x), x))
for steps in (20, 100):
    x, info = sf.sample_ode(score, sde, x_T, steps, method="euler")
    rows.append(("sample_ode (Euler)", info["nfe"], rms(x), x))

print(f"{'sampler':29s} {'evaluations':>11s} {'RMS to the exact flow':>22s}")
for name, nfe, error, _ in rows:
    print(f"{name:29s} {nfe:11d} {error:22.4f}")
print(f"(the exact flow itself took {info_ref['nfe']} evaluations of dopri5 at a tolerance of 1e-7)")

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), sharex=True, sharey=True)
shown = [rows[0], rows[1], rows[-1]]
for ax, (name, nfe, _, x) in zip(axes, shown, strict=True):
    ax.scatter(reference[:, 0], reference[:, 1], s=2, c="lightgrey", label="exact flow")
    ax.scatter(x[:, 0], x[:, 1], s=2, label="sampler")
    ax.set_title(f"{name.split(' ')[0]}, {nfe} evaluations", fontsize=9)
axes[0].legend(markerscale=4, fontsize=8)
fig.tight_layout()
plt.show()
