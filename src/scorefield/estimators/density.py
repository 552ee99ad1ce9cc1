"""scikit-learn style density and anomaly estimators backed by a score-based diffusion model.

``ScoreDensityEstimator`` learns the score of a continuous-time diffusion (VP by default) with
denoising score matching, then reports exact log-densities through the probability-flow ODE. It
adapts to the data instead of asking for tuning, from a few dozen rows to a hundred thousand and from
2 to about 100 features:

- the rows are whitened (per-feature standardisation, then a ZCA whitening whose covariance shrinkage
  is chosen by held-out likelihood), and the network is preconditioned as a denoiser
  (``param="denoiser"``: Karras et al. 2022) around a base density whose diffused posterior mean is
  exact (``bases.MixtureBase``), so a network that outputs zero *is* that base: the whitened
  Gaussian, a Gaussian mixture by BIC or a kernel density estimate, whichever has the best held-out
  log-density (``base="auto"``). The network learns only the departure
  from it, whatever regularises it pulls towards it, and the fitted density is the mixture
  ``(1 - a) p_corr + a p_base``, ``a`` chosen on held-out rows, so no row falls more than ``log a`` below
  the base; K-fold cross-validation of the held-out rows' log-densities decides whether the correction
  is kept at all (otherwise the model is the base alone, refitted on every row);
- columns with ties (integers, rounded readings, codes: at most half of their values distinct) are
  dequantised with uniform noise over their lattice cell, so the density cannot spike on the lattice
  (``dequantized_``; docs/math.md#ties-and-dequantisation);
- the network sees its inputs softly clipped to the range seen in training (``nets.Squashed``), so a
  row far outside the data gets the Gaussian's very low log-density rather than an unbounded
  extrapolation: with the ``"denoiser"`` parameterisation the score there is the whitened Gaussian's
  ``-x / (m^2 + std^2)`` plus a bounded correction, not a probability-flow ODE driven by an unbounded
  linear extrapolation of the network;
- training uses the likelihood weighting ``g^2`` with importance-sampled times (Song et al. 2021b), the
  weighting under which the loss bounds the negative log-likelihood that the estimator reports;
- a held-out split decides how long to train (early stopping on a fixed-noise validation loss, keeping
  the best EMA weights) and the diffusion time ``t_eval_`` at which densities are evaluated (a
  slightly smoothed density generalises; one evaluated at t -> 0 memorises a small training set).

In scikit-learn's vocabulary ``score`` is a mean log-likelihood; the gradient of the log-density is
``grad_log_prob``.

This module is the scikit-learn surface (parameters, ``fit``, ``score_samples``, ``sample``, ``save``);
the recipe's numbers and steps are in ``recipe``, the checks of the input rows and the saved
files in ``io``.
"""

from __future__ import annotations

import copy
import math
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from ..distributions import GaussianMixture
from ..samplers import sample_ode, sample_pc
from ..scalers import Whitener
from ..score import ScoreModel
from ..sde import KINDS
from ..utils import make_generator
from . import recipe
from .bases import MixtureBase
from .io import (
    LoadError,
    Streams,
    read_pair,
    resolve_device,
    root_seed,
    row_keys,
    torch_seed,
    validate_rows,
    write_pair,
)

__all__ = ["IgnoredParameterWarning", "ScoreAnomalyDetector", "ScoreDensityEstimator"]


class IgnoredParameterWarning(UserWarning):
    """A parameter was set that the fitted model does not use (the network's, when its correction is dropped)."""


