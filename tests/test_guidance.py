"""Class-conditional score models and classifier-free guidance: label embeddings in the nets (none when
num_classes = 0, so unconditional models are bitwise what they were), labels from the data, label
dropout, the guided score's algebra and cost, a conditional run that samples the class asked for, the
config's and the command line's refusals."""

from __future__ import annotations

import csv
import hashlib
import math
import re
import shutil

import numpy as np
import pytest
import torch

from scorefield.cli import main
from scorefield.datasets import read_labelled_table
from scorefield.keyed import KeyedNoise
from scorefield.multistep import sample_fast, sample_multistep
from scorefield.nets import MLP, UNet
from scorefield.run.build import OBJECTIVES, build
from scorefield.run.checkpoint import latest_good
from scorefield.run.config import ConfigError, load_config
from scorefield.run.finished import RunError, load_run
from scorefield.run.train import drop_labels, prepare_data, train
from scorefield.samplers import guided, sample_ode, sample_pc
from scorefield.score import ScoreModel
from scorefield.sde import VPSDE

CENTRES = {"left": (-2.0, 0.0), "right": (2.0, 1.0)}


def write_clusters(path, n: int = 400, seed: int = 0) -> None:
    """Two labelled Gaussian clusters (std 0.3) in a CSV whose label column sits between the features."""
    g = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "kind", "b"])
        for name, centre in CENTRES.items():
            for a, b in g.normal(centre, 0.3, (n, 2)):
                writer.writerow([f"{a:.5f}", name, f"{b:.5f}"])


def cond_overrides(path) -> list[str]:
    return [
        f'data.path="{path}"',
        'data.label_column="kind"',
        "model.num_classes=2",
        "model.hidden=64",
        "model.depth=2",
        "model.embed_dim=16",
        "train.batch_size=128",
        "train.steps=200",
        "train.ckpt_every=100",
        "train.log_every=50",
        "train.warmup=20",
        "train.ema_decay=0.99",
        "train.device=cpu",
        "sample.sampler=dpm",
        "sample.steps=20",
    ]


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cond")
    write_clusters(folder / "clusters.csv")
    train(load_config(None, cond_overrides(folder / "clusters.csv")), folder / "run", progress=False)
    return folder / "run"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------------
# nets and the score model


def state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


MLP_TINY = ["model.hidden=32", "model.depth=2", "model.embed_dim=16"]
UNET_TINY = [
    "data.name=digits_images",
    "model.kind=unet",
    "model.channels=8",
    "model.channel_mults=[1, 2]",
    "model.n_res_blocks=1",
    "model.embed_dim=16",
]


