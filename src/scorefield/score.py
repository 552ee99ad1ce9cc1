"""The one place the score parameterisation lives: energies, noise-conditional and SDE score models, and
classifier-free guidance (``guided``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .sde import HasMarginal
from .utils import append_dims


def per_example(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A python number or a tensor broadcast to one value per example of ``x``: ``[B]``."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape[0])


def batch_marginal(
    sde: HasMarginal, t: float | torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sde.marginal(t)`` as one ``(scale, std)`` pair per example of ``x``: ``[B]``, ``[B]``."""
    scale, std = sde.marginal(per_example(t, x))
    return per_example(scale, x), per_example(std, x)


def posterior_mean(
    x: torch.Tensor, score: torch.Tensor, scale: float | torch.Tensor, std: float | torch.Tensor
) -> torch.Tensor:
    """Tweedie's formula (Efron 2011; docs/math.md#denoisers-and-tweedies-formula), the one copy of it:
    ``E[x_0 | x_t] = (x_t + std² s(x_t)) / m`` for ``x_t = m x_0 + std z``, with ``scale = m`` and ``std``
    numbers or one value per example ``[B]``. With ``m = 1`` it is the denoiser ``x̃ + σ² s``."""
    scale, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (scale, std))
    if scale.ndim:
        scale = append_dims(scale, x.ndim)
    if std.ndim:
        std = append_dims(std, x.ndim)
    return (x + std**2 * score) / scale


class EnergyScore(nn.Module):
    """Score of an energy model ``p(x) ∝ exp(-E(x))``: ``s(x) = -∇_x E(x)`` (Hyvärinen 2005; the score-functions tutorial).

    ``energy_net(x, *cond)`` returns one energy per example (``[B]`` or ``[B, 1]``). The normalising
    constant never appears. When gradients are enabled the score keeps its graph
    (``create_graph=True``), so score-matching losses can differentiate it again and train ``E``; under
    ``torch.no_grad()`` (sampling) the gradient is taken locally on a detached copy of ``x``.
    """

    def __init__(self, energy_net: nn.Module):
        super().__init__()
        self.energy_net = energy_net

    def energy(self, x: torch.Tensor, *cond) -> torch.Tensor:
        energy = self.energy_net(x, *cond)
        if energy.numel() != x.shape[0]:
            raise ValueError(f"energy_net must return one value per example, got shape {tuple(energy.shape)}")
        return energy.reshape(x.shape[0])  # (B,)

    def log_prob_unnormalized(self, x: torch.Tensor, *cond) -> torch.Tensor:
        """``log p(x) + log Z = -E(x)``, ``[B]``."""
        return -self.energy(x, *cond)

    def score(self, x: torch.Tensor, *cond) -> torch.Tensor:
        """``-∇_x E(x)``, shaped like ``x``."""
        if torch.is_grad_enabled():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x_in, *cond).sum(), x_in, create_graph=True)
            return -grad
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x_in, *cond).sum(), x_in)
        return -grad

    def forward(self, x: torch.Tensor, *cond) -> torch.Tensor:
        return self.score(x, *cond)


