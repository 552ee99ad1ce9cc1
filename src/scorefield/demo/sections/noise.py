"""4. Adding noise, in one dimension along the line through the modes: data points smoothed into a
mixture, the density smoothed at several levels, and the denoising target ``-z/σ`` against the score
of ``p_σ``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import viz
from ...distributions import GaussianMixture
from ..document import Page
from ..experiments import line_mixture
from ..settings import Budget, Streams
from .common import DIAGONAL, Section, doc, m

__all__ = ["ANCHOR", "OPENING", "TITLE", "NoiseNumbers", "compute", "write"]

ANCHOR, TITLE = "noise", "Adding noise"
OPENING = (
    "By adding noise to our data, we are essentially smoothing the data distribution with a gaussian "
    "kernel. [...] The ground truth score estimates are usually −z/σ.",
    "Score Functions, Adding Noise",
)


@dataclass(frozen=True)
class NoiseNumbers:
    """The means of the mixture on the line through its modes, the width of the kernel on each data
    point, the levels the density is smoothed at, and the noise of the denoising-target figure."""

    line_means: list[float]
    kernel_sigma: float
    smoothing_sigmas: list[float]
    dsm_sigma: float


def compute(mixture: GaussianMixture, streams: Streams) -> Section[NoiseNumbers]:
    """4. Adding noise, in one dimension along the line through the modes (the mixture there is
    ``0.8 N(-5√2, 1) + 0.2 N(5√2, 1)``): data points smoothed into a mixture, the density smoothed
    at several levels, and the denoising target ``-z/σ`` against the score of ``p_σ``."""
    line = line_mixture(mixture.to(torch.float64), DIAGONAL, standardize=False)
    points = line.sample(8, generator=streams.generator(45))
    sigmas = (1.0, 3.0, 7.0)
    clean = mixture.sample(3, generator=streams.generator(46))
    dsm_sigma = 2.0
    figures = {
        "smoothing": viz.plot_smoothing_1d(points, 1.5, line, sigmas),
        "dsm_target": viz.plot_dsm_target(
            clean, line, dsm_sigma, n_copies=6, generator=streams.generator(47)
        ),
    }
    numbers = NoiseNumbers(
        line_means=line.means[:, 0].tolist(),
        kernel_sigma=1.5,
        smoothing_sigmas=list(sigmas),
        dsm_sigma=dsm_sigma,
    )
    return Section(numbers, figures)


def write(page: Page, nz: NoiseNumbers, budget: Budget) -> None:
    page.para(
        "Adding independent noise to a random variable convolves its density with the noise's: the data "
        "smoothed by "
        + m(r"\mathcal{N}(0, \sigma^2 I)")
        + " has the density "
        + m(r"p_\sigma")
        + " ("
        + doc("smoothing-and-diffusion")
        + "). An empirical data set is a sum of "
        "impulses, so smoothing it gives a mixture of Gaussians, one on each point (the Parzen density):"
    )
    page.equation(
        r"p_\sigma(x) = \int p(y)\, \mathcal{N}(x; y, \sigma^2 I)\, dy = (p * \mathcal{N}(0, \sigma^2 I))(x), "
        r"\qquad q_\sigma(x) = \frac{1}{N} \sum_{i=1}^{N} \mathcal{N}(x; x_i, \sigma^2 I)",
        "The score-functions tutorial writes the kernel once with σ<sub>i</sub> I for its covariance; it is σ<sub>i</sub>² I.",
    )
    page.figure(
        "smoothing",
        "Smoothing as a convolution, in one dimension: the tutorials' mixture seen along the line through its "
        f"modes, 0.8 N({nz.line_means[0]:.3g}, 1) + 0.2 N({nz.line_means[1]:.3g}, 1). Left: eight data "
        f"points (impulses), a kernel of σ = {nz.kernel_sigma:g} on each (blue) and their sum (red), a "
        f"mixture of Gaussians. Right: the density smoothed at σ = {', '.join(f'{s:g}' for s in nz.smoothing_sigmas)}: "
        "the bumps widen, the valley between them fills, and far from both the density is no longer "
        "negligible. That is what noise does for the scores: a smoothed density has mass, hence training "
        "data, where the clean one has none.",
        "kernels summing to a mixture, and a density smoothed at three noise levels",
    )
    page.para(
        "Sampling " + m(r"p_\sigma") + " is easy (add noise to a data point), and the score of the noise's "
        "own density is known exactly: it points from the noisy point back to its clean one. That is the "
        "target of denoising score matching, and its average over all the clean points a noisy point could "
        "have come from is the score of " + m(r"p_\sigma") + " (" + doc("denoising-score-matching") + "):"
    )
    page.equation(
        r"\tilde x = x + \sigma z: \quad \nabla_{\tilde x} \log \mathcal{N}(\tilde x; x, \sigma^2 I) = "
        r"-\frac{\tilde x - x}{\sigma^2} = -\frac{z}{\sigma}, \qquad "
        r"\mathbb{E}\Big[-\frac{z}{\sigma} \,\Big|\, \tilde x\Big] = \nabla_{\tilde x} \log p_\sigma(\tilde x)"
    )
    page.figure(
        "dsm_target",
        "The denoising target −z/σ. Left: three clean points (crosses), six noisy copies of each, and each "
        "copy's target drawn times σ² so that it ends on its own clean point; where copies of different points "
        "mingle, their targets disagree. Right, in one dimension (the mixture on the line, σ = "
        f"{nz.dsm_sigma:g}): the targets scatter widely, but their average in each bin of x̃ (orange) lies on "
        "the exact score of p<sub>σ</sub> (red). Least squares learns that average.",
        "noisy copies with their targets, and the targets' average against the smoothed score",
    )