class ScoreDensityEstimator(BaseEstimator):
    """Density estimation with a score-based diffusion model (Song et al. 2021, probability-flow likelihood).

    Args:
        sde: ``"vp"``, ``"subvp"`` or ``"ve"``.
        steps: the most optimisation steps; ``None`` is a budget of ``MAX_STEPS`` (20,000). Early
            stopping on the held-out split decides the length within it (``n_steps_``,
            ``validation_curve_``); ``fit`` warns when the budget ends a run that was still improving.
        batch_size: ``None`` means ``min(256, n_train)`` (``recipe.BATCH``).
        hidden: MLP width; ``None`` sizes it to the data (``recipe.size``: 64 below 1,000 training
            rows, else 128, or 256 beyond 8 features).
        depth: MLP hidden layers; ``None`` sizes it to the data (2 below 1,000 training rows, else 3).
        lr: AdamW learning rate; ``None`` is the ``recipe.pace``'s (5e-3 below 1,000 training rows,
            else 2e-3).
        weight_decay: AdamW's decoupled weight decay (towards the whitened Gaussian, see above).
        validation_fraction: share of rows held out for early stopping and for ``t_eval_``.
        t_eval: the diffusion time at which densities are evaluated; ``None`` picks it on the
            held-out split from ``EPS_CANDIDATES``.
        weighting: ``"likelihood"`` (``g^2`` with importance sampling of t: the loss bounds the
            negative log-likelihood, so the best held-out log-densities) or ``"std2"`` (denoising
            score matching's weighting: equally accurate scores at every t).
        param: what the network predicts (``ScoreModel``): ``"denoiser"`` (a zero network is the
            base density), ``"eps"`` or ``"score"``.
        base: the density the network corrects (``param="denoiser"`` only): ``"auto"`` picks the best
            held-out log-density among ``"gaussian"`` (the whitened Gaussian), ``"gmm"`` (full
            covariances, components by BIC) and ``"kde"`` (up to ``MAX_KERNELS`` training rows, the
            bandwidth by held-out likelihood); docs/math.md#a-base-density-for-the-denoiser.
        random_state: None, an int or a numpy ``RandomState``: ``fit`` takes ``seed_`` from it (an int
            is the seed itself, None draws one from numpy's global state) and derives every random
            choice (split, dequantisation, initialisation, batches, noise, probes) from it as named
            streams (``io.Streams``); ``fit`` leaves torch's and numpy's global random state alone.
        device: ``None`` picks CUDA when available; a device that does not exist here (``"cuda"``
            without a GPU, an unknown name) raises ``ValueError`` at ``fit``.
        verbose: scikit-learn's convention: 0 is silent; 1 or more shows a progress bar over the
            training steps (the held-out loss in its postfix) and prints a one-line summary at the
            end of ``fit`` (steps trained, best held-out loss, the chosen ``t_eval_``).

    Parameters are checked at ``fit`` (scikit-learn's convention), so a bad value raises there with
    the parameter's name, not in the constructor.

    Attributes (after ``fit``): ``n_features_in_``; ``feature_names_in_`` when ``X`` was a DataFrame
    with string column names (``score_samples`` and ``grad_log_prob`` then check the names);
    ``scaler_`` (the ``Whitener``), ``model_`` (the EMA score model), ``n_steps_``,
    ``validation_loss_`` (the best held-out loss, checked every ``eval_every`` steps of the ``recipe.pace``
    and at the last),
    ``validation_curve_`` (every ``(step, loss)`` checked), ``hidden_`` and ``depth_`` (the MLP's size), ``t_eval_``, ``base_`` (the
    base chosen), ``base_scores_`` (each candidate's held-out mean log-density in whitened units),
    ``base_weight_`` (``a`` of the fitted density ``(1 - a) p_corr + a p_base``: every row's log-density
    is at least ``log a`` plus the base's; 1 is the base alone), ``correction_`` (``base_weight_ < 1``:
    the network's correction is part of the density), ``cv_gain_`` (the cross-validated gain per held-out
    row that decided it, nats), ``mixture_scores_`` (``{(t, a): held-out mean log-density}``, whitened
    units; docs/math.md#a-density-that-cannot-fall-far-below-its-base), ``dequantized_`` (``{column: lattice step}``), and ``sigma_max_``
    for ``sde="ve"``. The recipe's constants named here are ``recipe``'s.
    """

    _parameter_constraints: dict = {
        "sde": [StrOptions(set(KINDS))],
        "steps": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "hidden": [Interval(Integral, 1, None, closed="left"), None],
        "depth": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 0.5, closed="neither")],
        "t_eval": [Interval(Real, 0, 1, closed="neither"), None],
        "weighting": [StrOptions({"likelihood", "std2"})],
        "param": [StrOptions({"denoiser", "eps", "score"})],
        "base": [StrOptions(set(recipe.BASES))],
        "random_state": ["random_state"],
        "device": [str, torch.device, None],
        "verbose": ["verbose"],
    }

    # the fitted attributes ``save`` writes and ``load`` sets (nothing else), each with its check
    _FITTED: dict = {
        "n_features_in_": lambda v: isinstance(v, int) and v >= 1,
        "seed_": lambda v: isinstance(v, int),
        "feature_names_in_": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "t_eval_": lambda v: isinstance(v, float) and 0 < v < 1,
        "n_steps_": lambda v: isinstance(v, int) and v >= 0,
        "validation_loss_": lambda v: isinstance(v, float),
        "sigma_max_": lambda v: isinstance(v, float) and v > 0,
        "hidden_": lambda v: isinstance(v, int) and v >= 1,
        "depth_": lambda v: isinstance(v, int) and v >= 1,
        "base_": lambda v: v in recipe.BASES,
        "base_scores_": lambda v: isinstance(v, dict),
        "correction_": lambda v: isinstance(v, bool),
        "base_weight_": lambda v: isinstance(v, float) and 0 < v <= 1,
        "cv_gain_": lambda v: isinstance(v, float),
    }

    def __init__(
        self,
        sde: str = "vp",
        steps: int | None = None,
        batch_size: int | None = None,
        hidden: int | None = None,
        depth: int | None = None,
        lr: float | None = None,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.15,
        t_eval: float | None = None,
        weighting: str = "likelihood",
        param: str = "denoiser",
        base: str = "auto",
        random_state=None,
        device: str | None = None,
        verbose: int = 0,
    ):
        self.sde = sde
        self.weight_decay = weight_decay
        self.param = param
        self.base = base
        self.weighting = weighting
        self.steps = steps
        self.batch_size = batch_size
        self.hidden = hidden
        self.depth = depth
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.t_eval = t_eval
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, X, y=None) -> ScoreDensityEstimator:
        """Learn the score of ``X`` ([n_samples, n_features]); ``y`` is ignored.

        ``X`` is any 2-D array-like of finite numbers (an array of any strides, a pandas DataFrame: its
        string column names become ``feature_names_in_``) with at least ``io.MIN_FIT_ROWS``
        rows and no constant column (drop those first: a constant has no density). The constructor's
        parameters are checked here and a bad one raises ``ValueError`` naming it, as does a
        ``device`` that does not exist on this machine. With ``verbose`` a progress
        bar and a summary line report the training. The global random state (torch's, numpy's) is
        left as it was.
        """
        self._fit(X)
        return self

    def _fit(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """``fit``'s work; returns the rows as a float32 tensor and the held-out rows (data units)."""
        self._validate_params()
        device = resolve_device(self.device)
        x = validate_rows(self, X, reset=True)
        self.seed_ = root_seed(self.random_state)
        seeds = Streams(self.seed_)
        steps = recipe.lattice_steps(x)
        self.dequantized_ = {int(j): float(q) for j, q in enumerate(steps) if q > 0}
        self.scaler_ = Whitener().fit(x)
        jitter = recipe.dequantiser(self.scaler_, steps)
        z = self.scaler_.transform(x)
        perm = torch.randperm(len(z), generator=seeds.generator("split"))
        n_val = max(2, int(round(self.validation_fraction * len(z))))
        z_val, z_clean = z[perm[:n_val]].to(device), z[perm[n_val:]].to(device)
        z_train = z_clean
        if jitter is not None:  # one fixed dequantisation of the held-out rows and of the base's rows
            fixed = seeds.generator("dequantize")
            z_val = z_val + jitter(len(z_val), fixed).to(device)
            z_train = z_clean + jitter(len(z_clean), fixed).to(device)
        sigma_max = None
        if KINDS[self.sde].explodes:
            self.sigma_max_ = sigma_max = recipe.auto_sigma_max(z_train)
        if self.param != "denoiser" and self.base not in ("auto", "gaussian"):
            raise ValueError(
                f"base={self.base!r} needs param='denoiser' (a base corrects a denoiser), not {self.param!r}"
            )
        which = self.base if self.param == "denoiser" else "gaussian"
        self.base_, base, self.base_scores_ = recipe.choose_base(z_train, z_val, seeds.seed("base"), which)
        width, depth = recipe.size(z_train.shape[1], len(z_train))
        self.hidden_, self.depth_ = self.hidden or width, self.depth or depth
        model = self._build(recipe.squash_bound(z_train), sigma_max, base).to(device)
        trained = recipe.train(
            model,
            z_clean if jitter is not None else z_train,
            z_val,
            self.weighting,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            steps=self.steps,
            seeds=seeds,
            progress=bool(self.verbose),
            jitter=None if jitter is None else (lambda n, g: jitter(n, g).to(device)),
        )
        self.model_ = model.requires_grad_(False).eval()
        self.n_steps_, self.validation_loss_ = trained.n_steps, trained.best
        self.validation_curve_ = trained.curve
        z_all = torch.cat([z_val, z_train])  # every row (dequantised once), in the seeded random order
        x_val = x[perm[:n_val]]
        mixture = recipe.fit_mixture(
            self.model_, self.base_, trained, z_val, row_keys(x_val.numpy()), z_all, seeds, self.t_eval
        )
        self.base_weight_, self.t_eval_ = mixture.weight, mixture.t_eval
        self.correction_ = mixture.weight < 1
        self.cv_gain_, self.mixture_scores_ = mixture.cv_gain, mixture.scores
        if not self.correction_:
            self._warn_ignored_parameters()
        if self.verbose:
            print(
                f"{type(self).__name__}: base {self.base_} ("
                + (
                    f"mixed with the network's correction, base weight {self.base_weight_:g}"
                    if self.correction_
                    else "alone: no correction helped"
                )
                + f"), trained {self.n_steps_} steps, best held-out loss {self.validation_loss_:.4f}, "
                f"t_eval_={self.t_eval_:g}",
                flush=True,
            )
        return x, x_val

    # parameters that shape only the network's correction: without it they do not change the density
    # (``steps`` is left out: it is a budget, which users set to bound the time of a fit)
    _NETWORK_PARAMETERS = ("batch_size", "hidden", "depth", "lr", "weight_decay", "weighting")

    def _warn_ignored_parameters(self) -> None:
        """Warn when the correction was dropped although network parameters were set: a search over them
        (``GridSearchCV``) would otherwise compare identical models without a word."""
        defaults = type(self)().get_params()
        set_ = [
            f"{k}={getattr(self, k)!r}" for k in self._NETWORK_PARAMETERS if getattr(self, k) != defaults[k]
        ]
        if set_:
            warnings.warn(
                f"the network's correction was not kept (the base {self.base_!r} alone is the fitted "
                f"density), so {', '.join(set_)} did not change the result; a search over "
                "them compares identical models here.",
                IgnoredParameterWarning,
                stacklevel=3,
            )

    def _build(
        self, bound: torch.Tensor, sigma_max: float | None, base: MixtureBase | None = None
    ) -> ScoreModel:
        """The untrained network for ``len(bound)`` features (``recipe.build_model``)."""
        sde = recipe.make_sde(self.sde, sigma_max)
        init = Streams(self.seed_).seed("init")
        return recipe.build_model(sde, bound, self.hidden_, self.depth_, self.param, init, base)

    # -- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def _base(self) -> GaussianMixture:
        """The base of the fitted mixture (the whitened Gaussian for a model without one)."""
        base = self.model_.base
        return (
            base.mixture if base is not None else recipe.standard_normal(self.n_features_in_, self._weights())
        )

    def _weights(self) -> torch.Tensor:
        return next(self.model_.parameters())

    def _float64_model(self) -> ScoreModel:
        """A float64 copy of ``model_`` for scoring (made once per fitted model): float32 matrix products
        round differently for different batch sizes, by ~1e-7 relative, which scikit-learn's checks
        see as a row's log-density moving with the rows scored beside it; in float64 it is ~1e-15."""
        cached = getattr(self, "_scoring_model", None)
        if cached is None or cached[0] is not self.model_:
            cached = (self.model_, copy.deepcopy(self.model_).double())
            self._scoring_model = cached
        return cached[1]

    def _log_density(self, x: torch.Tensor) -> np.ndarray:
        """Log-density in data units (nats) of rows already validated: ``[N]``; each row's value depends
        on that row alone (``recipe.log_density``, in float64)."""
        device, a, t = self._device(), self.base_weight_, self.t_eval_
        model = self._float64_model()

        def log_prob_z(z: torch.Tensor) -> torch.Tensor:
            z = z.to(device, torch.float64)
            log_base = recipe.base_log_density(self._base(), model.sde, z, t)
            if not self.correction_:
                return log_base.cpu()
            keys = row_keys(x.numpy())
            log_corr = recipe.log_density(model, z, t, keys, Streams(self.seed_).seed("probes"))
            return torch.logaddexp(math.log1p(-a) + log_corr, math.log(a) + log_base).cpu()

        return self.scaler_.log_prob(log_prob_z, x).numpy()

    def score_samples(self, X) -> np.ndarray:
        """Log-density of each row in data units (nats): ``[n_samples]``.

        ``X`` is validated as in ``fit`` (any strides, a DataFrame); after a fit on a DataFrame, a
        DataFrame whose column names differ from ``feature_names_in_`` raises ``ValueError`` naming
        the unexpected and the missing names. Raises ``NotFittedError`` before ``fit``.
        """
        check_is_fitted(self, "model_")
        return self._log_density(validate_rows(self, X, reset=False, dtype=torch.float64))

    def score(self, X, y=None) -> float:
        """Mean log-density of ``X`` in nats (scikit-learn's ``score``)."""
        return float(np.mean(self.score_samples(X)))

    def grad_log_prob(self, X) -> np.ndarray:
        """``grad_x log p(x)`` in data units: ``[n_samples, n_features]``; ``X`` is checked as in ``score_samples``."""
        check_is_fitted(self, "model_")
        x = validate_rows(self, X, reset=False)
        device, a, t = self._device(), self.base_weight_, self.t_eval_
        sde, base = self.model_.sde, self._base()

        def score_z(z: torch.Tensor) -> torch.Tensor:
            z = z.to(device)
            scale, std = sde.marginal(torch.full((len(z),), float(t), dtype=z.dtype, device=device))
            with torch.no_grad():
                score_base = base.score(z, scale, std)
                if not self.correction_:
                    return score_base.cpu()
                score_corr = self.model_(z, t)
                log_base = base.log_prob(z, scale, std)
            log_corr = recipe.log_density(
                self.model_, z, t, row_keys(x.numpy()), Streams(self.seed_).seed("probes")
            )
            # the mixture's score: each component's score weighted by its posterior share of the row
            share = torch.sigmoid(math.log1p(-a) + log_corr - math.log(a) - log_base)[:, None]
            return (share * score_corr + (1 - share) * score_base).cpu()

        return self.scaler_.score(score_z, x).double().numpy()

    def sample(self, n: int, method: str = "ode", random_state=None) -> np.ndarray:
        """``n`` new rows in data units by the probability-flow ODE (``"ode"``) or predictor-corrector (``"pc"``).

        Randomness follows ``KernelDensity.sample``: ``random_state=None`` draws fresh rows on every
        call (from numpy's global random state), an int reproduces them, and a numpy ``RandomState``
        or ``Generator`` is drawn from (a torch seed is taken from it). ``n`` must be a positive int and ``method`` one of ``"ode"``, ``"pc"`` (else ``ValueError``).
        """
        validate_parameter_constraints(
            {
                "n": [Interval(Integral, 1, None, closed="left")],
                "method": [StrOptions({"ode", "pc"})],
                "random_state": ["random_state", np.random.Generator],
            },
            {"n": n, "method": method, "random_state": random_state},
            caller_name=f"{type(self).__name__}.sample",
        )
        check_is_fitted(self, "model_")
        n, device, t = int(n), self._device(), self.t_eval_
        g = make_generator(torch_seed(random_state), device)
        sde, d = self.model_.sde, self.n_features_in_
        scale, std = sde.marginal(torch.full((n,), float(t), device=device))
        z = self._base().sample(n, g, scale, std)  # the base's share of the mixture, exactly
        if self.correction_:  # each row comes from the corrected model with probability 1 - a
            corr = torch.rand(n, generator=g, device=device) >= self.base_weight_
            x_T = sde.prior_sample((int(corr.sum()), d), generator=g).to(device)
            if method == "ode":
                z_corr, _ = sample_ode(self.model_, sde, x_T, t_end=t)
            else:
                z_corr, _ = sample_pc(self.model_, sde, x_T, 500, t_end=max(t, 1e-3), generator=g)
            z[corr] = z_corr.to(z.dtype)
        return self.scaler_.inverse_transform(z.cpu()).double().numpy()

    # -- persistence ------------------------------------------------------------------------------
    def _fitted_state(self) -> dict:
        names = getattr(self, "feature_names_in_", None)
        return {
            "n_features_in_": self.n_features_in_,
            "seed_": self.seed_,
            "feature_names_in_": None if names is None else [str(name) for name in names],
            "t_eval_": self.t_eval_,
            "n_steps_": self.n_steps_,
            "validation_loss_": self.validation_loss_,
            "sigma_max_": getattr(self, "sigma_max_", None),
            "hidden_": self.hidden_,
            "depth_": self.depth_,
            "base_": self.base_,
            "base_scores_": self.base_scores_,
            "correction_": self.correction_,
            "base_weight_": self.base_weight_,
            "cv_gain_": self.cv_gain_,
        }

    def save(self, path: str | Path) -> None:
        """Write ``path`` (safetensors: weights, scaler) and ``path + '.json'`` (parameters, fitted state).

        Missing parent folders are created. Both files are first written beside their targets under
        temporary names and then renamed over them, so an interrupted save leaves any earlier pair
        whole and no partial file under the final names (``io.write_pair``).
        """
        check_is_fitted(self, "model_")
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        tensors.update({f"scaler.{k}": v.contiguous() for k, v in self.scaler_.state_dict().items()})
        meta = {"class": type(self).__name__, "params": self.get_params(), "state": self._fitted_state()}
        write_pair(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None):
        """Rebuild an estimator written by ``save`` (no pickle involved), ``feature_names_in_`` included.

        ``device`` overrides the saved one (``None`` keeps it). Raises ``FileNotFoundError`` when
        ``path`` or its JSON side file is missing, and ``ValueError`` naming the path for every other
        reason it cannot load (``io.read_pair``; the other estimator class; parameters or fitted state
        that are not this class's: only the fitted attributes ``save`` writes are set, so a file cannot
        replace a method; weights that do not fit them) or when the device does not exist here.
        """
        meta, tensors = read_pair(path, cls.__name__)
        try:
            est = cls._from_saved(meta, tensors)
        except Exception as err:
            reason = f"its contents do not make a {cls.__name__} ({type(err).__name__}: {err})"
            raise LoadError(Path(path), reason) from None
        est.model_ = est.model_.to(resolve_device(device if device is not None else est.device))
        return est

    @classmethod
    def _from_saved(cls, meta: dict, tensors: dict[str, torch.Tensor]):
        """``load``'s work on a pair already read; any error means the files are not this class's."""
        params, state = meta.get("params"), meta.get("state")
        if not isinstance(params, dict) or set(params) != set(cls().get_params()):
            raise ValueError("its parameters are not this class's")
        est = cls(**params)
        est._validate_params()
        if not isinstance(state, dict) or set(state) != set(cls._FITTED):
            raise ValueError(f"its fitted state must hold exactly {', '.join(cls._FITTED)}")
        for key, check in cls._FITTED.items():
            if state[key] is not None:
                if not check(state[key]):
                    raise ValueError(f"its fitted {key}={state[key]!r} is out of range")
                setattr(est, key, state[key])
        if getattr(est, "feature_names_in_", None) is not None:
            est.feature_names_in_ = np.asarray(est.feature_names_in_, dtype=object)
        est.scaler_ = Whitener.from_state_dict(
            {k.removeprefix("scaler."): v for k, v in tensors.items() if k.startswith("scaler.")}
        )
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        base_state = {k.removeprefix("base."): v for k, v in weights.items() if k.startswith("base.")}
        base = MixtureBase.empty_like(base_state) if base_state else None
        est.hidden_ = int(weights["net.net.output.weight"].shape[1])  # the width the weights were fitted with
        model = est._build(weights["net.bound"], state.get("sigma_max_"), base)
        model.load_state_dict(weights)
        est.model_ = model.eval()
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

    # scikit-learn reads an estimator's parameters from its constructor's signature (``get_params``,
    # ``clone``), which ``**kwargs`` would hide: the density estimator's list is repeated here
    def __init__(
        self,
        contamination: float | str = 0.1,
        sde: str = "vp",
        steps: int | None = None,
        batch_size: int | None = None,
        hidden: int | None = None,
        depth: int | None = None,
        lr: float | None = None,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.15,
        t_eval: float | None = None,
        weighting: str = "likelihood",
        param: str = "denoiser",
        base: str = "auto",
        random_state=None,
        device: str | None = None,
        verbose: int = 0,
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
            t_eval=t_eval,
            weighting=weighting,
            param=param,
            base=base,
            random_state=random_state,
            device=device,
            verbose=verbose,
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
            rows = torch.randperm(len(x), generator=Streams(self.seed_).generator("offset"))[:2000]
            self.offset_ = float(np.quantile(self._log_density(x[rows]), self.contamination))
        return self

    _FITTED: dict = {**ScoreDensityEstimator._FITTED, "offset_": lambda v: isinstance(v, float)}

    def _fitted_state(self) -> dict:
        return {**super()._fitted_state(), "offset_": self.offset_}

    def decision_function(self, X) -> np.ndarray:
        """Positive for inliers, negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)
