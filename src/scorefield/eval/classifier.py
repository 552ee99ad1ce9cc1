"""Honest numbers on scikit-learn's 8x8 digits: a fixed train/test split, a small classifier whose
features give a Fréchet distance (FID's recipe, Heusel et al. 2017, at 8x8), and bits/dim under
uniform dequantization with Gaussian-mixture and kernel-density baselines.

- ``digits_split`` (from ``datasets``, where the presets train on ``digits_images_train``): THE train/test split of the 1797 digits (seeded, stratified by class; 20% test,
  359 images). Models are trained on ``train``; every number here is measured on ``test``.
- ``DigitsClassifier``: a tiny CNN trained on the training split, deterministically, and cached on
  disk under a hash of its config (safetensors + JSON through ``checkpoint``; a cache that does not
  verify is retrained, never unpickled). ``features`` is the penultimate layer.
- ``frechet_digits_distance`` / ``class_histogram`` / ``floor``: sample quality. The distance is
  biased upwards for small sets, so it refuses fewer than ``MIN_SAMPLES`` generated samples; the
  ``floor`` is the distance of the training split to the test split, i.e. what fresh draws from
  the data distribution itself score against the same reference.
- ``in_pixel_units`` / ``dequantized_bits_per_dim``: bits/dim of the 17-level
  pixels (docs/math.md#images-dequantisation-and-bits-per-dimension), and ``baseline_bits_per_dim`` for ``GaussianMixture`` and
  ``KernelDensity`` fitted to the same dequantized training data.

Inputs to the classifier are images in the model's space: pixels ``0..16`` scaled to ``[-1, 1]``
by ``scale_digits``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..datasets import IMAGE_LEVELS, DigitsSplit, digits_split, image_scaler
from ..fit import Trainer, fit
from ..likelihood import bits_per_dim, dequantize
from ..metrics import frechet_distance
from ..run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..utils import make_generator

__all__ = [
    "DIGITS_LEVELS",
    "DIGITS_SCALER",
    "MIN_SAMPLES",
    "ClassifierConfig",
    "DigitsClassifier",
    "DigitsSplit",
    "baseline_bits_per_dim",
    "cache_root",
    "class_histogram",
    "dequantized_bits_per_dim",
    "digits_split",
    "floor",
    "frechet_digits_distance",
    "in_pixel_units",
    "scale_digits",
    "to_levels",
]

DIGITS_LEVELS = IMAGE_LEVELS["digits_images"]  # pixel values 0..16
N_CLASSES = 10
MIN_SAMPLES = 1000  # fewer generated samples make the Fréchet distance's upward bias dominate


# --------------------------------------------------------------------------------------------------
# the data: one split, one scaling


DIGITS_SCALER = image_scaler((1, 8, 8), DIGITS_LEVELS)  # y = 2 x / 17 - 1, the image runs' scaling


def scale_digits(x: torch.Tensor) -> torch.Tensor:
    """Pixels to the model's space, ``[N, 1, 8, 8]`` (or ``[N, 64]``) in ``[-1, 1]``: ``y = 2 x / 17 - 1``
    (``datasets.image_scaler``), so the bins ``[k, k+1)`` of dequantized pixels fill ``[-1, 1)``."""
    return DIGITS_SCALER.transform(x.reshape(-1, 1, 8, 8)).reshape(x.shape)


def to_levels(x: torch.Tensor, dequantized: bool) -> torch.Tensor:
    """Continuous samples in pixel units back on the 17 levels: ``floor`` for a model of dequantized
    pixels ``k + u`` (the inverse of ``dequantize``), the nearest level for a model of the integers;
    clamped to ``0 .. 16``. A perfect model's samples then have exactly the data's distribution."""
    levels = x.floor() if dequantized else x.round()
    return levels.clamp(0, DIGITS_LEVELS - 1)


# --------------------------------------------------------------------------------------------------
# the classifier


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that determines the classifier's weights; its hash names the cache entry."""

    width: int = 16  # channels of the first convolution (then 2x, 4x)
    features: int = 64  # size of the penultimate layer, the Fréchet features
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-3  # peak of a one-cycle schedule
    weight_decay: float = 1e-4
    seed: int = 0  # initialisation, data order and dequantization noise
    split_seed: int = 0
    test_fraction: float = 0.2
    version: int = 1  # bump when the architecture or the training recipe changes

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16, features: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2w, 4, 4)
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 4w, 2, 2)
            nn.Flatten(),
            nn.Linear(16 * width, features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$SCOREFIELD_CACHE``, else ``~/.cache/scorefield``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SCOREFIELD_CACHE"):
        return Path(os.environ["SCOREFIELD_CACHE"])
    return Path.home() / ".cache" / "scorefield"


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread, so the weights do not depend on the machine's core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_images(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or x[0].numel() != 64:
        raise ValueError(f"expected digits [N, 1, 8, 8] or [N, 64], got shape {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float32).reshape(-1, 1, 8, 8)


class DigitsClassifier:
    """A small CNN for the 8x8 digits (inputs scaled by ``scale_digits``), trained on the training
    split of ``digits_split`` with dequantization noise, so that it reads continuous-valued samples
    as it reads the data. Build it with ``pretrained``."""

    def __init__(self, net: DigitsCNN, config: ClassifierConfig, from_cache: bool, test_accuracy: float):
        self.net = net.eval().requires_grad_(False)
        self.config = config
        self.from_cache = from_cache  # whether the weights were read from the cache
        self.test_accuracy = test_accuracy  # on the test split, measured after training

    @classmethod
    def pretrained(
        cls, cache_dir: str | Path | None = None, config: ClassifierConfig | None = None
    ) -> DigitsClassifier:
        """The classifier of ``config`` from the cache (see ``cache_root``), trained and cached first
        if the cache lacks it; a cache entry that does not verify is retrained with a warning."""
        config = config or ClassifierConfig()
        entry = cache_root(cache_dir) / f"digits-classifier-{config.digest()[:16]}"
        path = entry / "checkpoints" / "step-0000000.safetensors"
        if path.exists() or path.with_suffix(".json").exists():
            try:
                return cls._load(path, config)
            except CheckpointError as error:
                warnings.warn(f"retraining the digits classifier: {error}", stacklevel=2)
        net, accuracy = cls._train(config)
        save_checkpoint(
            entry, 0, {"net": net.state_dict()}, {"config": asdict(config), "test_accuracy": accuracy}
        )
        return cls(net, config, from_cache=False, test_accuracy=accuracy)

    @classmethod
    def _load(cls, path: Path, config: ClassifierConfig) -> DigitsClassifier:
        ckpt = load_checkpoint(path)
        if ckpt.meta.get("config") != asdict(config):
            raise CheckpointError(f"{path} holds a classifier of another config")
        net = DigitsCNN(config.width, config.features)
        try:
            net.load_state_dict(ckpt.state["net"])
        except (KeyError, RuntimeError) as error:
            raise CheckpointError(f"{path} does not hold the classifier's weights ({error})") from None
        return cls(net, config, from_cache=True, test_accuracy=float(ckpt.meta["test_accuracy"]))

    @staticmethod
    def _train(config: ClassifierConfig) -> tuple[DigitsCNN, float]:
        split = digits_split(config.split_seed, config.test_fraction)
        generator = make_generator(config.seed)
        with _one_thread(), torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(config.seed)  # the initialisation; the caller's RNG is kept
            net = DigitsCNN(config.width, config.features)
            optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            n = split.x_train.shape[0]
            per_epoch = math.ceil(n / config.batch_size)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, config.lr, total_steps=config.epochs * per_epoch
            )
            batches: list[torch.Tensor] = []

            def loss_fn(step: int) -> torch.Tensor:
                if step % per_epoch == 0:  # a fresh permutation each epoch, drawn before its batches' noise
                    batches[:] = torch.randperm(n, generator=generator).split(config.batch_size)
                rows = batches[step % per_epoch]
                x = scale_digits(dequantize(split.x_train[rows], generator))
                return nn.functional.cross_entropy(net(x), split.y_train[rows])

            fit(Trainer(net, optimizer, schedule), loss_fn, config.epochs * per_epoch)
            net.eval()
            with torch.no_grad():
                predicted = net(scale_digits(split.x_test)).argmax(1)
        return net, float((predicted == split.y_test).double().mean())

    @torch.no_grad()
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(block) for block in _as_images(x).split(4096)])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``[N, F]`` of images ``[N, 1, 8, 8]`` (or ``[N, 64]``) in [-1, 1]."""
        return self._apply(self.net.body, x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self.net, x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted digit ``[N]`` (int64)."""
        return self.logits(x).argmax(1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == torch.as_tensor(y)).double().mean())


