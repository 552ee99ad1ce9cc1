"""The digits classifier, the Fréchet distance on its features, and bits/dim of dequantized digits."""

import math
import warnings

import pytest
import torch

from scorefield.eval.classifier import (
    DIGITS_LEVELS,
    DIGITS_SCALER,
    MIN_SAMPLES,
    ClassifierConfig,
    DigitsClassifier,
    baseline_bits_per_dim,
    cache_root,
    class_histogram,
    dequantized_bits_per_dim,
    digits_split,
    floor,
    frechet_digits_distance,
    in_pixel_units,
    scale_digits,
    to_levels,
)
from scorefield.likelihood import dequantize

D = 64
BIN = 2 / DIGITS_LEVELS  # width of one grey level in [-1, 1]


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def classifier(cache):
    return DigitsClassifier.pretrained(cache)


@pytest.fixture(scope="module")
def split():
    return digits_split()


def test_the_split_is_fixed_disjoint_and_stratified(split):
    again, other = digits_split(), digits_split(seed=1)
    assert torch.equal(again.x_test, split.x_test) and torch.equal(again.y_train, split.y_train)
    assert not torch.equal(other.x_test, split.x_test)
    assert split.x_train.shape == (1438, 1, 8, 8) and split.x_test.shape == (359, 1, 8, 8)
    per_class = torch.bincount(torch.cat([split.y_train, split.y_test]), minlength=10)
    expected = torch.tensor([round(0.2 * int(n)) for n in per_class])
    assert torch.equal(torch.bincount(split.y_test, minlength=10), expected)
    # every image is on exactly one side: the two sides together are the data set, row for row
    pooled = torch.cat([split.x_train, split.x_test]).flatten(1)
    from scorefield.datasets import digits

    assert torch.equal(pooled.sum(0), digits().sum(0)) and pooled.shape[0] == digits().shape[0]


def test_scaling_maps_the_dequantized_bins_onto_the_unit_cube():
    edges = torch.arange(DIGITS_LEVELS + 1, dtype=torch.float64)[:, None].expand(-1, D)  # k = 0 .. 17
    y = scale_digits(edges)
    torch.testing.assert_close(y[[0, -1]], torch.tensor([[-1.0], [1.0]], dtype=torch.float64).expand(2, D))
    torch.testing.assert_close(y.diff(dim=0), torch.full((DIGITS_LEVELS, D), BIN, dtype=torch.float64))
    assert scale_digits(torch.zeros(3, 1, 8, 8)).shape == (3, 1, 8, 8)


def test_to_levels_inverts_the_dequantization(split):
    x = split.x_test
    assert torch.equal(to_levels(dequantize(x, gen(0)), dequantized=True), x)
    jitter = torch.rand(x.shape, generator=gen(1)) * 0.98 - 0.49  # within half a level
    assert torch.equal(to_levels(x + jitter, dequantized=False), x)
    assert torch.equal(
        to_levels(torch.tensor([-3.0, 16.7, 40.0]), dequantized=True), torch.tensor([0.0, 16, 16])
    )


def test_the_classifier_reaches_95_percent_on_the_test_split(classifier, split):
    accuracy = classifier.accuracy(scale_digits(split.x_test), split.y_test)
    assert accuracy >= 0.95
    assert accuracy == classifier.test_accuracy  # the number recorded with the weights
    assert classifier.features(scale_digits(split.x_test[:5])).shape == (5, classifier.config.features)
    assert torch.equal(
        classifier.predict(scale_digits(split.x_test).flatten(1)),
        classifier.predict(scale_digits(split.x_test)),
    )


def test_the_cache_round_trips_bitwise(cache, classifier, split):
    again = DigitsClassifier.pretrained(cache)
    assert not classifier.from_cache and again.from_cache
    x = scale_digits(split.x_test)
    assert torch.equal(again.features(x), classifier.features(x))
    assert again.test_accuracy == classifier.test_accuracy


def test_a_corrupt_cache_is_retrained_to_the_same_weights(tmp_path, split):
    config = ClassifierConfig(epochs=1)  # cheap: only the cache logic and determinism are at stake
    first = DigitsClassifier.pretrained(tmp_path, config)
    x = scale_digits(split.x_test)
    (weights,) = tmp_path.glob("*/checkpoints/*.safetensors")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="retraining the digits classifier: .*corrupt"):
        retrained = DigitsClassifier.pretrained(tmp_path, config)
    assert not retrained.from_cache
    assert torch.equal(retrained.features(x), first.features(x))  # training is deterministic
    weights.with_suffix(".json").write_text("{ not json")
    with pytest.warns(UserWarning, match="retraining"):
        assert not DigitsClassifier.pretrained(tmp_path, config).from_cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DigitsClassifier.pretrained(tmp_path, config).from_cache  # the retrained entry verifies


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCOREFIELD_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("SCOREFIELD_CACHE")
    assert cache_root().parts[-2:] == (".cache", "scorefield")


