"""Forward SDEs ``dx = f(x, t) dt + g(t) dW`` on ``t ∈ [0, 1]`` (Song et al. 2021) and their marginals.

Every SDE here has a linear drift ``f(x, t) = f(t) x``, so its perturbation kernel is Gaussian:
``x_t = m(t) x_0 + std(t) z`` (``marginal(t) -> (scale, std)``). The base class ``SDE`` holds
everything generic (drift, reverse drift, prior); a subclass only states its schedule:
``m(t)``, ``std(t)``, ``f(t) = d log m / dt``, ``g(t)`` and the inverse map ``std -> t``.
They are tied by ``g² = d std²/dt - 2 f std²``, which the tests check for each schedule.

No step count lives in an SDE: discretisations are the samplers' arguments.
Time ``t`` is a tensor ``[B]`` or a python number; a number gives 0-d float64 tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from .distributions import gaussian_log_density
from .keyed import KeyedNoise
from .utils import Generator, append_dims, batch_sum

__all__ = ["KINDS", "SDE", "HasMarginal", "ScoreFn", "VESDE", "VPSDE", "SubVPSDE"]

# ``score_fn(x [B, ...], t [B]) -> grad_x log p_t(x) [B, ...]``: what samplers and likelihoods consume
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class HasMarginal(Protocol):
    """Anything with the perturbation kernel ``x_t = m(t) x_0 + std(t) z``: ``marginal(t) -> (m, std)``."""

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def _as_time(t: float | torch.Tensor) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    return torch.tensor(float(t), dtype=torch.float64)


class SDE(ABC):
    """A linear forward SDE: the generic part (Song et al. 2021, eqs. 5-6 and 13).

    A subclass defines ``_scale_and_std``, ``_drift_coeff``, ``_diffusion``, ``_t_from_std`` and
    ``prior_std``; the public methods below accept ``[B]`` times or python numbers.
    """

    explodes: ClassVar[bool] = False  # variance exploding: needs a sigma_max chosen for the data

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior ``N(0, prior_std² I)`` that stands in for ``p_1``."""

    @abstractmethod
    def _scale_and_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def _drift_coeff(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _diffusion(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _t_from_std(self, std: torch.Tensor) -> torch.Tensor: ...

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbation kernel ``x_t = m(t) x_0 + std(t) z`` (Song et al. 2021, eq. 29): ``(m(t), std(t))``."""
        return self._scale_and_std(_as_time(t))

    def drift(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Forward drift ``f(x, t) = f(t) x``, shaped like ``x``."""
        return append_dims(self._drift_coeff(_as_time(t)), x.ndim) * x

    def diffusion(self, t: float | torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient ``g(t)``, shaped like ``t``."""
        return self._diffusion(_as_time(t))

    def t_from_std(self, std: float | torch.Tensor) -> torch.Tensor:
        """The time ``t`` at which the marginal standard deviation is ``std`` (inverse of ``marginal``)."""
        return self._t_from_std(_as_time(std))

    def reverse_drift(
        self, x: torch.Tensor, t: float | torch.Tensor, score: torch.Tensor, probability_flow: bool = False
    ) -> torch.Tensor:
        """Reverse-SDE drift ``f - g² s`` (Anderson 1982; Song et al. 2021, eq. 6), or with
        ``probability_flow=True`` the probability-flow ODE's ``f - ½ g² s`` (eq. 13).

        ``score`` is ``∇_x log p_t(x)``, shaped like ``x``; time runs backwards, from 1 to 0.
        """
        weight = 0.5 if probability_flow else 1.0
        g2 = append_dims(self.diffusion(t) ** 2, x.ndim)
        return self.drift(x, t) - weight * g2 * score

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Samples of the prior ``N(0, prior_std² I)``, of the given shape ``[B, ...]``."""
        if isinstance(generator, KeyedNoise):  # one row per sample, keyed by its index
            z = generator.randn(shape, dtype).to(device or generator.device)
        else:
            z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, prior_std² I)`` summed over each example's dimensions: ``[B, ...] -> [B]``."""
        d, var = z[0].numel(), self.prior_std**2
        return gaussian_log_density(batch_sum(z**2) / var, d * math.log(var), d)


def _check_range(owner: str, **bounds: float) -> None:
    """Refuse a schedule whose two bounds (lower, then upper) are not finite with ``0 < lower < upper``."""
    (lo_name, lo), (hi_name, hi) = bounds.items()
    for name, value in bounds.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if not 0 < lo < hi:
        raise ValueError(f"{owner} needs 0 < {lo_name} < {hi_name}, got {lo_name}={lo}, {hi_name}={hi}")


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE (SMLD/NCSN in continuous time; Song et al. 2021, eq. 30).

    ``std(t) = sigma_min (sigma_max/sigma_min)^t``, ``f = 0``,
    ``g(t) = std(t) sqrt(2 log(sigma_max/sigma_min))``, ``m = 1``, prior ``N(0, sigma_max² I)``.
    As in Song et al., ``std(0) = sigma_min``: the distribution at ``t = 0`` is the data smoothed by
    ``N(0, sigma_min² I)`` (the forward SDE adds variance ``std(t)² - sigma_min²`` to it), so VE
    likelihoods refer to that slightly smoothed density.

    Examples:
        The noise grows geometrically from ``sigma_min`` to ``sigma_max``; the data are never scaled:

        >>> sde = VESDE(sigma_min=0.1, sigma_max=10.0)
        >>> scale, std = sde.marginal(torch.tensor([0.0, 0.5, 1.0]))
        >>> scale, std
        (tensor([1., 1., 1.]), tensor([ 0.1000,  1.0000, 10.0000]))
    """

    explodes: ClassVar[bool] = True  # its noise grows to sigma_max, which the data decide ("auto")

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self) -> None:
        _check_range("VESDE", sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    @property
    def prior_std(self) -> float:
        return float(self.sigma_max)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def _scale_and_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(t), self.sigma_min * torch.exp(t * self._log_ratio)

    def _drift_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self._scale_and_std(t)[1] * math.sqrt(2 * self._log_ratio)

    def _t_from_std(self, std: torch.Tensor) -> torch.Tensor:
        return torch.log(std / self.sigma_min) / self._log_ratio


@dataclass(frozen=True)
class _LinearBeta(SDE):
    """The schedule shared by VP and sub-VP: ``β(t) = β_min + t (β_max - β_min)``,
    ``B(t) = ∫_0^t β = β_min t + ½ t² (β_max - β_min)``, ``f(t) = -½ β(t)``, ``m(t) = exp(-½ B(t))``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        _check_range(type(self).__name__, beta_min=self.beta_min, beta_max=self.beta_max)

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def t_from_beta_integral(self, b: torch.Tensor) -> torch.Tensor:
        """Root of ``½ Δ t² + β_min t - B = 0`` in the cancellation-free form ``2B / (β_min + sqrt(β_min² + 2ΔB))``."""
        delta = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * delta * b))

    def _drift_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def _one_minus_scale2(self, t: torch.Tensor) -> torch.Tensor:
        """``1 - m(t)² = 1 - exp(-B(t))``, accurate for small ``t``."""
        return -torch.expm1(-self.beta_integral(t))


