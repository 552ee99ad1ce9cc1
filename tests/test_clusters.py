"""Runs conditioned on k-means clusters (``data.labels = clusters``): the clusters found and stored, the
mixture sampled by the clusters' shares (keyed by sample, not by batch), the likelihood's bound at the
nearest cluster against the whole mixture, inpainting from the nearest cluster, and the refusals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from scorefield.distributions import Gaussian
from scorefield.keyed import KeyedNoise
from scorefield.likelihood import log_likelihood
from scorefield.multistep import sample_fast
from scorefield.run.config import ConfigError, load_config
from scorefield.run.finished import RunError, load_run
from scorefield.run.train import train

CENTRES = ((-2.0, 0.0), (2.0, 1.0))
COUNTS = (600, 200)  # shares 0.75 and 0.25


def write_table(path) -> None:
    g = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b"])
        for centre, n in zip(CENTRES, COUNTS, strict=True):
            for a, b in g.normal(centre, 0.3, (n, 2)):
                writer.writerow([f"{a:.5f}", f"{b:.5f}"])


def overrides(path) -> list[str]:
    return [
        f'data.path="{path}"',
        "data.labels=clusters",
        "model.num_classes=2",
        "model.hidden=64",
        "model.depth=2",
        "model.embed_dim=16",
        "train.batch_size=128",
        "train.steps=300",
        "train.ckpt_every=300",
        "train.warmup=20",
        "train.ema_decay=0.99",
        "train.label_dropout=0.0",
        "train.device=cpu",
        "sample.sampler=dpm",
        "sample.steps=20",
    ]


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clusters")
    write_table(folder / "table.csv")
    train(load_config(None, overrides(folder / "table.csv")), folder / "run", progress=False)
    return load_run(folder / "run")


def _side(x: torch.Tensor) -> torch.Tensor:
    """Which centre each row is nearer to (0 or 1)."""
    return (x[:, 0] > 0).long()


def _order(run) -> torch.Tensor:
    """The run's cluster index of each true centre (k-means numbers its clusters in its own order)."""
    z = run.scaler.transform(torch.tensor(CENTRES, dtype=torch.float32))
    return run.nearest_cluster(z)


def test_the_clusters_are_found_and_stored_with_their_shares(clustered):
    order = _order(clustered)
    assert sorted(order.tolist()) == [0, 1]
    weights = clustered.clusters["weights"][order]
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.25], dtype=torch.float64))
    centres = clustered.scaler.inverse_transform(clustered.clusters["centroids"][order])
    torch.testing.assert_close(centres, torch.tensor(CENTRES), atol=0.05, rtol=0)
    assert clustered.classes == ("0", "1")


def test_samples_draw_the_clusters_by_their_shares_whatever_the_batch(clustered):
    n = 2000
    x = clustered.sample(n, seed=3)
    share = _side(x).float().mean().item()
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / n) ** 0.5  # the right cluster holds a quarter
    for centre, side in zip(CENTRES, (0, 1), strict=True):
        mean = x[_side(x) == side].mean(0)
        torch.testing.assert_close(mean, torch.tensor(centre), atol=0.15, rtol=0)
    again = clustered.sample(64, seed=3, batch_size=7)
    torch.testing.assert_close(again, x[:64], atol=1e-4, rtol=1e-4)  # the batch changes rounding only
    rows = torch.arange(n)
    assert torch.equal(clustered.draw_clusters(3, rows)[10:20], clustered.draw_clusters(3, rows[10:20]))


def test_cluster_draws_are_stratified_yet_each_is_a_draw_of_the_shares(clustered):
    right = int(_order(clustered)[1])
    for start, n in ((0, 1000), (537, 1000), (12_345, 200)):
        counts = (clustered.draw_clusters(5, torch.arange(start, start + n)) == right).sum().item()
        assert abs(counts - 0.25 * n) <= 2  # independent draws: +- 14 (1000 rows), 6 (200 rows) for one sd
    seeds = 2000  # one row under many seeds: a fair draw of the shares
    hits = sum(int(clustered.draw_clusters(s, torch.tensor([7]))[0] == right) for s in range(seeds))
    assert abs(hits / seeds - 0.25) < 4 * (0.25 * 0.75 / seeds) ** 0.5