class NoiseConditionalScore(nn.Module):
    """NCSN score model ``s(x, σ) = F(x, log σ) / σ`` (Song & Ermon 2020, "Improved techniques", technique 3).

    Dividing by ``σ`` gives the output the scale of the true score ``~ z/σ`` at every level, so the
    network ``F`` only learns an order-one field. ``sigma`` is a python number or ``[B]``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        sigma = per_example(sigma, x)  # (B,)
        return self.net(x, sigma.log()) / append_dims(sigma, x.ndim)


PARAMS = ("eps", "score", "denoiser")


class ScoreModel(nn.Module):
    """Score of an SDE marginal ``p_t`` from a network ``F`` (Song et al. 2021; Karras et al. 2022, Table 1).

    Only ``sde.marginal(t) -> (m, std)`` is used, for ``x_t = m x_0 + std z``. The data are assumed
    standardised, so the network input is ``c_in x`` with ``c_in = 1/sqrt(m^2 + std^2)`` (unit
    variance at every t) and the noise code is ``c_noise = log std``. ``param`` says what ``F`` predicts:

    - ``"eps"``: the noise, ``F ≈ z``; ``s = -F / std``.
    - ``"score"``: the std-scaled score, ``F ≈ std ∇log p_t``; ``s = F / std``.
    - ``"denoiser"``: EDM's preconditioning (Karras et al. 2022, Table 1, sigma_data = 1) applied to
      ``x/m``, whose noise level is ``std/m``:
      ``D = m x / (m^2 + std^2) + std / sqrt(m^2 + std^2) · F ≈ E[x_0 | x_t]``, and Tweedie's formula
      with scale gives ``s = (m D - x) / std^2`` (for m = 1, ``(D - x)/σ^2``; docs/math.md#score-parameterisations).
      With a ``base`` (``estimators.bases.MixtureBase``) the skip term ``m x / (m^2 + std^2)``, which is the
      posterior mean under ``N(0, I)``, becomes the base mixture's exact posterior mean, so a network
      that outputs zero is that mixture at every t (docs/math.md#a-base-density-for-the-denoiser).

    ``t`` is a python number or ``[B]``; ``x`` is ``[B, d]`` or ``[B, C, H, W]``. A network with class
    labels (``num_classes > 0``) takes them as ``y[B]`` (``score(x, t, y)``, passed on as ``F(c_in x,
    c_noise, y)``); ``y=None`` is not passed on, so such a network sees its null label and gives the
    unconditional score, and a network without labels is called exactly as before.
    """

    def __init__(self, net: nn.Module, sde: HasMarginal, param: str = "eps", base: nn.Module | None = None):
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"unknown param {param!r}; choose one of {', '.join(PARAMS)}")
        if base is not None and param != "denoiser":
            raise ValueError(f"a base density applies to param='denoiser' only, not {param!r}")
        self.net, self.sde, self.param, self.base = net, sde, param, base

    def affine(
        self, x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The score as an affine function of the network's output: ``s = offset + gain F(inputs, c_noise)``.

        Returns ``(inputs, c_noise, offset, gain)`` (``scale``, ``std``: ``[B]``): ``inputs = c_in x``,
        ``c_noise = log std``, ``offset`` shaped like ``x`` (``None`` for ``"eps"`` and ``"score"``,
        where it is zero) and ``gain`` ``[B, 1, ...]``. Nothing of it depends on the network's weights,
        so a trainer may compute it once for many steps' rows; for ``"denoiser"`` it holds the skip
        term, the base density's exact posterior mean.
        """
        return self._affine(x, scale, std)[:4]

    def _affine(self, x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor) -> tuple:
        """``affine``'s four terms, then (``"denoiser"`` only, else ``None``) ``skip`` and ``c_out``
        of ``D = skip + c_out F``."""
        m, sd = append_dims(scale, x.ndim), append_dims(std, x.ndim)
        norm2 = m**2 + sd**2  # variance of x_t for standardised data; c_in = norm2^(-1/2)
        inputs, c_noise = x * norm2.rsqrt(), std.log()
        if self.param == "eps":
            return inputs, c_noise, None, -1 / sd, None, None
        if self.param == "score":
            return inputs, c_noise, None, 1 / sd, None, None
        # c_skip x/m, the posterior mean under N(0, I), or the base density's exact posterior mean;
        # s = (m D - x) / std^2 with D = skip + c_out F
        skip = m * x / norm2 if self.base is None else self.base.denoise(x, scale, std)
        c_out = sd * norm2.rsqrt()
        return inputs, c_noise, (m * skip - x) / sd**2, m * c_out / sd**2, skip, c_out

    def _score_and_denoised(
        self, x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor, y: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The score and, for param="denoiser", D; ``scale``, ``std`` are ``[B]``."""
        inputs, c_noise, offset, gain, skip, c_out = self._affine(x, scale, std)
        label = () if y is None else (y,)
        out = self.net(inputs, c_noise, *label)  # F(c_in x, c_noise[, y])
        if offset is None:
            return gain * out, None
        return offset + gain * out, skip + c_out * out

    def score(
        self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """``∇_x log p_t(x)`` (with labels: ``∇_x log p_t(x | y)``), shaped like ``x``."""
        return self._score_and_denoised(x, *batch_marginal(self.sde, t, x), y)[0]

    def denoise(
        self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Tweedie's posterior mean ``E[x_0 | x_t] = (x + std^2 s(x, t)) / m`` (Efron 2011)."""
        scale, std = batch_marginal(self.sde, t, x)
        score, denoised = self._score_and_denoised(x, scale, std, y)
        return denoised if denoised is not None else posterior_mean(x, score, scale, std)

    def forward(
        self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        return self.score(x, t, y)


def guided(
    score_fn: Callable[..., torch.Tensor], y: torch.Tensor | int, w: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance (Ho & Salimans 2022; docs/math.md#classifier-free-guidance): the score
    function ``(x, t) -> (1 + w) s(x, t, y) - w s(x, t, ∅)`` that every sampler takes.

    ``score_fn(x, t, y)`` is a model trained with label dropout (``ScoreModel`` of a network with
    ``num_classes > 0``, ``DiffusionModel.score_t``): with labels it is the conditional score ``∇log p_t(x | y)``,
    with ``y=None`` (the null label ``∅``) the unconditional ``∇log p_t(x)``. ``y`` is one class index
    for every example or a LongTensor ``[B]``; ``w`` (usually ``>= 0``) is the guidance weight:
    ``w = 0`` is the conditional score (one network evaluation, returned as it is), ``w > 0`` sharpens
    ``p_t(x | y)`` towards ``p_t(x | y) p_t(y | x)^w``. Cost: each call is one score evaluation as the samplers count it
    (``info["nfe"]``), but it evaluates the network twice when ``w != 0`` (the conditional and the
    unconditional score, two calls of ``score_fn``), so its network evaluations are ``2 * info["nfe"]``.
    """
    if not math.isfinite(w):
        raise ValueError(f"the guidance weight w must be a finite number, got {w}")
    if y is None:
        raise ValueError("guidance needs a label y; without one, sample with score_fn(x, t, None) itself")
    label = torch.as_tensor(y)
    if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool or label.ndim > 1:
        raise ValueError(
            f"y must be a class index or integers [B], got {label.dtype} of shape {tuple(label.shape)}"
        )

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if label.ndim and label.shape[0] != x.shape[0]:
            raise ValueError(f"y holds {label.shape[0]} labels for a batch of {x.shape[0]} examples")
        labels = label.to(device=x.device, dtype=torch.long).expand(x.shape[0])
        conditional = score_fn(x, t, labels)
        if w == 0:
            return conditional
        return (1 + w) * conditional - w * score_fn(x, t, None)

    return score