# --------------------------------------------------------------------------------------------------
# sample quality


def _check_count(samples: torch.Tensor, allow_small: bool) -> None:
    n = samples.shape[0]
    if n >= MIN_SAMPLES:
        return
    message = (
        f"{n} samples are too few for a Fréchet distance (its upward bias grows like 1/n); "
        f"draw at least {MIN_SAMPLES}"
    )
    if not allow_small:
        raise ValueError(message + " or pass allow_small=True")
    warnings.warn(f"allow_small=True: {message}; this number is NOT comparable to others", stacklevel=3)


def frechet_digits_distance(
    samples: torch.Tensor,
    reference: torch.Tensor,
    classifier: DigitsClassifier | None = None,
    allow_small: bool = False,
) -> float:
    """Fréchet distance (Heusel et al. 2017) between the classifier features of ``samples`` and of
    ``reference`` (both images in ``[-1, 1]``, see ``scale_digits``).

    Raises ``ValueError`` for fewer than ``MIN_SAMPLES`` samples unless ``allow_small``, which warns.
    The reference may be smaller (the test split holds 359 images); compare against ``floor``.
    """
    _check_count(samples, allow_small)
    classifier = classifier or DigitsClassifier.pretrained()
    return frechet_distance(classifier.features(samples), classifier.features(reference))


