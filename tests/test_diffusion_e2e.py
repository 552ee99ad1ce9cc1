"""End to end: train a VP score model with continuous-time DSM, then sample and score it."""

import pytest
import torch

from scorefield.distributions import GaussianMixture
from scorefield.likelihood import log_likelihood
from scorefield.losses import sde_dsm
from scorefield.metrics import mode_weights
from scorefield.nets.mlp import MLP
from scorefield.samplers import sample_ode, sample_pc
from scorefield.score import ScoreModel
from scorefield.sde import VPSDE

# roughly standardised data (ScoreModel's preconditioning assumes unit scale), two modes held apart
MIX = GaussianMixture(
    torch.tensor([[-1.2, -0.6], [1.2, 0.6]]),
    (0.25**2 * torch.eye(2)).expand(2, 2, 2).clone(),
    torch.tensor([0.7, 0.3]),
)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = MIX.sample(20_000, g)
    model = ScoreModel(MLP(2, hidden=128, depth=3), VPSDE(), param="eps")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2500)
    for _ in range(2500):
        batch = data[torch.randint(0, len(data), (512,), generator=g)]
        loss = sde_dsm(model, model.sde, batch, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def test_pc_and_ode_samples_recover_the_mode_weights(trained):
    sde = trained.sde
    x_T = sde.prior_sample((2000, 2), generator=torch.Generator().manual_seed(2))
    pc, _ = sample_pc(trained, sde, x_T, 300, generator=torch.Generator().manual_seed(3))
    ode, info = sample_ode(trained, sde, x_T)
    for x in (pc, ode):
        assert (mode_weights(x, MIX) - MIX.weights.double()).abs().max() < 0.05
    assert info["nfe"] < 500


def test_test_log_likelihood_is_within_a_tenth_of_a_nat_of_the_truth(trained):
    x = MIX.sample(1000, torch.Generator().manual_seed(4))
    with torch.no_grad():
        logp, _ = log_likelihood(trained, trained.sde, x, rtol=1e-4, atol=1e-4)
    # the physical limit: E_p[log p], the negative entropy of the data distribution
    truth = MIX.log_prob(x).mean()
    assert abs(logp.mean() - truth) < 0.1, (logp.mean(), truth)


def report(trained):  # pragma: no cover - numbers for the record: python tests/test_diffusion_e2e.py
    sde = trained.sde
    x_T = sde.prior_sample((2000, 2), generator=torch.Generator().manual_seed(2))
    pc, _ = sample_pc(trained, sde, x_T, 300, generator=torch.Generator().manual_seed(3))
    ode, info = sample_ode(trained, sde, x_T)
    x = MIX.sample(1000, torch.Generator().manual_seed(4))
    with torch.no_grad():
        logp, linfo = log_likelihood(trained, sde, x, rtol=1e-4, atol=1e-4)
    print("pc weights", mode_weights(pc, MIX).tolist(), "ode weights", mode_weights(ode, MIX).tolist())
    print("ode nfe", info["nfe"], "likelihood nfe", linfo["nfe"])
    print("mean test log-likelihood", float(logp.mean()), "truth", float(MIX.log_prob(x).mean()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    report(trained.__wrapped__())