@pytest.mark.parametrize(
    ("overrides", "shape", "n_tensors", "n_params", "digest"),
    [(MLP_TINY, (2,), 13, 3874, "e2442afc4823daa8"), (UNET_TINY, (1, 8, 8), 111, 41865, "7df867f16881bf43")],
    ids=["mlp", "unet"],
)
def test_an_unconditional_model_is_bitwise_the_one_built_before_labels(
    overrides, shape, n_tensors, n_params, digest
):
    """Tensor and parameter counts and the weights' digest as the builder gave them before num_classes
    existed (commit a3df1c6; the digest under the pinned torch of constraints.txt); a conditional
    model adds the label table only, and its other weights start equal to the unconditional ones."""
    plain = build(load_config(None, overrides), shape, None).model
    assert len(plain.state_dict()) == n_tensors and sum(p.numel() for p in plain.parameters()) == n_params
    assert not any("label" in key for key in plain.state_dict())
    if torch.__version__.split("+")[0] == "2.13.0":
        assert state_digest(plain) == digest
    k, labelled = (10, []) if len(shape) == 3 else (3, ['data.path="t.csv"', 'data.label_column="y"'])
    cond = build(load_config(None, [*overrides, *labelled, f"model.num_classes={k}"]), shape, None).model
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"net.label_embed.table.weight"} and cond.state_dict()[extra.pop()].shape[0] == k + 1
    for key, value in plain.state_dict().items():
        assert torch.equal(cond.state_dict()[key], value), key


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_nets_take_labels_and_the_null_label(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net, x = MLP(2, hidden=16, depth=2, embed_dim=8, num_classes=3), torch.randn(5, 2)
    else:
        net, x = UNet(1, 8, channels=8, embed_dim=8, num_classes=3), torch.randn(5, 1, 8, 8)
        with torch.no_grad():  # a fresh U-Net's residual branches and output start at zero
            for p in net.parameters():
                p.normal_(0, 0.2)
    c = torch.randn(5)
    null = net(x, c)
    assert torch.equal(null, net(x, c, torch.full((5,), 3)))  # y=None is the null label, index 3
    assert torch.equal(net(x, c, 1), net(x, c, torch.ones(5, dtype=torch.long)))  # one label for all
    assert not torch.allclose(net(x, c, torch.zeros(5, dtype=torch.long)), null)
    with pytest.raises(ValueError, match=r"labels must lie in 0 \.\. 2, or be 3"):
        net(x, c, torch.full((5,), 4))
    with pytest.raises(ValueError, match="must be integers"):
        net(x, c, torch.zeros(5))
    plain = MLP(2, hidden=8) if kind == "mlp" else UNet(1, 8, channels=8)
    with pytest.raises(ValueError, match="takes no class labels"):
        plain(x, c, torch.zeros(5, dtype=torch.long))


def test_score_model_passes_labels_to_the_net():
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x, c, *y):
            seen.append(y)
            return x

    model = ScoreModel(Net(), VPSDE())
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    model(x, 0.5)  # a network without labels is called as before: F(x, c)
    model.score(x, 0.5, y)
    model.denoise(x, 0.5, y)
    assert seen[0] == () and seen[1][0] is y and seen[2][0] is y


# --------------------------------------------------------------------------------------------------
# guidance


def fake_score(calls: list):
    """A score whose conditional and unconditional parts are known numbers, counting network calls."""

    def score(x, t, y=None):
        calls.append(y)
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None]
        if y is None:
            return -x + t
        return -(x - y[:, None].to(x.dtype) - 1) * 2

    return score