def class_histogram(samples: torch.Tensor, classifier: DigitsClassifier | None = None) -> torch.Tensor:
    """Fraction of ``samples`` (images in ``[-1, 1]``) the classifier assigns to each digit: ``[10]`` float64."""
    classifier = classifier or DigitsClassifier.pretrained()
    counts = torch.bincount(classifier.predict(samples), minlength=N_CLASSES)
    return counts.double() / samples.shape[0]


def floor(classifier: DigitsClassifier | None = None) -> float:
    """The Fréchet distance of the training split (1438 images) to the test split (359 images), both
    scaled by ``scale_digits``: what samples from the data distribution itself score.

    A generator's ``frechet_digits_distance`` to the test split is read against this number. The
    test side is not bootstrapped: resampling it would repeat images, not add information, and the
    same 359 reference images enter both numbers. Draw as many samples as the training split holds
    for the fairest comparison (the distance's bias depends on the sample count).
    """
    classifier = classifier or DigitsClassifier.pretrained()
    split = digits_split(classifier.config.split_seed, classifier.config.test_fraction)
    return frechet_digits_distance(scale_digits(split.x_train), scale_digits(split.x_test), classifier)


# --------------------------------------------------------------------------------------------------
# bits/dim


class Scaler(Protocol):
    """An elementwise affine map from pixel units to the model's space (``datasets.Standardizer`` is one)."""

    def transform(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def log_det(self) -> torch.Tensor: ...


def in_pixel_units(log_prob: Callable[[torch.Tensor], torch.Tensor], scaler: Scaler) -> Callable:
    """``log p_x(x) = log p_y(scaler.transform(x)) + log|det ∂y/∂x|``: a log-density of the model's
    space (``log_prob``) as one of pixel units (change of variables, docs/math.md#densities-in-data-units)."""

    def log_prob_pixels(x: torch.Tensor) -> torch.Tensor:
        return log_prob(scaler.transform(x)).double() + float(scaler.log_det)

    return log_prob_pixels


def dequantized_bits_per_dim(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bits/dim of integer pixels ``x`` (Theis et al. 2016): ``-log2 p(k + u) / d`` per example, ``[N]``.

    ``log_prob`` is a log-density in pixel units (wrap a model's with ``in_pixel_units``); one
    dequantization draw per example. Its mean over a test set, ± the standard error over examples,
    is the number to report; that error includes the dequantization and any Hutchinson noise.
    """
    logp = log_prob(dequantize(x, generator))
    return bits_per_dim(logp.double(), x, bin_width=1.0)


class _Fitted(Protocol):
    def fit(self, x: np.ndarray): ...

    def score_samples(self, x: np.ndarray) -> np.ndarray: ...


def _sklearn_log_prob(model: _Fitted) -> Callable[[torch.Tensor], torch.Tensor]:
    def log_prob(y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(model.score_samples(y.flatten(1).double().numpy()))

    return log_prob


def baseline_bits_per_dim(
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    scaler: Scaler,
    seed: int = 0,
    n_components: tuple[int, ...] = (1, 2, 5, 10, 20),
    bandwidths: tuple[float, ...] = (0.05, 0.08, 0.12, 0.18, 0.27, 0.4),
) -> dict[str, dict]:
    """Bits/dim of the test pixels under scikit-learn's ``GaussianMixture`` (full covariances) and
    ``KernelDensity`` (Gaussian kernel) fitted to the dequantized training pixels in the model's space.

    Each baseline's size (number of components, bandwidth in the model's space) is chosen on a
    held-out fifth of the training data, never on the test data, then refitted on all of it.
    Returns ``{name: {"bpd": [N] tensor, "param": chosen value}}``.
    """
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity

    generator = make_generator(seed)
    y_train = scaler.transform(dequantize(x_train, generator)).flatten(1).double()
    y_train = y_train[torch.randperm(y_train.shape[0], generator=generator)].numpy()
    n_fit = y_train.shape[0] - y_train.shape[0] // 5
    candidates: dict[str, tuple[Callable[[float], _Fitted], tuple]] = {
        "GaussianMixture": (
            lambda k: GaussianMixture(int(k), covariance_type="full", reg_covar=1e-4, random_state=seed),
            n_components,
        ),
        "KernelDensity": (lambda h: KernelDensity(bandwidth=h), bandwidths),
    }
    results = {}
    for name, (make, grid) in candidates.items():
        held_out = [make(v).fit(y_train[:n_fit]).score_samples(y_train[n_fit:]).mean() for v in grid]
        best = grid[int(np.argmax(held_out))]
        model = make(best).fit(y_train)
        bpd = dequantized_bits_per_dim(in_pixel_units(_sklearn_log_prob(model), scaler), x_test, generator)
        results[name] = {"bpd": bpd, "param": best}
    return results
