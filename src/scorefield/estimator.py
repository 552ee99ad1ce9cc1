"""scikit-learn style density and anomaly estimators backed by a score-based diffusion model.

``ScoreDensityEstimator`` learns the score of a continuous-time diffusion (VP by default) with
denoising score matching, then reports exact log-densities through the probability-flow ODE. It
adapts to the data instead of asking for tuning, from a few dozen rows to a hundred thousand and from
2 to about 100 features:

- the rows are whitened (per-feature standardisation, then a Ledoit-Wolf-shrunk ZCA whitening), and the
  network is preconditioned as a denoiser (``param="denoiser"``: Karras et al. 2022), so a network that
  outputs zero *is* the best-fitting Gaussian; the network learns only the departure from it, and
  whatever regularises it (early stopping, weight decay) pulls towards that Gaussian, not towards nothing;
- the network sees its inputs softly clipped to the range seen in training (``Squashed``), so a row far
  outside the data gets the Gaussian's very low log-density rather than an unbounded extrapolation;
- training uses the likelihood weighting ``g^2`` with importance-sampled times (Song et al. 2021b), the
  weighting under which the loss bounds the negative log-likelihood that the estimator reports;
- a held-out split decides how long to train (early stopping on a fixed-noise validation loss, keeping
  the best EMA weights) and the diffusion time ``eval_eps_`` at which densities are evaluated (a
  slightly smoothed density generalises; one evaluated at t -> 0 memorises a small training set).

In scikit-learn's vocabulary ``score`` is a mean log-likelihood; the gradient of the log-density is
``grad_log_prob``.
"""

from __future__ import annotations

import json
import math
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted, check_random_state
from torch import nn

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6: the same checks as an estimator method

    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


from .fit import EMA, EarlyStopping, Trainer, fit
from .likelihood import log_likelihood
from .losses import sde_dsm
from .nets.mlp import MLP
from .samplers import sample_ode, sample_pc
from .scalers import Whitener
from .score import ScoreModel
from .sde import VESDE, VPSDE, SubVPSDE
from .utils import default_device, make_generator

__all__ = ["ScoreDensityEstimator", "ScoreAnomalyDetector"]

SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
# Diffusion times at which log-densities may be evaluated; the held-out split picks one. The larger
# ones smooth a small or discrete (lattice) data set into a density that generalises.
EPS_CANDIDATES = (1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 2e-1)
# Training length: about EPOCHS passes over the training rows up to EPOCH_ROWS rows, and
# EPOCHS * sqrt(n / EPOCH_ROWS) passes beyond, within [MIN_STEPS, MAX_STEPS]; early stopping on the
# held-out loss (checked every EVAL_EVERY steps, PATIENCE checks without improvement) may end it
# sooner. Counting passes rather than steps is the regulariser that small tables need: on ~100 rows of
# 64 lattice-valued pixels the held-out loss keeps improving long after the density has started to
# memorise the pixel lattice (held-out rows share it), which ranks anomalies worse. A larger table
# takes more passes before it is memorised (each pass carries more independent rows), and its density
# has finer detail to learn: 5,000 rows of a 2-D toy are still improving after 300 passes, while
# ~1,000 rows or fewer train exactly as with a flat EPOCHS.
MIN_STEPS, MAX_STEPS, EPOCHS, EPOCH_ROWS = 300, 20_000, 300, 1000
EVAL_EVERY, PATIENCE = 250, 8
# The learning rate warms up linearly over WARMUP_STEPS and drops tenfold for the last LR_DROP of the
# planned steps, which average the gradient noise away. Early stopping at the full rate only stops at
# that rate's noise floor, so it starts the low-rate phase (LR_DROP of the planned steps) instead;
# that phase gets a fresh patience, and early stopping within it ends training. (A cosine decay to zero gained ~0.02 nat on
# two 2-D toys but lost ~1.3 nats on digits in one trial.)
WARMUP_STEPS, LR_DROP = 200, 0.2
# EMA of the weights (the evaluated model): decay max(EMA_DECAY, 1 - EMA_SPAN / steps), a half-life of
# ~140 steps for a short run and ~7% of the run (~700 steps at 10,000) for a long one.
EMA_DECAY, EMA_SPAN = 0.995, 10
# Log-densities: the exact divergence costs one vector-Jacobian product per feature, Hutchinson's
# estimate N_PROBES whatever the dimension (unbiased; its standard error shrinks as 1/sqrt(N_PROBES)),
# so beyond EXACT_MAX_DIM features the estimate is used. ODE_TOL: dopri5's rtol and atol.
EXACT_MAX_DIM, N_PROBES, ODE_TOL = 8, 8, 1e-4
# Up to FOURIER_MAX_DIM features the network also sees FOURIER_FREQUENCIES random Fourier features of
# its (whitened, unit-variance) input, frequencies ~ N(0, FOURIER_SCALE^2) cycles per unit (``Squashed``):
# a 2-D density has detail (the checkerboard's edges, rings 0.08 wide) far finer than its unit scale,
# which a plain MLP learns slowly. Beyond it a table has no such detail to resolve per feature and the
# features would only widen the first layer. On checkerboard and rings (10,000 steps) they gained
# 0.11-0.17 nat at scale 1 and 0.17-0.27 at scale 0.5; at scale 2 (32 frequencies) they overfit.
FOURIER_MAX_DIM, FOURIER_FREQUENCIES, FOURIER_SCALE = 8, 16, 0.5
# fit needs MIN_FIT_ROWS rows (a held-out split of at least 2 is taken from them). A column whose
# standard deviation is at most CONSTANT_RTOL * (|mean| + 1) counts as constant and is refused: it has
# no density, and the whitener's floor would turn it into a spurious ~+2 nats per row.
MIN_FIT_ROWS, CONSTANT_RTOL = 10, 1e-12
# torch seeds drawn from a numpy random state for ``sample`` lie in [0, SEED_HIGH)
SEED_HIGH = np.iinfo(np.int64).max


class Squashed(nn.Module):
    """``F(u, c)`` with ``u = b tanh(x / b)``: the network sees each feature softly clipped to ``[-b, b]``.

    ``b`` (a buffer, one per feature) is set to twice the reach of the training inputs, so inside the
    range the network ever saw the squashing is nearly the identity (at most 8% compression), while
    far outside it the network's output stays bounded. With the ``"denoiser"`` parameterisation the
    score there is the whitened Gaussian's ``-x / (m^2 + std^2)`` plus a bounded correction, so
    a wildly anomalous row gets a very low, finite log-density instead of a probability-flow ODE
    driven by an unbounded linear extrapolation of the network.

    With ``n_frequencies > 0`` the network sees ``[u, sin(2 pi u B), cos(2 pi u B)]`` for fixed random
    frequencies ``B ~ N(0, scale^2)``, ``[dim, n_frequencies]`` (a buffer): random Fourier features of the
    input (Tancik et al. 2020), which let an MLP of smooth activations fit the sharp edges and thin
    filaments of a low-dimensional density in a few thousand steps (it learns high frequencies slowly).
    """

    def __init__(self, net: nn.Module, dim: int, n_frequencies: int = 0, scale: float = 1.0, seed: int = 0):
        super().__init__()
        self.net = net
        self.register_buffer("bound", torch.full((dim,), 1e4))
        freqs = torch.randn(dim, n_frequencies, generator=make_generator(seed)) * scale
        self.register_buffer("frequencies", freqs)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b = self.bound.to(x)
        u = b * torch.tanh(x / b)
        if self.frequencies.shape[1]:
            angles = 2 * math.pi * u @ self.frequencies.to(u)  # (B, n_frequencies)
            u = torch.cat([u, angles.sin(), angles.cos()], dim=1)
        return self.net(u, c)