def test_the_log_density_is_the_bound_at_the_nearest_cluster_and_nearly_the_mixture(clustered):
    """log w_k + log p(x | k) <= log sum_j w_j p(x | j): the run reports the left side at the nearest k,
    which for clusters this far apart is the whole mixture's log-density to well under 0.01 nat."""
    x = torch.tensor([[-2.1, 0.2], [1.8, 1.1], [0.0, 0.5]])
    reported = clustered.log_prob(x)
    z = clustered.scaler.transform(x)
    s = clustered.config.sample

    def log_joint(labels: torch.Tensor) -> torch.Tensor:
        logp, _ = log_likelihood(
            lambda x, t: clustered.diffusion.score_t(x, t, labels), clustered.diffusion.sde, z,
            rtol=s.rtol, atol=s.atol, t_eval=clustered.config.sde.t_min,
        )  # fmt: skip
        return logp.double() + clustered.clusters["weights"][labels].log() + clustered.scaler.log_det

    nearest = clustered.nearest_cluster(z)
    assert torch.equal(nearest[:2], _order(clustered))
    torch.testing.assert_close(reported, log_joint(nearest), atol=1e-6, rtol=0)
    # every row under each cluster: the adaptive solver steps for the whole batch, so a row's value moves
    # with the batch's labels by about the solver's tolerance (rtol 1e-5 of the integral): 2e-3 nat
    mixture = torch.stack([log_joint(torch.full((3,), k)) for k in range(2)], 1).logsumexp(1)
    assert (reported <= mixture + 2e-3).all()
    assert (mixture[:2] - reported[:2]).max() < 0.01
    both = clustered.log_prob(x, clusters=2)  # the whole mixture, from the same solves as log_joint's
    torch.testing.assert_close(both, mixture, atol=2e-3, rtol=0)
    assert (both >= reported - 1e-9).all()  # more terms of a sum of positive terms
    with pytest.raises(RunError, match="clusters must be between 1 and the run's 2 clusters, got 3"):
        clustered.log_prob(x, clusters=3)


def test_inpainting_fills_from_the_most_probable_cluster_given_the_observed_entries(clustered):
    x = torch.tensor([[-2.0, 0.0], [2.0, 0.0]]).repeat(50, 1)
    mask = torch.tensor([True, False])
    filled = clustered.inpaint(x, mask, seed=1)
    assert torch.equal(filled[:, 0], x[:, 0])
    left, right = filled[0::2, 1].mean().item(), filled[1::2, 1].mean().item()
    assert abs(left - 0.0) < 0.2 and abs(right - 1.0) < 0.2
    blank = torch.zeros(201, 2, dtype=torch.bool)
    blank[0, 0] = True  # every other row observes nothing: a draw of the mixture, its cluster by the shares
    right = float((clustered.inpaint(torch.zeros(201, 2), blank, seed=1)[1:, 0] > 0).float().mean())
    assert abs(right - COUNTS[1] / sum(COUNTS)) < 0.06  # stratified: 50 of 200 up to O(log n)
    for refused in ({"choose": False}, {"guidance": 1.0}):  # no unconditional model, no class to guide to
        with pytest.raises(RunError, match="fills each row from its most probable cluster, unguided"):
            clustered.inpaint(x, mask, **refused)


def test_the_most_probable_cluster_weighs_the_clusters_gaussians_on_the_observed_entries(clustered):
    """argmax_k log w_k + log N(z_O; mu_k,O, Sigma_k,OO), with the marginal computed here by
    distributions.Gaussian; near the midpoint of the first column the larger cluster's share decides
    where the nearest centroid would not."""
    z = clustered.scaler.transform(torch.tensor([[a, 0.0] for a in torch.linspace(-0.2, 0.2, 81).tolist()]))
    mask = torch.tensor([True, False])
    stack, log_w = clustered.component_moments, clustered.clusters["weights"].log()
    expected = torch.stack(
        [
            Gaussian(stack.means[k, :1], stack.covs[k, :1, :1]).log_prob(z[:, :1].double()) + log_w[k]
            for k in (0, 1)
        ],
        dim=1,
    ).argmax(1)
    chosen = clustered.most_probable_cluster(z, mask)
    assert torch.equal(chosen, expected)
    nearest = clustered.nearest_cluster(z, mask)
    assert 0 < int((chosen != nearest).sum()) < 40  # they differ only near the midpoint
    big = int(clustered.clusters["weights"].argmax())
    assert bool((chosen[nearest != chosen] == big).all())  # where they differ, the larger cluster wins


def test_each_clusters_few_step_samples_start_from_its_own_gaussian(clustered):
    """The run keeps one Gaussian per cluster (the mean of its rows, in model units, and their covariance
    shrunk toward the pooled one); ``sample_fast`` carries each sample from its cluster's Gaussian."""
    stack = clustered.component_moments
    torch.testing.assert_close(stack.means.float(), clustered.clusters["centroids"], atol=1e-5, rtol=0)
    torch.testing.assert_close(stack.weights, clustered.clusters["weights"])
    assert stack.covs.shape == (2, 2, 2) and bool((stack.variances > 0).all())
    rows, sde = torch.arange(300), clustered.diffusion.sde
    drawn = clustered.draw_clusters(4, rows)
    x = clustered.sample(300, sampler="fast", steps=6, seed=4)
    x_T = sde.prior_std * KeyedNoise(4, rows).randn((300, 2))
    z, info = sample_fast(
        clustered.score_functions(drawn, 0.0).at_time, sde, x_T, 6, moments=stack, components=drawn
    )
    assert info["start"] < 1
    torch.testing.assert_close(x, clustered.scaler.inverse_transform(z))
    assert (_side(x) == torch.argsort(_order(clustered))[drawn]).float().mean() > 0.97


