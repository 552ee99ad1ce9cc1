"""Images end to end: the file readers read back exactly what tiny files in each format hold, the
[-1, 1] scaling and its log-determinant, flips, and image runs (presets build and train, checkpoints
round-trip, `scorefield sample` writes a grid)."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from scorefield.datasets import (
    IMAGE_LEVELS,
    cifar10,
    digits,
    image_folder,
    image_scaler,
    load_data,
    mnist,
    random_hflip,
    read_cifar10,
    read_idx,
)
from scorefield.distributions import Gaussian
from scorefield.likelihood import bits_per_dim


def pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray, type_byte: int = 0x08, compress: bool = False) -> None:
    """The IDX layout written by hand from its definition: 0, 0, type, ndim, big-endian sizes, data."""
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


# --------------------------------------------------------------------------------------------------
# readers


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_mnist_idx_images_and_labels_read_back_exactly(tmp_path, compress):
    images, labels = pixels((5, 28, 28)), np.arange(5, dtype=np.uint8)
    write_idx(tmp_path / "images", images, compress=compress)
    write_idx(tmp_path / "labels", labels, compress=compress)
    for name, magic in (("images", 2051), ("labels", 2049)):  # the header written is MNIST's own
        raw = (tmp_path / name).read_bytes()
        assert (gzip.decompress(raw) if compress else raw)[:4] == struct.pack(">I", magic)
    x = mnist(tmp_path / "images")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(images).float())
    assert np.array_equal(read_idx(tmp_path / "labels"), labels)


def test_idx_big_endian_values(tmp_path):
    values = np.array([[1.5, -2.25], [1e6, 3.0]], dtype=np.float32)
    write_idx(tmp_path / "f", values, type_byte=0x0D)
    ints = np.array([1, -70000, 2**30], dtype=np.int32)
    write_idx(tmp_path / "i", ints, type_byte=0x0C)
    assert np.array_equal(read_idx(tmp_path / "f"), values)
    assert np.array_equal(read_idx(tmp_path / "i"), ints)


def test_bad_idx_files_are_refused(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x89PNG....")
    write_idx(tmp_path / "labels", np.arange(4, dtype=np.uint8))
    good = pixels((2, 4, 4))
    write_idx(tmp_path / "short", good)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(ValueError, match="bytes follow"):
        read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="expected unsigned-byte images"):
        mnist(tmp_path / "labels")
    with pytest.raises(FileNotFoundError):
        mnist(tmp_path / "missing")


def test_cifar10_records_read_back_exactly(tmp_path):
    images, labels = pixels((4, 3, 32, 32), 1), np.array([3, 0, 9, 1], dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(4, -1)], axis=1)
    assert records.shape[1] == 3073  # 1 label byte + 1024 red + 1024 green + 1024 blue
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "data_batch_1.bin").write_bytes(records[:3].tobytes())
    (folder / "data_batch_2.bin").write_bytes(records[3:].tobytes())
    (folder / "test_batch.bin").write_bytes(records[:1].tobytes())  # not a training batch
    x, y = read_cifar10(folder)
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    one = cifar10(folder / "data_batch_1.bin")
    assert one.shape == (3, 3, 32, 32) and torch.equal(one, torch.from_numpy(images[:3]).float())
    assert one[0, 1, 0, 0] == images[0].reshape(-1)[1024]  # the green plane follows the red one
    (tmp_path / "cut.bin").write_bytes(records.tobytes()[:-5])
    with pytest.raises(ValueError, match="whole number of CIFAR-10 records"):
        read_cifar10(tmp_path / "cut.bin")


def test_image_folders_read_back_exactly(tmp_path):
    grey, colour = tmp_path / "grey", tmp_path / "colour"
    grey.mkdir(), (colour / "sub").mkdir(parents=True)
    g, c = pixels((3, 6, 5), 2), pixels((3, 6, 5, 3), 3)
    for i in range(3):
        Image.fromarray(g[i], mode="L").save(grey / f"{i}.png")
        Image.fromarray(c[i], mode="RGB").save((colour / "sub" if i == 2 else colour) / f"{i}.PNG")
    (grey / "notes.txt").write_text("not an image")
    x = image_folder(grey)
    assert x.shape == (3, 1, 6, 5) and torch.equal(x[:, 0], torch.from_numpy(g).float())
    y = image_folder(colour)
    assert y.shape == (3, 3, 6, 5) and torch.equal(y, torch.from_numpy(c.transpose(0, 3, 1, 2)).float())
    Image.fromarray(g[0], mode="L").save(colour / "3.png")  # one grey file among colour ones
    mixed = image_folder(colour)  # sorted by path: 0.PNG, 1.PNG, 3.png, sub/2.PNG
    assert torch.equal(mixed[2], torch.from_numpy(g[0]).float().expand(3, 6, 5))
    assert torch.equal(mixed[3], y[2])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(grey / "odd.png")
    with pytest.raises(ValueError, match="differs from"):
        image_folder(grey)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        image_folder(tmp_path / "empty")


def test_jpeg_folders_decode_to_their_own_pixels(tmp_path):
    g = pixels((2, 8, 8), 4)
    for i in range(2):
        Image.fromarray(g[i], mode="L").save(tmp_path / f"{i}.jpg", quality=95)
    expected = np.stack([np.asarray(Image.open(tmp_path / f"{i}.jpg")) for i in range(2)])
    assert torch.equal(image_folder(tmp_path)[:, 0], torch.from_numpy(expected).float())


def test_load_data_reads_image_files_through_their_name(tmp_path):
    write_idx(tmp_path / "images.gz", pixels((3, 28, 28)), compress=True)
    spec = SimpleNamespace(name="mnist", path=str(tmp_path / "images.gz"), n=1, seed=0)
    assert load_data(spec).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="set data.path"):
        load_data(SimpleNamespace(name="cifar10", path=None, n=1, seed=0))
    assert set(IMAGE_LEVELS) == {
        "digits_images",
        "digits_images_train",
        "digits_images_test",
        "mnist",
        "cifar10",
        "image_folder",
    }


# --------------------------------------------------------------------------------------------------
# scaling and flips


def test_image_scaler_maps_the_dequantized_range_onto_minus_one_one():
    scaler = image_scaler((1, 8, 8), IMAGE_LEVELS["digits_images"])
    x = digits(images=True)
    z = scaler.transform(x)
    assert float(z.min()) == -1 and abs(float(scaler.transform(x + 1).max()) - 1) < 1e-6
    assert torch.allclose(scaler.inverse_transform(z), x, atol=1e-5)
    assert math.isclose(float(scaler.log_det), -64 * math.log(17 / 2), rel_tol=1e-12)


def test_image_scaler_log_det_and_bits_per_dim_in_pixel_units():
    """A Gaussian in z is a Gaussian in pixels with std scaled by levels/2: change of variables, and
    bits/dim in pixel units (bin 1) equals bits/dim in z units (bin 2/levels)."""
    levels, shape = 256, (3, 2, 2)
    scaler = image_scaler(shape, levels)
    d = math.prod(shape)
    z = torch.randn(50, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    x = scaler.inverse_transform(z)
    p_z = Gaussian(torch.zeros(d, dtype=torch.float64), 0.09 * torch.eye(d, dtype=torch.float64))
    half = levels / 2
    p_x = Gaussian(
        torch.full((d,), half, dtype=torch.float64), 0.09 * half**2 * torch.eye(d, dtype=torch.float64)
    )
    logp_z = p_z.log_prob(z.flatten(1))
    assert torch.allclose(logp_z + scaler.log_det, p_x.log_prob(x.flatten(1)))
    assert torch.allclose(
        bits_per_dim(logp_z + scaler.log_det, x, bin_width=1.0), bits_per_dim(logp_z, z, bin_width=2 / levels)
    )


def test_random_hflip_mirrors_about_half_the_images_exactly():
    x = torch.arange(2000 * 6, dtype=torch.float32).reshape(2000, 1, 2, 3)
    y = random_hflip(x, torch.Generator().manual_seed(0))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # each image is itself or its mirror image
    assert abs(int(mirrored.sum()) - 1000) < 5 * math.sqrt(500)
    assert torch.equal(random_hflip(x, torch.Generator().manual_seed(0)), y)


# --------------------------------------------------------------------------------------------------
# image runs: presets, training, checkpoints, the sample command

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def fake_files(tmp_path: Path) -> dict[str, str]:
    """Tiny stand-ins for the files that the image presets point at: 4 MNIST and 4 CIFAR-10 images."""
    write_idx(tmp_path / "train-images.gz", pixels((4, 28, 28)), compress=True)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    records = np.concatenate([np.zeros((4, 1), np.uint8), pixels((4, 3072), 1)], axis=1)
    (folder / "data_batch_1.bin").write_bytes(records.tobytes())
    return {"mnist": str(tmp_path / "train-images.gz"), "cifar10": str(folder)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_preset_builds_and_takes_a_training_step(tmp_path, path):
    from scorefield.run.build import OBJECTIVES, build
    from scorefield.run.config import load_config
    from scorefield.run.train import augment, prepare_data

    config = load_config(path)
    files = fake_files(tmp_path)
    if config.data.name in files:
        config = load_config(path, [f'data.path="{files[config.data.name]}"'])
    raw, scaler, _ = prepare_data(config)
    z = scaler.transform(raw[:2])
    if config.data.images:
        assert -1 <= float(z.min()) and float(z.max()) < 1  # pixels 0 .. levels-1 land in [-1, 1)
    sigma_max = 5.0 if config.sde.kind in ("ve", "ncsn") else None
    diffusion = build(config, tuple(raw.shape[1:]), sigma_max)
    optimizer = torch.optim.AdamW(diffusion.model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in diffusion.model.parameters()]
    loss = OBJECTIVES[config.objective.kind](
        diffusion.model, augment(config, z, generator), diffusion, generator
    ).mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, diffusion.model.parameters(), strict=True))


IMAGE_TINY = [
    "data.name=digits_images",
    "data.dequantize=true",
    "data.hflip=true",
    "model.kind=unet",
    "model.channels=8",
    "model.channel_mults=[1, 2]",
    "model.n_res_blocks=1",
    "model.embed_dim=16",
    "train.batch_size=16",
    "train.steps=4",
    "train.ckpt_every=2",
    "train.log_every=2",
    "train.warmup=2",
    "train.keep_last=5",
    "train.device=cpu",
    "sample.rtol=1e-2",
    "sample.atol=1e-2",
]


def test_an_image_run_resumes_bitwise_and_round_trips_through_its_checkpoint(tmp_path):
    from scorefield.run.checkpoint import latest_good
    from scorefield.run.config import load_config
    from scorefield.run.finished import load_run
    from scorefield.run.train import train

    config = load_config(None, IMAGE_TINY)
    train(config, tmp_path / "a", progress=False)
    half = load_config(None, [*IMAGE_TINY, "train.steps=2"])
    train(half, tmp_path / "b", progress=False)
    train(config, tmp_path / "b", resume=True, progress=False)
    a, b = latest_good(tmp_path / "a").state, latest_good(tmp_path / "b").state
    for key in a["model"]:  # flips and dequantization noise are drawn from the step's seeded generator
        assert torch.equal(a["model"][key], b["model"][key]), key

    run = load_run(tmp_path / "a")
    assert run.data_shape == (1, 8, 8) and run.config == config
    expected = image_scaler((1, 8, 8), 17)
    assert torch.equal(run.scaler.mean, expected.mean) and torch.equal(run.scaler.std, expected.std)
    for key, value in a["ema"].items():
        assert torch.equal(run.diffusion.model.state_dict()[key], value), key
    x = digits(images=True)[:2]
    logp = run.log_prob(x, divergence="hutchinson")  # in pixel units: the scaler's log-det is included
    assert logp.shape == (2,) and torch.isfinite(logp).all()


def test_sample_writes_an_array_and_a_png_grid_for_image_runs(tmp_path):
    from scorefield.cli import main
    from scorefield.run.config import load_config
    from scorefield.run.train import train

    train(load_config(None, [*IMAGE_TINY, "train.steps=1"]), tmp_path / "run", progress=False)
    common = [
        "sample",
        "--run",
        str(tmp_path / "run"),
        "--n",
        "10",
        "--sampler",
        "em",
        "--steps",
        "3",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "grid.png")]) == 0
    array = np.load(tmp_path / "grid.npy")
    assert array.shape == (10, 1, 8, 8) and np.isfinite(array).all()
    grid = Image.open(tmp_path / "grid.png")
    columns = rows = 4  # ceil(sqrt(10)) per row, three rows needed, padding 2
    scale = 8  # 8x8 digits enlarged to 64 px per side by default
    assert grid.size == (columns * 8 * scale + (columns + 1) * 2, 3 * 8 * scale + rows * 2)
    assert grid.mode == "L"
    assert main([*common, "--out", str(tmp_path / "s.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "s.npy"), array) and (tmp_path / "s.png").is_file()
    # the denoising strip works on images; the plane-only figures refuse them with one clear line
    plot = ["plot", "--run", str(tmp_path / "run"), "--n", "6", "--quiet", "--out", str(tmp_path / "figs")]
    assert main([*plot, "--what", "denoise", "samples"]) == 0
    assert (tmp_path / "figs" / "denoise.png").is_file() and (tmp_path / "figs" / "samples.png").is_file()
    assert main([*plot, "--what", "field"]) == 2


def test_a_run_keeps_the_moments_of_what_its_model_learns():
    """Under data.hflip and data.dequantize the model learns mirrored images spread over each pixel's bin:
    the kept moments are those of that distribution, checked against 400,000 draws of it; a pixel blank
    in every image then has the bin's variance, not none."""
    from scorefield.run.config import load_config
    from scorefield.run.train import augment, learned_moments

    config = load_config(None, IMAGE_TINY)
    z = image_scaler((1, 8, 8), 17).transform(digits(images=True)[:200].float())
    kept = Gaussian.from_state_dict(learned_moments(config, z, None)["moments"])
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([augment(config, z, generator) for _ in range(2000)]).flatten(1).double()
    torch.testing.assert_close(kept.mean(), draws.mean(0), atol=2e-3, rtol=0)
    torch.testing.assert_close(
        kept.cov, torch.cov(draws.T), atol=5e-3, rtol=0
    )  # the flips' Monte Carlo error
    both = torch.cat([z, z.flip(-1)]).flatten(1)
    blank = int((both == -1).all(0).nonzero()[0])  # blank (-1) in every image and every mirror image
    assert float(kept.cov[blank, blank]) == pytest.approx((2 / 17) ** 2 / 12, rel=1e-6)
