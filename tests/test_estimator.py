"""scikit-learn estimators: conventions, exact-density accuracy in data units, persistence, errors."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from scorefield.distributions import Gaussian
from scorefield.estimators import ScoreAnomalyDetector, ScoreDensityEstimator, optim, recipe
from scorefield.nets import Squashed
from scorefield.scalers import Whitener

# A correlated 2-D Gaussian in "data units" far from standardised (mean 50, scales 10 and 0.5),
# so a wrong scaler log-determinant would show as an offset of log(10 * 0.5) ~ 1.6 nats.
MEAN = torch.tensor([50.0, -3.0], dtype=torch.float64)
COV = torch.tensor([[100.0, 2.0], [2.0, 0.25]], dtype=torch.float64)
COV3 = torch.tensor([[4.0, 1.0, 0.5], [1.0, 1.0, -0.1], [0.5, -0.1, 0.25]], dtype=torch.float64) * 9


@pytest.fixture(scope="module")
def fitted():
    p = Gaussian(MEAN, COV)
    g = torch.Generator().manual_seed(0)
    train, test = p.sample(1500, g).numpy(), p.sample(400, g).numpy()
    est = ScoreDensityEstimator(steps=1500, random_state=0).fit(train)
    return p, est, train, test


def test_log_density_in_data_units_matches_truth(fitted):
    p, est, _, test = fitted
    logp = est.score_samples(test)
    true = p.log_prob(torch.as_tensor(test)).numpy()
    # the physical limit is the true mean log-density; a smooth model gets within a tenth of a nat
    assert abs(logp.mean() - true.mean()) < 0.1
    assert np.abs(logp - true).mean() < 0.25  # pointwise: 1500 steps on 1275 rows
    assert est.score(test) == pytest.approx(logp.mean())


def test_grad_log_prob_is_the_data_unit_score(fitted):
    p, est, _, test = fitted
    s = est.grad_log_prob(test)
    s_true = p.score(torch.as_tensor(test)).numpy()
    rel = np.square(s - s_true).sum(1).mean() / np.square(s_true).sum(1).mean()
    assert rel < 0.06


def test_samples_have_the_data_moments(fitted):
    p, est, _, _ = fitted
    x = est.sample(2000, random_state=1)
    assert x.shape == (2000, 2)
    sd = np.sqrt(np.diag(COV.numpy()))
    assert (np.abs(x.mean(0) - MEAN.numpy()) < 0.1 * sd).all()
    # a learned flow after 1500 steps: variances within 25%, correlation within 0.1
    assert (np.abs(x.std(0) / sd - 1) < 0.12).all()
    corr = np.corrcoef(x.T)[0, 1]
    assert abs(corr - 0.4) < 0.1
    assert np.array_equal(est.sample(5, random_state=3), est.sample(5, random_state=3))


def test_save_and_load_round_trip(fitted, tmp_path):
    _, est, _, test = fitted
    est.save(tmp_path / "model.safetensors")
    back = ScoreDensityEstimator.load(tmp_path / "model.safetensors")
    np.testing.assert_allclose(
        back.score_samples(test[:20]), est.score_samples(test[:20]), rtol=1e-6, atol=1e-6
    )
    assert back.get_params() == est.get_params()
    with pytest.raises(FileNotFoundError, match="no saved estimator"):
        ScoreDensityEstimator.load(tmp_path / "missing.safetensors")


def test_scikit_learn_conventions_and_errors(fitted):
    _, est, _, _ = fitted
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "model_")
    with pytest.raises(NotFittedError):
        twin.score_samples(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ScoreDensityEstimator().fit(np.array([[0.0, 1.0]] * 20 + [[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="features"):
        est.score_samples(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="'sde' parameter of ScoreDensityEstimator"):
        ScoreDensityEstimator(sde="nope").fit(np.random.default_rng(0).normal(size=(50, 2)))


def test_anomaly_detector_flags_the_far_points():
    g = torch.Generator().manual_seed(5)
    normal = torch.randn(800, 3, generator=g, dtype=torch.float64).numpy()
    outliers = (6 + torch.randn(40, 3, generator=g, dtype=torch.float64)).numpy()
    det = ScoreAnomalyDetector(contamination=0.05, steps=800, random_state=0).fit(normal)
    assert det.predict(outliers).tolist().count(-1) == len(outliers)
    flagged = (det.predict(normal) == -1).mean()
    assert 0.0 < flagged < 0.15  # about the contamination share of the training rows
    assert (det.decision_function(outliers) < 0).all()


def test_whitener_is_an_invertible_affine_map_with_its_log_determinant():
    g = torch.Generator().manual_seed(1)
    x = Gaussian(torch.tensor([1.0, -2.0, 30.0], dtype=torch.float64), COV3).sample(4000, g)
    w = Whitener().fit(x)
    z = w.transform(x)
    # the shrinkage is small for 4000 rows in 3-D: the whitened rows have about unit covariance
    torch.testing.assert_close(torch.cov(z.T), torch.eye(3, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(w.inverse_transform(z), x)
    jac = torch.autograd.functional.jacobian(lambda row: w.transform(row[None])[0], x[0])  # dz/dx
    torch.testing.assert_close(w.log_det, torch.linalg.slogdet(jac)[1])
    s = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(w.pullback(s), s @ jac)  # chain rule: grad_x = J^T grad_z
    # a constant feature and an exact linear relation: degenerate directions, still a finite map
    degenerate = torch.cat([x, x[:, :1] - 2 * x[:, 1:2], torch.full_like(x[:, :1], 3.0)], dim=1)
    w = Whitener().fit(degenerate)
    assert torch.isfinite(w.matrix).all() and torch.isfinite(w.log_det)
    torch.testing.assert_close(w.inverse_transform(w.transform(degenerate)), degenerate)


def test_a_zero_network_is_the_whitened_gaussian_in_data_units():
    g = torch.Generator().manual_seed(2)
    x = Gaussian(MEAN, COV).sample(300, g).numpy()
    est = ScoreDensityEstimator(steps=1, t_eval=1e-3, random_state=0).fit(x)
    output = est.model_.net.net.output
    torch.nn.init.zeros_(output.weight), torch.nn.init.zeros_(output.bias)
    # denoiser preconditioning: F = 0 is the score of N(0, I) diffused, which VP leaves N(0, I) at every t,
    # so log p is the Gaussian with the whitener's mean and covariance, mapped back to data units
    std = est.scaler_.standardizer.std.double()
    precision = est.scaler_.matrix.double() @ est.scaler_.matrix.double()
    cov = torch.linalg.inv(precision) * std[:, None] * std[None, :]
    truth = Gaussian(est.scaler_.standardizer.mean.double(), cov).log_prob(torch.as_tensor(x[:50]))
    np.testing.assert_allclose(est.score_samples(x[:50]), truth.numpy(), rtol=0, atol=2e-3)


def test_far_outliers_get_a_finite_log_density_below_the_data(fitted):
    _, est, _, test = fitted
    far = np.array([[50.0 + 1e3, -3.0], [50.0, -3.0 - 1e2]])  # 100 and 200 standard deviations out
    logp = est.score_samples(far)
    assert np.isfinite(logp).all() and (logp < est.score_samples(test).min()).all()


def test_a_run_shorter_than_one_held_out_check_keeps_its_training():
    """The held-out loss is also evaluated at the last step, so 60 steps are kept, not the initial net."""
    x = Gaussian(MEAN, COV).sample(300, torch.Generator().manual_seed(1)).numpy()
    est = ScoreDensityEstimator(steps=60, hidden=16, random_state=0).fit(x)
    # the initial network of the same seed (the builder seeds it: no global seed needed)
    initial = dict(est._build(torch.ones(2), None).named_parameters())
    assert est.n_steps_ == 60 and np.isfinite(est.validation_loss_)
    trained = dict(est.model_.named_parameters())
    assert all(initial[k].shape == v.shape for k, v in trained.items())
    assert any(not torch.equal(v, initial[k]) for k, v in trained.items())


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_fit_and_load_leave_the_global_random_state_alone(sde, tmp_path):
    x = Gaussian(MEAN, COV).sample(200, torch.Generator().manual_seed(3)).numpy()
    params = {"sde": sde, "steps": 20, "hidden": 8, "t_eval": 1e-2, "random_state": 4}
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, (_, numpy_keys, numpy_pos, *_) = torch.get_rng_state(), np.random.get_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    est = ScoreDensityEstimator(**params).fit(x)
    est.save(tmp_path / "model.safetensors")
    back = ScoreDensityEstimator.load(tmp_path / "model.safetensors")
    assert torch.equal(torch.get_rng_state(), torch_state)
    _, keys, pos, *_ = np.random.get_state()
    assert np.array_equal(keys, numpy_keys) and pos == numpy_pos
    if cuda_states:
        assert all(
            torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_states, strict=True)
        )
    # and the global state does not decide the model: another one gives the same fit
    torch.manual_seed(999)
    twin = ScoreDensityEstimator(**params).fit(x)
    for (name, a), b in zip(est.model_.state_dict().items(), twin.model_.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(back.score_samples(x[:5]), est.score_samples(x[:5]))


def test_squashed_takes_its_bound_at_construction_and_saves_it():
    class Echo(torch.nn.Module):  # the wrapped network: returns what it sees
        def forward(self, u, c):
            return u

    bound = torch.tensor([1.0, 4.0])
    net = Squashed(Echo(), bound)
    assert torch.equal(net.bound, bound) and net.bound.data_ptr() != bound.data_ptr()  # a copy, a buffer
    assert set(net.state_dict()) == {"bound", "frequencies"}
    x = torch.tensor([[0.01, 0.01], [1e6, -1e6]])
    u = net(x, torch.zeros(2))
    torch.testing.assert_close(u[0], x[0], rtol=1e-4, atol=0)  # nearly the identity well inside
    torch.testing.assert_close(u[1], torch.tensor([1.0, -4.0]))  # the box's faces far outside
    with_features = Squashed(Echo(), bound, n_frequencies=3, scale=0.5, seed=7)
    assert with_features(x, torch.zeros(2)).shape == (2, 2 + 2 * 3)
    assert torch.equal(with_features.frequencies, Squashed(Echo(), bound, 3, 0.5, seed=7).frequencies)
    for bad in (torch.tensor([1.0, 0.0]), torch.tensor([1.0, float("inf")]), torch.ones(2, 2)):
        with pytest.raises(ValueError, match="bound must be one positive finite number per feature"):
            Squashed(Echo(), bad)


def test_the_learning_rate_plan_warms_up_then_drops_tenfold_on_schedule_or_at_a_plateau():
    plan = recipe.LearningRatePlan(
        1000
    )  # warm-up over WARMUP_STEPS, full rate, LOW_RATE for the last LR_DROP
    assert (recipe.WARMUP_STEPS, recipe.LR_DROP, recipe.LOW_RATE) == (50, 0.2, 0.1)
    assert plan.lr_factor(0) == pytest.approx(1 / 50) and plan.lr_factor(48) < 1.0 == plan.lr_factor(49)
    assert plan.lr_factor(799) == 1.0 and plan.lr_factor(800) == pytest.approx(0.1)  # steps 801..1000
    assert plan.drops_after(800) and not plan.at_low_rate(799) and plan.at_low_rate(800)
    plan.drop_early(500)  # a plateau at the full rate after 500 steps: 200 steps at the low rate
    assert (plan.drop_at, plan.end) == (500, 700) and plan.lr_factor(500) == pytest.approx(0.1)
    plan = recipe.LearningRatePlan(1000)
    plan.drop_early(900)  # never past the planned end
    assert plan.end == 1000
    assert recipe.planned_steps() == recipe.MAX_STEPS and recipe.planned_steps(42) == 42


@pytest.mark.parametrize("weighting", ["likelihood", "std2"])
def test_training_loss_from_targets_is_sde_dsm(weighting):
    # the terms drawn once per chunk of rows give sde_dsm's loss of the same draws, row by row
    from scorefield.losses import sde_dsm

    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    base = recipe.MixtureBase(recipe.fit_gmm(z, seed=0, components=(2,)))
    model = recipe.build_model(recipe.make_sde("vp"), recipe.squash_bound(z), 16, 2, "denoiser", 0, base)
    torch.nn.init.normal_(model.net.net.output.weight, std=0.1)  # a network that is not zero
    rows = recipe.targets(model, z, weighting, torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = sde_dsm(
            model,
            model.sde,
            z,
            weighting=weighting,
            importance_sampling=weighting == "likelihood",
            generator=torch.Generator().manual_seed(1),
        )
        torch.testing.assert_close(recipe.dsm_loss(model, rows), direct, rtol=1e-4, atol=1e-5)


def test_recipe_adamw_takes_torch_adamw_steps_on_flat_weights():
    # the same losses through recipe.AdamW (flat weights, clipped) and torch.optim.AdamW after
    # clip_grad_norm_: the same weights to float rounding; release gives each its own memory
    nets = [
        torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2)) for _ in range(2)
    ]
    nets[1].load_state_dict(nets[0].state_dict())
    ours = optim.AdamW(nets[0].parameters(), lr=0.05, weight_decay=0.1, max_norm=0.05)
    ref = torch.optim.AdamW(nets[1].parameters(), lr=0.05, weight_decay=0.1)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        ours.zero_grad()
        nets[0](x).square().mean().backward()
        ours.step()
        ref.zero_grad()
        nets[1](x).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(nets[1].parameters(), 0.05)
        ref.step()
    ours.release()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)
        assert a.grad is None
    pointers = {p.untyped_storage().data_ptr() for p in nets[0].parameters()}
    assert len(pointers) == len(list(nets[0].parameters()))