@dataclass(frozen=True)
class VPSDE(_LinearBeta):
    """Variance-preserving SDE (DDPM in continuous time; Song et al. 2021, eq. 32).

    ``f = -½ β(t) x``, ``g = sqrt(β(t))``, ``m(t) = exp(-½ B(t))``, ``std(t)² = 1 - m(t)²``; prior ``N(0, I)``.

    Examples:
        The data shrink by ``m(t)`` while noise of standard deviation ``std(t)`` is added, so that
        ``m² + std² = 1``: a standard normal stays one at every time.

        >>> sde = VPSDE()
        >>> scale, std = sde.marginal(torch.tensor([0.0, 0.5, 1.0]))
        >>> scale, std
        (tensor([1.0000, 0.2812, 0.0066]), tensor([0.0000, 0.9597, 1.0000]))
        >>> torch.allclose(scale**2 + std**2, torch.ones(3))
        True
    """

    def _scale_and_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(-0.5 * self.beta_integral(t)), torch.sqrt(self._one_minus_scale2(t))

    def _diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.beta(t))

    def _t_from_std(self, std: torch.Tensor) -> torch.Tensor:
        return self.t_from_beta_integral(-torch.log1p(-(std**2)))


@dataclass(frozen=True)
class SubVPSDE(_LinearBeta):
    """Sub-VP SDE (Song et al. 2021, eq. 34): the VP drift with ``g² = β(t)(1 - exp(-2 B(t)))``.

    ``m(t) = exp(-½ B(t))``, ``std(t) = 1 - m(t)²`` (not squared: always below the VP std); prior ``N(0, I)``.
    """

    def _scale_and_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(-0.5 * self.beta_integral(t)), self._one_minus_scale2(t)

    def _diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.beta_integral(t)))

    def _t_from_std(self, std: torch.Tensor) -> torch.Tensor:
        return self.t_from_beta_integral(-torch.log1p(-std))


# the continuous-time SDEs by the names configs and estimators use for them: the one registry of kinds
KINDS: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}