def test_frechet_distance_is_zero_on_itself_and_the_floor_is_the_train_test_distance(classifier, split):
    x_test = scale_digits(split.x_test)
    spread = torch.cov(classifier.features(x_test).double().T).trace().item()
    with pytest.warns(UserWarning, match="allow_small=True: 359 samples"):
        assert abs(frechet_digits_distance(x_test, x_test, classifier, allow_small=True)) < 1e-6 * spread
    f = floor(classifier)
    assert f == frechet_digits_distance(scale_digits(split.x_train), x_test, classifier)
    assert 0 < f < 0.01 * spread  # fresh draws of the data are close, but a finite sample is not zero
    # dropping half the digits (a mode collapse, 1000+ samples of 0..4) is far above the floor
    half = scale_digits(split.x_train[split.y_train < 5])
    assert frechet_digits_distance(torch.cat([half, half]), x_test, classifier) > 10 * f


def test_frechet_distance_grows_with_the_noise_added_to_the_data(classifier, split):
    x_train, x_test = scale_digits(split.x_train), scale_digits(split.x_test)
    noise = torch.randn(x_train.shape, generator=gen(0))
    distances = [frechet_digits_distance(x_train + s * noise, x_test, classifier) for s in (0.3, 0.6, 1.2)]
    assert floor(classifier) < distances[0]
    assert all(a < b for a, b in zip(distances[:-1], distances[1:], strict=True))


def test_too_few_samples_are_refused(classifier, split):
    x_train, x_test = scale_digits(split.x_train), scale_digits(split.x_test)
    with pytest.raises(ValueError, match=f"at least {MIN_SAMPLES}"):
        frechet_digits_distance(x_train[: MIN_SAMPLES - 1], x_test, classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frechet_digits_distance(x_train[:MIN_SAMPLES], x_test, classifier)


def test_class_histogram_of_the_test_split(classifier, split):
    hist = class_histogram(scale_digits(split.x_test), classifier)
    truth = torch.bincount(split.y_test, minlength=10).double() / split.y_test.numel()
    assert (hist > 0).all() and hist.sum().item() == pytest.approx(1.0)
    # each misclassified image moves 1/N of mass: total variation <= the error rate
    assert 0.5 * (hist - truth).abs().sum() <= 1 - classifier.test_accuracy + 1e-12


# --------------------------------------------------------------------------------------------------
# bits/dim: the dequantization and scaling terms against densities with known bin probabilities

SCALER = DIGITS_SCALER


def test_the_scaler_is_the_scaling_and_its_log_det_is_d_log_of_the_bin_width(split):
    torch.testing.assert_close(SCALER.transform(split.x_test), split.x_test * 2 / 17 - 1)
    assert float(SCALER.log_det) == pytest.approx(D * math.log(BIN))


def test_a_uniform_model_costs_log2_17_bits_per_dim(split):
    def uniform(y):  # density 2^-d on [-1, 1)^d, the image of the dequantized pixels
        assert ((y >= -1) & (y < 1)).all()
        return torch.full((y.shape[0],), -D * math.log(2), dtype=torch.float64)

    bpd = dequantized_bits_per_dim(in_pixel_units(uniform, SCALER), split.x_test, gen(0))
    torch.testing.assert_close(bpd, torch.full_like(bpd, math.log2(DIGITS_LEVELS)))


def test_a_bin_constant_model_costs_exactly_its_discrete_code_length(split):
    # P(k) proportional to k + 1 per pixel; the model density in [-1, 1] is P(k) / BIN on bin k, so
    # every dequantized draw of an image has bits/dim = -mean_i log2 P(x_i), whatever u is
    log_mass = torch.log(torch.arange(1, DIGITS_LEVELS + 1, dtype=torch.float64) / (17 * 18 / 2))

    def bin_constant(y):
        k = ((y.double() + 1) / BIN).floor().long()
        return (log_mass[k] - math.log(BIN)).flatten(1).sum(1)

    x = split.x_test
    expected = -log_mass[x.long()].flatten(1).sum(1) / (D * math.log(2))
    for seed in (0, 1):
        bpd = dequantized_bits_per_dim(in_pixel_units(bin_constant, SCALER), x, gen(seed))
        torch.testing.assert_close(bpd, expected)


def test_in_pixel_units_is_the_change_of_variables(split):
    # a standard normal in [-1, 1] space is N(8.5, 8.5^2) per pixel
    def standard_normal(y):
        return torch.distributions.Normal(0.0, 1.0).log_prob(y.double()).flatten(1).sum(1)

    x = split.x_test + 0.5
    pixels = torch.distributions.Normal(8.5, 8.5).log_prob(x.double()).flatten(1).sum(1)
    torch.testing.assert_close(in_pixel_units(standard_normal, SCALER)(x), pixels)


def test_the_baselines_beat_the_uniform_model(split):
    results = baseline_bits_per_dim(
        split.x_train[:400], split.x_test[:100], SCALER, n_components=(1, 2), bandwidths=(0.1, 0.2)
    )
    for name in ("GaussianMixture", "KernelDensity"):
        bpd = results[name]["bpd"]
        assert bpd.shape == (100,) and torch.isfinite(bpd).all()
        assert bpd.mean() < math.log2(DIGITS_LEVELS) - 0.5
    assert results["GaussianMixture"]["param"] in (1, 2) and results["KernelDensity"]["param"] in (0.1, 0.2)