def _make_sde(kind: str, sigma_max: float | None = None):
    if kind not in SDES:
        raise ValueError(f"unknown sde {kind!r}; choose one of {', '.join(SDES)}")
    if kind == "ve":
        # sigma_max about the largest pairwise distance of standardised data (Song & Ermon 2020)
        return VESDE(sigma_min=0.01, sigma_max=sigma_max)
    return SDES[kind]()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists here (``None``: CUDA when available, else the CPU)."""
    try:
        resolved = default_device(device)
        torch.empty(0, device=resolved)  # an unknown name, no CUDA build, a missing GPU index: all fail here
    except (RuntimeError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"device={str(device)!r} is not available on this machine ({reason}); pass device='cpu', "
            "or device=None to use CUDA only when it is available."
        ) from None
    return resolved


def _torch_seed(random_state) -> int:
    """A torch seed drawn from ``random_state``: None (numpy's global state), an int, a RandomState or Generator."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(SEED_HIGH))
    return int(check_random_state(random_state).randint(SEED_HIGH, dtype=np.int64))


def _json_default(value):
    """JSON for the numpy scalars and torch devices that ``get_params`` may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to JSON")


class ScoreDensityEstimator(BaseEstimator):
    """Density estimation with a score-based diffusion model (Song et al. 2021, probability-flow likelihood).

    Args:
        sde: ``"vp"``, ``"subvp"`` or ``"ve"``.
        steps: the most optimisation steps; ``None`` chooses from the data size (``EPOCHS`` passes
            over the training rows, ``EPOCHS * sqrt(n / EPOCH_ROWS)`` beyond ``EPOCH_ROWS`` rows,
            within ``[MIN_STEPS, MAX_STEPS]``). Early stopping on a held-out split may end training
            sooner.
        batch_size: ``None`` means ``min(256, n_train)``.
        hidden: MLP width; ``None`` means 128 up to 8 features and 256 beyond.
        depth: MLP hidden layers.
        lr: AdamW learning rate.
        weight_decay: AdamW's decoupled weight decay (towards the whitened Gaussian, see above).
        validation_fraction: share of rows held out for early stopping and for ``eval_eps_``.
        eval_eps: the diffusion time at which densities are evaluated; ``None`` picks it on the
            held-out split from ``EPS_CANDIDATES``.
        weighting: ``"likelihood"`` (``g^2`` with importance sampling of t: the loss bounds the
            negative log-likelihood, so the best held-out log-densities) or ``"std2"`` (denoising
            score matching's weighting: equally accurate scores at every t).
        param: what the network predicts (``ScoreModel``): ``"denoiser"`` (a zero network is the
            whitened Gaussian), ``"eps"`` or ``"score"``.
        seed: seeds every random choice of ``fit`` (split, initialisation, noise), a non-negative int.
        device: ``None`` picks CUDA when available; a device that does not exist here (``"cuda"``
            without a GPU, an unknown name) raises ``ValueError`` at ``fit``.
        verbose: scikit-learn's convention: 0 is silent; 1 or more shows a progress bar over the
            training steps (the held-out loss in its postfix) and prints a one-line summary at the
            end of ``fit`` (steps trained, best held-out loss, the chosen ``eval_eps_``).
        progress: the older switch for the same output: ``progress=True`` acts as ``verbose=1``.

    Parameters are checked at ``fit`` (scikit-learn's convention), so a bad value raises there with
    the parameter's name, not in the constructor.

    Attributes (after ``fit``): ``n_features_in_``; ``feature_names_in_`` when ``X`` was a DataFrame
    with string column names (``score_samples`` and ``grad_log_prob`` then check the names);
    ``scaler_`` (the ``Whitener``), ``model_`` (the EMA score model), ``n_steps_``,
    ``validation_loss_`` (the best held-out loss; ``inf`` when no held-out check ran, i.e. fewer than
    ``EVAL_EVERY`` steps), ``eval_eps_``, and ``eps_scores_`` when ``eval_eps`` was chosen.
    """

    _parameter_constraints: dict = {
        "sde": [StrOptions(set(SDES))],
        "steps": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "hidden": [Interval(Integral, 1, None, closed="left"), None],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 0.5, closed="neither")],
        "eval_eps": [Interval(Real, 0, 1, closed="neither"), None],
        "weighting": [StrOptions({"likelihood", "std2"})],
        "param": [StrOptions({"denoiser", "eps", "score"})],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "device": [str, torch.device, None],
        "verbose": ["verbose"],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        sde: str = "vp",
        steps: int | None = None,
        batch_size: int | None = None,
        hidden: int | None = None,
        depth: int = 3,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.15,
        eval_eps: float | None = None,
        weighting: str = "likelihood",
        param: str = "denoiser",
        seed: int = 0,
        device: str | None = None,
        verbose: int = 0,
        progress: bool = False,
    ):
        self.sde = sde
        self.weight_decay = weight_decay
        self.param = param
        self.weighting = weighting
        self.steps = steps
        self.batch_size = batch_size
        self.hidden = hidden
        self.depth = depth
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.eval_eps = eval_eps
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.progress = progress

    # -- fitting ----------------------------------------------------------------------------------
    def _validate(self, X, reset: bool) -> torch.Tensor:
        """``X`` as a float32 tensor that owns its memory; sets (``reset``) or checks ``n_features_in_``
        and ``feature_names_in_`` through scikit-learn's ``validate_data``.

        The copy is C-contiguous and writable whatever ``X`` was (``X[::-1]``, ``X[:, ::-1]``, a
        read-only DataFrame block), since ``torch.from_numpy`` accepts neither negative strides nor,
        silently, read-only memory.
        """
        ndim = getattr(X, "ndim", None)
        if ndim is not None and ndim != 2:
            raise ValueError(
                f"X must be 2-D [n_samples, n_features], got shape {tuple(np.shape(X))}; reshape a single "
                "feature with X.reshape(-1, 1) or a single row with X.reshape(1, -1)."
            )
        X = validate_data(self, X, reset=reset, dtype=np.float64)
        if reset:
            if len(X) < MIN_FIT_ROWS:
                raise ValueError(
                    f"X has {len(X)} rows, but fit needs at least {MIN_FIT_ROWS} (a held-out split of "
                    "validation_fraction is taken from them); pass more rows."
                )
            self._check_no_constant_column(X)
        return torch.from_numpy(np.array(X, dtype=np.float32, order="C", copy=True))

    def _check_no_constant_column(self, X: np.ndarray) -> None:
        """Refuse a column whose spread is at most ``CONSTANT_RTOL * (|mean| + 1)``: it has no density."""
        mean, std = X.mean(0), X.std(0)
        constant = np.flatnonzero(std <= CONSTANT_RTOL * (np.abs(mean) + 1))
        if not constant.size:
            return
        names = getattr(self, "feature_names_in_", None)
        cols = ", ".join(f"{j} ({names[j]!r})" if names is not None else str(j) for j in constant[:10]) + (
            f" and {constant.size - 10} more" if constant.size > 10 else ""
        )
        raise ValueError(
            f"X has {constant.size} constant column(s), index {cols}, which have no density (each would "
            "add a spurious ~2 nats per row and spread its samples); drop the column(s) before fit."
        )

    def _verbosity(self) -> int:
        return max(int(self.verbose), int(bool(self.progress)))

    def _build(self, dim: int, sigma_max: float | None) -> ScoreModel:
        hidden = self.hidden or (128 if dim <= 8 else 256)
        n_freq = FOURIER_FREQUENCIES if dim <= FOURIER_MAX_DIM else 0
        mlp = MLP(dim + 2 * n_freq, hidden=hidden, depth=self.depth, out_dim=dim)
        net = Squashed(mlp, dim, n_frequencies=n_freq, scale=FOURIER_SCALE, seed=self.seed)
        return ScoreModel(net, _make_sde(self.sde, sigma_max=sigma_max), param=self.param)

    def fit(self, X, y=None) -> ScoreDensityEstimator:
        """Learn the score of ``X`` ([n_samples, n_features]); ``y`` is ignored.

        ``X`` is any 2-D array-like of finite numbers (an array of any strides, a pandas DataFrame: its
        string column names become ``feature_names_in_``) with at least ``MIN_FIT_ROWS`` rows and no
        constant column (drop those first: a constant has no density). The constructor's parameters
        are checked here and a bad one raises ``ValueError`` naming it, as does a ``device`` that
        does not exist on this machine. With ``verbose`` (or ``progress``) a progress bar and a summary
        line report the training.
        """
        self._fit(X)
        return self

    def _fit(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """``fit``'s work; returns the rows as a float32 tensor and the held-out rows (data units)."""
        self._validate_params()
        device = _resolve_device(self.device)
        x = self._validate(X, reset=True)
        torch.manual_seed(self.seed)  # network initialisation
        gen = make_generator(self.seed)
        self.scaler_ = Whitener().fit(x)
        z = self.scaler_.transform(x)
        perm = torch.randperm(len(z), generator=gen)
        n_val = max(2, int(round(self.validation_fraction * len(z))))
        z_val, z_train = z[perm[:n_val]].to(device), z[perm[n_val:]].to(device)
        sigma_max = None
        if self.sde == "ve":
            sigma_max = float(torch.cdist(z_train[:2000], z_train[:2000]).max()) * 1.5 + 1.0
            self.sigma_max_ = sigma_max
        model = self._build(z.shape[1], sigma_max).to(device)
        # the reach of the training inputs x_t = m x_0 + std z: the data's range plus 3 noise stds
        model.net.bound.copy_(2 * (z_train.abs().amax(0) + 3))
        self.model_ = self._train(model, z_train, z_val, gen)
        self.eval_eps_ = self.eval_eps if self.eval_eps is not None else self._choose_eps(z_val)
        if self._verbosity():
            print(
                f"{type(self).__name__}: trained {self.n_steps_} steps, best held-out loss "
                f"{self.validation_loss_:.4f}, eval_eps_={self.eval_eps_:g}",
                flush=True,
            )
        return x, x[perm[:n_val]]

    def _loss(self, model: ScoreModel, z: torch.Tensor, generator) -> torch.Tensor:
        is_likelihood = self.weighting == "likelihood"
        return sde_dsm(
            model,
            model.sde,
            z,
            weighting=self.weighting,
            importance_sampling=is_likelihood,
            generator=generator,
        )

    def _validation_loss(self, model: ScoreModel, z_val: torch.Tensor, repeats: int = 8) -> float:
        """The training loss on the held-out rows with the same noise every time (low variance)."""
        g = make_generator(self.seed + 1, z_val.device)
        with torch.no_grad():
            batch = z_val.repeat(repeats, 1)
            return float(self._loss(model, batch, g).mean())

    def _train(self, model: ScoreModel, z_train: torch.Tensor, z_val: torch.Tensor, gen) -> ScoreModel:
        """``fit.fit`` with the estimator's recipe: AdamW with warm-up, a tenfold lower rate for the last
        ``LR_DROP`` of the run (started early when the held-out loss plateaus at the full rate), the EMA
        of the weights, and early stopping on the held-out loss that keeps the best average."""
        n = len(z_train)
        batch = self.batch_size or min(256, n)
        epochs = EPOCHS * max(1.0, math.sqrt(n / EPOCH_ROWS))
        max_steps = self.steps or int(min(MAX_STEPS, max(MIN_STEPS, epochs * n / batch)))
        phase = {"drop_at": (1 - LR_DROP) * max_steps, "end": max_steps}  # the low-rate phase: (drop_at, end]

        def lr_factor(k: int) -> float:  # step k + 1 of the run
            return min(1.0, (k + 1) / WARMUP_STEPS) * (0.1 if k + 1 > phase["drop_at"] else 1.0)

        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        ema = EMA(model, max(EMA_DECAY, 1 - EMA_SPAN / max_steps), warmup=False)
        trainer = Trainer(
            model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor), grad_clip=1.0, ema=ema
        )
        stopper = EarlyStopping(
            lambda: self._validation_loss(ema.averaged(model), z_val), lambda: ema.state_dict(model), PATIENCE
        )
        dev_gen = make_generator(self.seed + 2, z_train.device)

        def loss_fn(step: int) -> torch.Tensor:
            idx = torch.randint(0, n, (batch,), generator=dev_gen, device=z_train.device)
            return self._loss(model, z_train[idx], dev_gen).mean()

        def after_step(done: int, loss: torch.Tensor, bar) -> bool:
            if done == int(phase["drop_at"]):
                stopper.restart_patience()  # the low-rate phase gets its own patience
            if done % EVAL_EVERY == 0 or done == phase["end"]:  # the last step too: a short run is kept
                plateau = stopper.check(done)
                bar.set_postfix(held_out_loss=f"{stopper.curve[-1][1]:.4f}")
                if plateau and done >= phase["drop_at"]:
                    return True
                if plateau:  # a plateau at the full rate is its gradient-noise floor: lower the rate
                    phase["drop_at"], phase["end"] = done, min(max_steps, done + int(LR_DROP * max_steps))
                    stopper.restart_patience()
            return done >= phase["end"]

        self.n_steps_ = fit(trainer, loss_fn, max_steps, after_step, progress=bool(self._verbosity()))
        model.load_state_dict(stopper.best_state)
        self.validation_loss_ = stopper.best
        self.validation_curve_ = stopper.curve
        return model.requires_grad_(False).eval()

    def _log_density_std(self, z: torch.Tensor, eps: float, batch: int = 1024) -> torch.Tensor:
        """``log p_eps`` of standardised rows through the probability-flow ODE, in nats: ``[N]``."""
        kind = "exact" if z.shape[1] <= EXACT_MAX_DIM else "hutchinson"
        g = make_generator(self.seed + 3, z.device)
        out = [
            log_likelihood(
                self.model_,
                self.model_.sde,
                chunk,
                divergence=kind,
                n_probes=N_PROBES,
                eps=eps,
                rtol=ODE_TOL,
                atol=ODE_TOL,
                generator=g,
            )[0]
            for chunk in z.split(batch)
        ]
        return torch.cat(out)

    def _choose_eps(self, z_val: torch.Tensor) -> float:
        z_val = z_val[:256]
        scores = {eps: float(self._log_density_std(z_val, eps).mean()) for eps in EPS_CANDIDATES}
        self.eps_scores_ = scores
        return max(scores, key=scores.get)

    # -- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def _log_density(self, x: torch.Tensor) -> np.ndarray:
        """Log-density in data units (nats) of rows already validated: ``[N]``."""
        device = self._device()
        return self.scaler_.log_prob(
            lambda z: self._log_density_std(z.to(device), self.eval_eps_).cpu(), x
        ).numpy()

    def score_samples(self, X) -> np.ndarray:
        """Log-density of each row in data units (nats): ``[n_samples]``.

        ``X`` is validated as in ``fit`` (any strides, a DataFrame); after a fit on a DataFrame, a
        DataFrame whose column names differ from ``feature_names_in_`` raises ``ValueError`` naming
        the unexpected and the missing names. Raises ``NotFittedError`` before ``fit``.
        """
        check_is_fitted(self, "model_")
        return self._log_density(self._validate(X, reset=False))

    def score(self, X, y=None) -> float:
        """Mean log-density of ``X`` in nats (scikit-learn's ``score``)."""
        return float(np.mean(self.score_samples(X)))

    def grad_log_prob(self, X) -> np.ndarray:
        """``grad_x log p(x)`` in data units: ``[n_samples, n_features]``; ``X`` is checked as in ``score_samples``."""
        check_is_fitted(self, "model_")
        x = self._validate(X, reset=False)
        device = self._device()

        def score_z(z: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.model_(z.to(device), self.eval_eps_).cpu()

        return self.scaler_.score(score_z, x).double().numpy()

    def sample(self, n: int, method: str = "ode", seed: int | None = None, random_state=None) -> np.ndarray:
        """``n`` new rows in data units by the probability-flow ODE (``"ode"``) or predictor-corrector (``"pc"``).

        Randomness follows ``KernelDensity.sample``: ``random_state=None`` draws fresh rows on every
        call (from numpy's global random state), an int reproduces them, and a numpy ``RandomState``
        or ``Generator`` is drawn from (a torch seed is taken from it). ``seed`` (an int) is the older
        way to reproduce draws and keeps its rows (``seed=est.seed`` gives what a call without
        arguments gave before ``random_state`` existed); passing both raises ``ValueError``. ``n``
        must be a positive int and ``method`` one of ``"ode"``, ``"pc"`` (else ``ValueError``).
        """
        validate_parameter_constraints(
            {
                "n": [Interval(Integral, 1, None, closed="left")],
                "method": [StrOptions({"ode", "pc"})],
                "seed": [Integral, None],
                "random_state": ["random_state", np.random.Generator],
            },
            {"n": n, "method": method, "seed": seed, "random_state": random_state},
            caller_name=f"{type(self).__name__}.sample",
        )
        if seed is not None and random_state is not None:
            raise ValueError(
                f"sample got both seed={seed!r} and random_state={random_state!r}; pass only one "
                "(random_state is the scikit-learn name, seed the older one)."
            )
        check_is_fitted(self, "model_")
        n, device = int(n), self._device()
        g = make_generator(seed if seed is not None else _torch_seed(random_state), device)
        sde = self.model_.sde
        x_T = sde.prior_sample((n, self.n_features_in_), generator=g).to(device)
        if method == "ode":
            z, _ = sample_ode(self.model_, sde, x_T, eps=self.eval_eps_)
        else:
            z = sample_pc(self.model_, sde, x_T, n_steps=500, eps=max(self.eval_eps_, 1e-3), generator=g)
        return self.scaler_.inverse_transform(z.cpu()).double().numpy()

    # -- persistence ------------------------------------------------------------------------------
    def _fitted_state(self) -> dict:
        names = getattr(self, "feature_names_in_", None)
        return {
            "n_features_in_": self.n_features_in_,
            "feature_names_in_": None if names is None else [str(name) for name in names],
            "eval_eps_": self.eval_eps_,
            "n_steps_": self.n_steps_,
            "validation_loss_": self.validation_loss_,
            "sigma_max_": getattr(self, "sigma_max_", None),
        }

    def save(self, path: str | Path) -> None:
        """Write ``path`` (safetensors: weights, scaler) and ``path + '.json'`` (parameters, fitted state).

        Missing parent folders are created. Both files are first written beside their targets under
        temporary names and then renamed over them, so an interrupted save leaves any earlier pair
        whole and no partial file under the final names.
        """
        check_is_fitted(self, "model_")
        path = Path(path)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        tensors.update({f"scaler.{k}": v.contiguous() for k, v in self.scaler_.state_dict().items()})
        meta = {"class": type(self).__name__, "params": self.get_params(), "state": self._fitted_state()}
        meta_path = path.with_name(path.name + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
        try:
            save_file(tensors, str(tmp))
            tmp_meta.write_text(json.dumps(meta, indent=2, default=_json_default))
            tmp.replace(path)
            tmp_meta.replace(meta_path)
        finally:
            tmp.unlink(missing_ok=True)
            tmp_meta.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None):
        """Rebuild an estimator written by ``save`` (no pickle involved), ``feature_names_in_`` included.

        ``device`` overrides the saved one (``None`` keeps it). Raises ``FileNotFoundError`` when
        ``path`` or its JSON side file is missing, and ``ValueError`` when they hold the other
        estimator class or when the device does not exist on this machine.
        """
        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(
                f"no saved estimator at path {str(path)!r} (expected it and {meta_path.name}); pass the "
                "file that save() wrote."
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("class") != cls.__name__:
            raise ValueError(
                f"path {str(path)!r} holds a {meta.get('class')}, not a {cls.__name__}; load it with "
                f"{meta.get('class')}.load."
            )
        target = _resolve_device(device if device is not None else meta["params"].get("device"))
        est = cls(**meta["params"])
        for key, value in meta["state"].items():
            if value is not None:
                setattr(est, key, value)
        if getattr(est, "feature_names_in_", None) is not None:
            est.feature_names_in_ = np.asarray(est.feature_names_in_, dtype=object)
        tensors = load_file(str(path))
        est.scaler_ = Whitener.from_state_dict(
            {k.removeprefix("scaler."): v for k, v in tensors.items() if k.startswith("scaler.")}
        )
        model = est._build(est.n_features_in_, meta["state"].get("sigma_max_"))
        model.load_state_dict(
            {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        )
        est.model_ = model.to(target).eval()
        return est


class ScoreAnomalyDetector(OutlierMixin, ScoreDensityEstimator):
    """Anomaly detection by low score-model density: the lower ``log p(x)``, the more anomalous.

    Follows scikit-learn's outlier detectors: ``score_samples`` is the log-density (higher is more
    normal), ``decision_function = score_samples - offset_``, ``predict`` gives +1 (inlier) or -1.

    Args:
        contamination: the expected share of outliers, which sets the threshold ``offset_``:

            - a float in ``(0, 0.5)``: ``offset_`` is that quantile of the log-densities of (up to 2,000
              of) the training rows, so about that share of the training rows is flagged;
            - ``"auto"`` (as ``IsolationForest`` offers it): no share is assumed. ``offset_`` is Tukey's
              lower fence of the log-densities of the held-out rows (the ``validation_fraction``
              split, which the network did not train on), ``Q1 - 1.5 * IQR``: a row is flagged when its
              log-density would be an outlier among normal held-out rows. For a Gaussian that flags
              about 7.6% of normal rows in 1-D, 4.8% in 2-D, 1.9% in 10-D and 0.9% in 64-D (the
              log-density is minus half a chi-squared); a heavier lower tail flags more.

            Any other value raises ``ValueError`` at ``fit``.
        The other parameters are ``ScoreDensityEstimator``'s.
    """

    _parameter_constraints: dict = {
        **ScoreDensityEstimator._parameter_constraints,
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="neither")],
    }

    def __init__(
        self,
        contamination: float | str = 0.1,
        sde: str = "vp",
        steps: int | None = None,
        batch_size: int | None = None,
        hidden: int | None = None,
        depth: int = 3,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.15,
        eval_eps: float | None = None,
        weighting: str = "likelihood",
        param: str = "denoiser",
        seed: int = 0,
        device: str | None = None,
        verbose: int = 0,
        progress: bool = False,
    ):
        super().__init__(
            sde=sde,
            steps=steps,
            batch_size=batch_size,
            hidden=hidden,
            depth=depth,
            lr=lr,
            weight_decay=weight_decay,
            validation_fraction=validation_fraction,
            eval_eps=eval_eps,
            weighting=weighting,
            param=param,
            seed=seed,
            device=device,
            verbose=verbose,
            progress=progress,
        )
        self.contamination = contamination

    def fit(self, X, y=None) -> ScoreAnomalyDetector:
        """Fit the density as ``ScoreDensityEstimator.fit`` does, then set ``offset_`` from ``contamination``."""
        x, x_val = self._fit(X)
        if self.contamination == "auto":
            logp = self._log_density(x_val[:2000])
            q1, q3 = np.percentile(logp, [25, 75])
            self.offset_ = float(q1 - 1.5 * (q3 - q1))
        else:
            rows = np.random.default_rng(self.seed).permutation(len(x))[:2000]
            self.offset_ = float(np.quantile(self._log_density(x[rows]), self.contamination))
        return self

    def _fitted_state(self) -> dict:
        return {**super()._fitted_state(), "offset_": self.offset_}

    def decision_function(self, X) -> np.ndarray:
        """Positive for inliers, negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)