@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
def test_the_guided_score_is_exactly_one_plus_w_conditional_minus_w_unconditional(w):
    calls: list = []
    score = fake_score(calls)
    x, t = torch.randn(6, 2), torch.rand(6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    expected = (1 + w) * score(x, t, y) - w * score(x, t, None)
    calls.clear()
    assert torch.equal(guided(score, y, w)(x, t), expected)
    assert len(calls) == (1 if w == 0 else 2)  # w = 0: the conditional score alone
    one_label = guided(score, 2, w)(x, 0.3)  # one class index for the batch, a python time
    assert torch.equal(one_label, (1 + w) * score(x, 0.3, torch.full((6,), 2)) - w * score(x, 0.3, None))
    with pytest.raises(ValueError, match="4 labels for a batch of 6"):
        guided(score, torch.arange(4), w)(x, t)
    with pytest.raises(ValueError, match="finite"):
        guided(score, 1, math.inf)


def test_every_sampler_takes_the_guided_score_and_counts_its_evaluations():
    """info["nfe"] counts evaluations of the guided score; each costs two network calls."""
    sde, x_T = VPSDE(), torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    for name, run in {
        "ode": lambda s: sample_ode(s, sde, x_T, 5, method="heun"),
        "dpm": lambda s: sample_multistep(s, sde, x_T, 6, solver="dpm++", order=2, corrector=False),
        "fast": lambda s: sample_fast(s, sde, x_T, 6),
    }.items():
        calls: list = []
        x, info = run(guided(fake_score(calls), 1, 2.0))
        assert len(calls) == 2 * info["nfe"] and info["nfe"] > 0, name
        assert sum(c is None for c in calls) == info["nfe"], name
        assert torch.isfinite(x).all()
    calls = []
    x, info = sample_pc(
        guided(fake_score(calls), 1, 2.0), sde, x_T, 5, generator=torch.Generator().manual_seed(1)
    )
    assert len(calls) == 2 * info["nfe"] == 2 * (5 + 5 + 1)  # 5 corrector and 5 predictor steps, Tweedie's
    # the guided fake score is (1 + w) 2 (y + 1 - x) - w (t - x): a linear drift towards a known point
    assert torch.isfinite(x).all()


# --------------------------------------------------------------------------------------------------
# labels and label dropout


def test_label_dropout_replaces_labels_by_the_null_label_at_the_configured_rate():
    y = torch.randint(0, 5, (200_000,), generator=torch.Generator().manual_seed(0))
    for p in (0.1, 0.3):
        out = drop_labels(y, p, 5, torch.Generator().manual_seed(1))
        dropped = out == 5
        assert abs(float(dropped.float().mean()) - p) < 5 * math.sqrt(p * (1 - p) / y.numel())
        assert torch.equal(out[~dropped], y[~dropped])
    assert torch.equal(drop_labels(y, 0.0, 5, torch.Generator()), y)
    a = drop_labels(y, 0.1, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a, drop_labels(y, 0.1, 5, torch.Generator().manual_seed(7)))  # a function of the seed


def test_a_csv_label_column_becomes_class_indices_and_leaves_the_features(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,grade,z\n1,10,2\n3,2,4\n5,10,6\n7, 2 ,8\n")
    x, names, y, classes = read_labelled_table(path, "grade")
    assert names == ("x", "z") and classes == ("2", "10")  # numbers in numeric order
    assert torch.equal(x, torch.tensor([[1.0, 2], [3, 4], [5, 6], [7, 8]]))
    assert y.tolist() == [1, 0, 1, 0] and y.dtype == torch.int64
    path.write_text("x,kind\n1,b\n2,a\n3,c\n")
    _, _, y, classes = read_labelled_table(path, "kind")
    assert y.tolist() == [1, 0, 2] and classes == ("a", "b", "c")  # text in alphabetical order
    with pytest.raises(ValueError, match="no column 'label'.*its columns are x, kind"):
        read_labelled_table(path, "label")
    path.write_text("x,kind\n1,b\n2,\n")
    with pytest.raises(ValueError, match="line 3: the label"):
        read_labelled_table(path, "kind")


def test_digits_provide_their_labels():
    config = load_config(None, ["data.name=digits_images_train", "model.kind=unet", "model.num_classes=10"])
    from scorefield.datasets import digits_split, read_labelled_data

    x, _, y, classes = read_labelled_data(config.data)
    split = digits_split()
    assert torch.equal(x, split.x_train) and torch.equal(y, split.y_train) and classes == tuple("0123456789")
    assert len(prepare_data(config)[2]) == 16


BAD = [
    (["model.num_classes=2"], r"model.num_classes = 2 needs labelled data: a CSV's data.label_column"),
    (
        ["model.num_classes=2", "sde.kind=ncsn", "objective.kind=ncsn", "data.name=digits"],
        r"model.num_classes > 0 trains with objective.kind = sde_dsm, not ncsn",
    ),
    (["data.name=digits", "model.num_classes=5"], r"model.num_classes = 5 but data.name = digits has 10"),
    (['data.label_column="y"'], r"data: label_column names a column of a CSV file"),
    (['data.path="t.npy"', 'data.label_column="y"'], r"label_column names a column of a CSV file"),
    (['data.path="t.csv"', 'data.label_column="y"'], r"data.label_column needs model.num_classes > 0"),
    (["data.name=digits", "model.num_classes=10", "train.label_dropout=1.0"], r"train.label_dropout: Input"),
    (["model.num_classes=-1"], r"model.num_classes: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_label_config_mistakes_are_one_clear_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_a_csv_whose_classes_differ_from_num_classes_is_refused_before_the_run_exists(tmp_path):
    write_clusters(tmp_path / "c.csv", n=5)
    config = load_config(None, [*cond_overrides(tmp_path / "c.csv"), "model.num_classes=3"])
    with pytest.raises(
        ConfigError, match=r"model.num_classes = 3 but column 'kind' of .* holds 2 classes \(left, right\)"
    ):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# a conditional run end to end


def test_a_conditional_run_samples_the_class_it_is_asked_for(capsys, cond_run, tmp_path):
    run = load_run(cond_run)
    assert run.classes == ("left", "right") and run.columns == ("a", "b")
    assert latest_good(cond_run).meta["classes"] == ["left", "right"]
    for label, args in (("left", ["--label", "left"]), ("right", ["--label", "1", "--guidance", "2.0"])):
        out = tmp_path / f"{label}.csv"
        code, said, err = run_cli(
            capsys, "sample", "--run", cond_run, "--n", 300, "--out", out, "--quiet", *args
        )
        assert code == 0, err
        assert f"class '{label}'" in said
        x = np.loadtxt(out, delimiter=",", skiprows=1)
        near = np.linalg.norm(x - np.array(CENTRES[label]), axis=1) < 1.5
        assert near.mean() >= 0.9, (label, near.mean())
    both = run.sample(400)  # no label: the unconditional model (the null label) draws both clusters
    assert 0.2 < float((both[:, 0] > 0).float().mean()) < 0.8
    guided_pc = run.sample(200, sampler="pc", steps=30, label="left", guidance=1.0)
    assert float((guided_pc[:, 0] < 0).float().mean()) >= 0.9


def test_a_class_starts_from_its_gaussian_and_guided_samples_from_t_1(cond_run, tmp_path):
    """A conditional run keeps one Gaussian per class: few-step samples of a class start from it, guided
    ones (sharper than the class) from t = 1, and skip a stored grid that starts from a Gaussian."""
    run_dir = tmp_path / "run"
    shutil.copytree(cond_run, run_dir)
    run = load_run(run_dir)
    assert run.component_moments.means.shape == (2, 2)
    info = run.tune_grid(5, n=64, max_iter=10, n_starts=1)  # the null label's grid, from the data's Gaussian
    assert 0 < float(info["grid"][0]) < 1
    x_T = run.diffusion.sde.prior_std * KeyedNoise(0, torch.arange(200)).randn((200, 2))
    for guidance, moments, grid in ((0.0, run.component_moments, info["grid"].float()), (2.0, None, None)):
        got = run.sample(200, sampler="fast", steps=5, label="left", guidance=guidance)
        score = run.score_functions("left", guidance).at_time
        budget = 5 if grid is None else grid
        z, fast = sample_fast(score, run.diffusion.sde, x_T, budget, moments=moments, components=0)
        torch.testing.assert_close(got, run.scaler.inverse_transform(z))
        assert (fast["start"] < 1) == (moments is not None)
        assert float((got[:, 0] < 0).float().mean()) >= 0.9


def test_sample_refuses_bad_labels_in_one_line(capsys, cond_run, tmp_path):
    common = ["sample", "--run", cond_run, "--n", 5, "--out", tmp_path / "s.npy", "--quiet"]
    for args, message in (
        (
            ["--label", "2"],
            r"label '2' is out of range: the run has 2 classes, indices 0 \.\. 1 or a class name",
        ),
        (["--label", "middle"], "label 'middle' is out of range"),
        (["--guidance", "2.0"], "--guidance weighs the samples of one class: give --label too"),
        (["--label", "left", "--guidance", "-1"], "--guidance must be a finite number >= 0"),
    ):
        code, _, err = run_cli(capsys, *common, *args)
        assert code == 2 and err.count("\n") == 1, err
        assert re.search(message, err), err
    assert not (tmp_path / "s.npy").exists()


def test_a_label_on_an_unconditional_run_is_refused(capsys, tmp_path):
    overrides = ["data.n=64", "model.hidden=8", "model.depth=1", "model.embed_dim=8", "train.batch_size=32"]
    train(
        load_config(None, [*overrides, "train.steps=2", "train.device=cpu"]), tmp_path / "run", progress=False
    )
    code, _, err = run_cli(
        capsys, "sample", "--run", tmp_path / "run", "--n", 3, "--label", "0", "--out", tmp_path / "s.npy"
    )
    assert code == 2 and "is unconditional (model.num_classes = 0): it takes no label" in err
    with pytest.raises(RunError, match="it takes no label"):
        load_run(tmp_path / "run").sample(3, label=0)


def test_the_conditional_digits_preset_takes_a_labelled_training_step(tmp_path):
    from pathlib import Path

    preset = Path(__file__).parents[1] / "configs" / "digits_cond_vp.toml"
    config = load_config(
        preset,
        ["model.channels=8", "train.batch_size=8", "train.steps=3", "train.warmup=1", "train.device=cpu"],
    )
    assert config.model.num_classes == 10 and config.train.label_dropout == 0.1
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 3  # zero-initialised convolutions: the labels reach the loss from step 3
    before = build(config, (1, 8, 8), None).model.state_dict()["net.label_embed.table.weight"]
    after = latest_good(tmp_path / "run").state["model"]["net.label_embed.table.weight"]
    assert not torch.equal(before, after)  # the labels reached the network and were trained
    run = load_run(tmp_path / "run")
    assert run.classes == tuple("0123456789")
    assert run.sample(2, sampler="dpm", steps=2, label="3", guidance=2.0).shape == (2, 1, 8, 8)
    diffusion = build(config, (1, 8, 8), None)
    z = torch.zeros(4, 1, 8, 8)
    loss = OBJECTIVES["sde_dsm"](
        diffusion.model, z, diffusion, torch.Generator().manual_seed(0), y=torch.arange(4)
    )
    assert loss.shape == (4,) and torch.isfinite(loss).all()


def test_training_drops_labels_at_the_configured_rate_and_shards_them_with_the_rows(monkeypatch, tmp_path):
    """The labels the objective receives during a run: a fraction label_dropout are the null label (2),
    the others are the data's; and a process's share of the rows gets its own share of the labels."""
    from scorefield.run.distributed import local_rows

    write_clusters(tmp_path / "c.csv", n=100)
    seen = []
    sde_dsm = OBJECTIVES["sde_dsm"]

    def recording(score_fn, x, diffusion, generator, y=None):
        seen.append(y.clone())
        return sde_dsm(score_fn, x, diffusion, generator, y=y)

    monkeypatch.setitem(OBJECTIVES, "sde_dsm", recording)
    overrides = [*cond_overrides(tmp_path / "c.csv"), "train.steps=25", "train.label_dropout=0.3"]
    config = load_config(None, overrides)
    train(config, tmp_path / "run", progress=False)
    y = torch.cat(seen)
    assert y.numel() == 25 * 128 and set(y.unique().tolist()) == {0, 1, 2}
    rate = float((y == 2).float().mean())
    assert abs(rate - 0.3) < 5 * math.sqrt(0.3 * 0.7 / y.numel()), rate

    diffusion = build(config, (2,), None)
    diffusion.model.double()
    x = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2] * 4)
    full = sde_dsm(diffusion.model, x, diffusion, torch.Generator().manual_seed(1), y=labels)
    for lo, hi in ((0, 4), (4, 12)):
        local = sde_dsm(
            local_rows(diffusion.model, lo, hi, 12), x, diffusion, torch.Generator().manual_seed(1), y=labels
        )
        torch.testing.assert_close(local[lo:hi], full[lo:hi], rtol=1e-10, atol=1e-12)
    other = sde_dsm(diffusion.model, x, diffusion, torch.Generator().manual_seed(1), y=labels.flip(0))
    assert not torch.allclose(other, full)  # the labels change the loss


def test_a_conditional_run_resumes_bitwise_and_refuses_other_labels(tmp_path):
    """Label dropout is drawn from the step's seeded generator, so a resumed run ends where an
    uninterrupted one does; data with other labels are refused."""
    write_clusters(tmp_path / "c.csv", n=50)
    overrides = [*cond_overrides(tmp_path / "c.csv"), "train.ckpt_every=2", "train.batch_size=32"]
    train(load_config(None, [*overrides, "train.steps=4"]), tmp_path / "a", progress=False)
    train(load_config(None, [*overrides, "train.steps=2"]), tmp_path / "b", progress=False)
    train(load_config(None, [*overrides, "train.steps=4"]), tmp_path / "b", resume=True, progress=False)
    a, b = latest_good(tmp_path / "a").state, latest_good(tmp_path / "b").state
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    text = (tmp_path / "c.csv").read_text()
    (tmp_path / "c.csv").write_text(text.replace(",left,", ",right,", 1))  # one label changed
    with pytest.raises(RunError, match="training data differ"):
        train(load_config(None, [*overrides, "train.steps=6"]), tmp_path / "b", resume=True, progress=False)


def test_inpaint_completes_each_row_as_its_own_class(cond_run):
    """One label per row: each row's missing coordinate comes from its own class, rows whose labels agree
    are the rows one label for all gives (bit for bit: same machine, same shapes), with guidance too,
    and a count or a label that does not fit is one clear error."""
    run = load_run(cond_run)
    n = 40
    x = torch.zeros(n, 2)
    x[:, 1] = 0.5  # b, observed: between the classes' centres (0 and 1), so it says little of the class
    mask = torch.tensor([False, True])
    labels = ["left", "right"] * (n // 2)
    for guidance in (0.0, 1.0):
        got = run.inpaint(x, mask, label=labels, guidance=guidance)
        assert torch.equal(got[:, 1], x[:, 1])
        assert float((got[0::2, 0] < 0).float().mean()) >= 0.9  # left: a ~ N(-2, 0.3)
        assert float((got[1::2, 0] > 0).float().mean()) >= 0.9  # right: a ~ N(2, 0.3)
        one = run.inpaint(x, mask, label="right", guidance=guidance)
        assert torch.equal(
            run.inpaint(x, mask, label=torch.ones(n, dtype=torch.long), guidance=guidance), one
        )
    with pytest.raises(RunError, match="3 labels for 40 rows"):
        run.inpaint(x, mask, label=["left"] * 3)
    with pytest.raises(RunError, match="out of range"):
        run.inpaint(x, mask, label=[0] * (n - 1) + [2])


def test_inpaint_without_a_label_completes_each_row_as_its_most_probable_class(cond_run):
    """Without a label a class-conditional run fills each row from the class its observed entries most
    probably came from: Bayes' rule under the class Gaussians it keeps. With b observed, the classes'
    b ~ N(0, 0.3) and N(1, 0.3) with equal shares divide at b = 0.5. The rows are then those of the
    chosen labels given per row (bit for bit), with guidance too; choose=False keeps the null label's
    p(x)."""
    run = load_run(cond_run)
    torch.testing.assert_close(run.class_weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    b = torch.linspace(-0.5, 1.5, 41)
    x = torch.stack([torch.zeros_like(b), b], 1)
    mask = torch.tensor([False, True])
    z = run.scaler.transform(x)
    chosen = run.most_probable_class(z, mask.expand_as(z))
    clear = (b - 0.5).abs() > 0.1  # 400 examples a class: the estimated boundary moves by about 0.02
    assert torch.equal(chosen[clear], (b[clear] > 0.5).long())
    n = 40
    x = torch.zeros(n, 2)
    x[n // 2 :, 1] = 1.0
    expected = [0] * (n // 2) + [1] * (n // 2)
    for guidance in (0.0, 1.0):
        got = run.inpaint(x, mask, guidance=guidance)
        assert torch.equal(got, run.inpaint(x, mask, label=expected, guidance=guidance))
        assert float((got[: n // 2, 0] < 0).float().mean()) >= 0.9  # left: a ~ N(-2, 0.3)
        assert float((got[n // 2 :, 0] > 0).float().mean()) >= 0.9
    middle = torch.tensor([[0.0, 0.5]]).expand(n, 2)  # b says nothing of the class: p(a | b) has two modes
    one_class = run.inpaint(middle, mask)[:, 0] > 0
    assert bool(one_class.all()) or not bool(one_class.any())
    null = run.inpaint(middle, mask, choose=False)
    assert 0.2 < float((null[:, 0] > 0).float().mean()) < 0.8
    with pytest.raises(RunError, match="guidance applies to the samples of one class"):
        run.inpaint(x, mask, choose=False, guidance=1.0)
    blank = torch.zeros(n + 1, 2, dtype=torch.bool)
    blank[0, 1] = True  # every other row observes nothing: a draw of the model, its class by the shares
    right = float((run.inpaint(torch.zeros(n + 1, 2), blank)[1:, 0] > 0).float().mean())
    assert 0.4 <= right <= 0.6  # half of each: stratified, 20 of 40 up to O(log n)


def test_scorefield_inpaint_chooses_each_rows_class_or_takes_the_null_label(capsys, cond_run, tmp_path):
    n = 20
    rows = np.column_stack([np.zeros(n), np.repeat([0.0, 1.0], n // 2)])
    data = tmp_path / "rows.csv"
    np.savetxt(data, rows, delimiter=",", header="a,b", comments="")
    mask = tmp_path / "mask.csv"
    mask.write_text("a,b\n0,1\n")
    run = load_run(cond_run)
    x, observed = torch.tensor(rows, dtype=torch.float32), torch.tensor([False, True])
    base = ["inpaint", "--run", cond_run, "--data", data, "--mask", mask, "--quiet"]
    for extra, kwargs in (
        (["--guidance", "1"], {"guidance": 1.0}),
        (["--null-label"], {"choose": False}),
    ):
        out = tmp_path / "filled.csv"
        code, said, err = run_cli(capsys, *base, "--out", out, *extra)
        assert code == 0, err
        assert ("most probably belongs" in said) != ("choose" in kwargs)
        expected = run.inpaint(x, observed, **kwargs)
        np.testing.assert_allclose(
            np.loadtxt(out, delimiter=",", skiprows=1), expected.numpy(), rtol=0, atol=1e-5
        )
    code, said, err = run_cli(capsys, *base, "--out", tmp_path / "x.csv", "--null-label", "--label", "left")
    assert code != 0 and "drop --label" in err


def test_scorefield_inpaint_reads_one_label_per_row_from_a_file(capsys, cond_run, tmp_path):
    n = 20
    data = tmp_path / "rows.csv"
    np.savetxt(
        data, np.column_stack([np.zeros(n), np.full(n, 0.5)]), delimiter=",", header="a,b", comments=""
    )
    mask = tmp_path / "mask.csv"
    mask.write_text("a,b\n0,1\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["left", "right"] * (n // 2)) + "\n")
    out = tmp_path / "filled.csv"
    base = ["inpaint", "--run", cond_run, "--data", data, "--mask", mask, "--out", out, "--quiet"]
    code, said, err = run_cli(capsys, *base, "--labels", labels, "--guidance", "1")
    assert code == 0, err
    assert "each row as the class" in said
    filled = np.loadtxt(out, delimiter=",", skiprows=1)
    expected = load_run(cond_run).inpaint(
        torch.tensor(np.loadtxt(data, delimiter=",", skiprows=1), dtype=torch.float32),
        torch.tensor([False, True]), label=["left", "right"] * (n // 2), guidance=1.0,
    )  # fmt: skip
    np.testing.assert_allclose(filled, expected.numpy(), rtol=0, atol=1e-5)  # the CSV's printed digits
    assert (filled[0::2, 0] < 0).mean() >= 0.9 and (filled[1::2, 0] > 0).mean() >= 0.9
    np.save(tmp_path / "labels.npy", np.array([0, 1] * (n // 2)))
    code, said, err = run_cli(capsys, *base, "--labels", tmp_path / "labels.npy")
    assert code == 0, err
    short = tmp_path / "short.txt"
    short.write_text("left\nright\n")
    for extra, message in (
        (["--labels", short], "holds 2 labels for 20 rows"),
        (["--labels", labels, "--label", "left"], "not both"),
        (["--labels", tmp_path / "none.txt"], "does not exist"),
    ):
        code, said, err = run_cli(capsys, *base, *extra)
        assert code != 0 and message in err, (extra, err)
    short.write_text("\n".join(["left"] * (n - 1) + ["middle"]))
    code, said, err = run_cli(capsys, *base, "--labels", short)
    assert code != 0 and "out of range" in err and len(err.strip().splitlines()) == 1, err
