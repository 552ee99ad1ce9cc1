"""The 2-D toy samplers ``(n, generator=None) -> [n, 2]`` (float32) and their registry ``TOY``.

The tutorials' two-Gaussian mixture plus the usual benchmarks of the field (FFJORD's eight Gaussians,
checkerboard, pinwheel, swiss roll; moons; concentric rings). Every draw comes from ``generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..distributions import Banana
from ..distributions import two_gaussians as _two_gaussians_mixture

__all__ = [
    "TOY",
    "checkerboard",
    "banana",
    "eight_gaussians",
    "moons",
    "pinwheel",
    "rings",
    "swiss_roll",
    "two_gaussians",
]


def _uniform(n: int, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return int(n)


def two_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The tutorials' mixture ``0.8 N(-(5, 5), I) + 0.2 N((5, 5), I)`` (``distributions.two_gaussians``)."""
    return _two_gaussians_mixture().sample(_check_n(n), generator=generator)


def eight_gaussians(
    n: int, generator: torch.Generator | None = None, radius: float = 2.0, std: float = 0.1
) -> torch.Tensor:
    """Eight equal Gaussians at angles ``k pi / 4`` on a circle of ``radius`` (Grathwohl et al. 2019)."""
    n = _check_n(n)
    k = torch.randint(8, (n,), generator=generator)
    angle = k * (math.pi / 4)
    centers = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centers + std * _normal((n, 2), generator)


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons``), centred near the origin."""
    n = _check_n(n)
    angle = _uniform(n, generator, 0.0, math.pi)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    points = torch.stack([x - 0.5, y - 0.25], dim=1)
    return points + noise * _normal((n, 2), generator)


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.2) -> torch.Tensor:
    """The 2-D swiss roll ``(t cos t, t sin t) / 5``, ``t ~ U(1.5 pi, 4.5 pi)`` (sklearn make_swiss_roll)."""
    n = _check_n(n)
    t = _uniform(n, generator, 1.5 * math.pi, 4.5 * math.pi)
    points = torch.stack([t * t.cos(), t * t.sin()], dim=1)
    return (points + noise * _normal((n, 2), generator)) / 5


def rings(
    n: int,
    generator: torch.Generator | None = None,
    radii: tuple[float, ...] = (1.0, 2.0, 3.0),
    noise: float = 0.08,
) -> torch.Tensor:
    """Concentric circles of ``radii``, each holding points in proportion to its length."""
    n = _check_n(n)
    radii_t = torch.tensor(radii, dtype=torch.float32)
    ring = torch.multinomial(radii_t / radii_t.sum(), n, replacement=True, generator=generator)
    angle = _uniform(n, generator, 0.0, 2 * math.pi)
    points = radii_t[ring, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return points + noise * _normal((n, 2), generator)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the eight black squares of a 4x4 checkerboard covering ``[-2, 2]^2`` (FFJORD)."""
    n = _check_n(n)
    x = _uniform(n, generator, -2.0, 2.0)
    y = _uniform(n, generator, 0.0, 1.0) - 2 * torch.randint(2, (n,), generator=generator)
    y = y + torch.floor(x) % 2  # shift to the square of the other colour in odd columns
    return torch.stack([x, y], dim=1)


def pinwheel(
    n: int,
    generator: torch.Generator | None = None,
    n_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> torch.Tensor:
    """Gaussian blobs bent into ``n_arms`` spiral arms (Johnson et al. 2016; FFJORD's pinwheel)."""
    n = _check_n(n)
    arm = torch.randint(n_arms, (n,), generator=generator)
    feature = _normal((n, 2), generator) * torch.tensor([radial_std, tangential_std])
    feature[:, 0] += 1.0
    angle = arm * (2 * math.pi / n_arms) + rate * torch.exp(feature[:, 0])
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    return 2 * (rotation @ feature[:, :, None]).squeeze(-1)


def banana(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A bent Gaussian with an exact density (``distributions.Banana``'s defaults)."""
    return Banana().sample(_check_n(n), generator=generator)


TOY: dict[str, Callable[..., torch.Tensor]] = {
    "two_gaussians": two_gaussians,
    "eight_gaussians": eight_gaussians,
    "banana": banana,
    "moons": moons,
    "swiss_roll": swiss_roll,
    "rings": rings,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
}