def test_a_grid_is_tuned_on_the_mixture(clustered):
    info = clustered.tune_grid(5, n=32, max_iter=5, n_starts=1)
    assert info["grid"].numel() >= 2 and info["path"].is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["model.num_classes=0"], r"data.labels = clusters needs model.num_classes >= 2"),
        (["model.num_classes=1"], r"data.labels = clusters needs model.num_classes >= 2"),
        (['data.label_column="b"'], r"data.labels = clusters makes its own labels: drop data.label_column"),
    ],
)
def test_cluster_config_mistakes_are_one_clear_sentence(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*overrides(tmp_path / "t.csv"), *extra])


def test_fewer_examples_than_clusters_are_refused(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n0,1\n1,0\n2,2\n")
    config = load_config(None, [*overrides(tmp_path / "t.csv"), "model.num_classes=5"])
    with pytest.raises(ConfigError, match="model.num_classes = 5 clusters need at least 5 examples, got 3"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_command_line_sums_over_the_clusters_asked_for(clustered, tmp_path, capsys):
    from scorefield.cli import main

    x = np.array([[-2.1, 0.2], [1.8, 1.1]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    for k in (1, 2):
        assert main(["likelihood", "--run", str(clustered.run_dir), "--data", str(tmp_path / "x.npy"),
                     "--clusters", str(k), "--out", str(tmp_path / f"l{k}.npy")]) == 0  # fmt: skip
        expected = clustered.log_prob(torch.from_numpy(x), clusters=k).numpy()
        np.testing.assert_allclose(np.load(tmp_path / f"l{k}.npy").ravel(), expected, atol=1e-6)
    assert main(["likelihood", "--run", str(clustered.run_dir), "--data", str(tmp_path / "x.npy"),
                 "--clusters", "3"]) == 2  # fmt: skip
    assert "clusters must be between 1 and the run's 2 clusters, got 3" in capsys.readouterr().err


def test_the_figures_use_the_clusters_models(clustered, tmp_path, monkeypatch):
    """`scorefield plot` draws a run conditioned on clusters through its clusters' models (the null label
    was never trained): the denoising strip denoises each row by its own cluster's model, so the rows
    of each cluster noised to t = 0.2 come back near their centre (through the null label: -1.07 and 0.18
    for the first coordinate instead of -2 and 2)."""
    from scorefield import viz
    from scorefield.cli import main

    seen = {}
    original = viz.plot_denoising_strip

    def spy(x0, levels, denoise_fn, **kwargs):
        seen["x0"], seen["denoise"] = x0, denoise_fn
        return original(x0, levels, denoise_fn, **kwargs)

    monkeypatch.setattr(viz, "plot_denoising_strip", spy)
    args = ["plot", "--run", str(clustered.run_dir), "--what", "denoise", "field", "langevin", "--n", "64"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert {p.suffix for p in tmp_path.iterdir()} >= {".png", ".gif"}
    x0 = seen["x0"]
    left = clustered.scaler.inverse_transform(x0.cpu())[:, 0] < 0
    t = torch.full((x0.shape[0],), 0.2)
    noisy = clustered.diffusion.sde.marginal(t)[0][:, None] * x0  # the noise-free point of each row's path
    denoised = clustered.scaler.inverse_transform(seen["denoise"](noisy, t))
    torch.testing.assert_close(denoised[left].mean(0), torch.tensor(CENTRES[0]), atol=0.2, rtol=0)
    torch.testing.assert_close(denoised[~left].mean(0), torch.tensor(CENTRES[1]), atol=0.2, rtol=0)


def test_a_run_without_clusters_says_so(tmp_path):
    config = load_config(None, ["data.n=64", "model.hidden=8", "model.depth=1", "model.embed_dim=8",
                                "train.batch_size=32", "train.steps=2", "train.device=cpu"])  # fmt: skip
    train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    for call in (
        lambda: run.draw_clusters(0, torch.arange(3)),
        lambda: run.nearest_cluster(torch.zeros(3, 2)),
    ):
        with pytest.raises(RunError, match=r"is not conditioned on clusters \(data.labels = data\)"):
            call()
