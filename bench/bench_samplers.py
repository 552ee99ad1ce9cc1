"""Few-step samplers against their peers, on every SDE family: the RMS distance of each sample to the
converged probability-flow solution from the same prior draw, per number of score evaluations (NFE).

Problems: exact scores (the diffused mixture in closed form, so only the sampler's own error shows) of
Gaussian mixtures under the VE, VP and sub-VP SDEs, in 2 and 16 dimensions, in two groups:

- tuning: three held-apart modes in 2-D and a 16-D mixture of four anisotropic Gaussians, the problems
  on which ``sample_fast``'s tables were chosen;
- confirmation: four unequal modes in 2-D (elongated, tilted, tall, small) and another 16-D mixture of
  five, which played no part in any choice; reported apart.

Samplers: ``sample_fast`` with its defaults (no moments: a user calling it on their own model), and
given the data's moments (as a run calls it). Peers: diffusers' DPM-Solver++ (2M, 3M), UniPC (bh2 and
bh1, orders 2 and 3; bh1 with ``final_sigmas_type="sigma_min"``, with which it does not return NaN),
DEIS (3) and Euler, each on its default spacing and on Karras sigmas; k-diffusion's ``dpmpp_2m``,
``dpmpp_3m_sde`` with ``eta = 0`` and ``heun`` on the Karras and the exponential schedules. The best
peer at each budget and problem is chosen after the fact, which favours the peers.

Every SDE's probability-flow ODE is one ODE in ``x / m`` and ``sigma = std / m`` (docs/math.md), so the
peers run on that common form: k-diffusion's denoiser ``D(x, sigma) = x + sigma^2 s_sigma(x)`` and
diffusers' discretised VP schedule ``alpha_bar_i = 1 / (1 + sigma(t_i)^2)`` at ``t_i = (i + 1) / 1000``,
both started from the same prior draws and from the SDE's ``sigma(1)``.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
import time
import types
from collections.abc import Callable

import torch

from scorefield import noise
from scorefield.distributions import Gaussian, GaussianMixture
from scorefield.multistep import optimize_grid, sample_fast
from scorefield.samplers import counted, sample_ode, tweedie
from scorefield.sde import SDE, VESDE, VPSDE, SubVPSDE

from .common import markdown_table, one_thread, write_results

N_TRAIN = 1000  # diffusers' discrete schedule: alpha_bar_i at t_i = (i + 1) / N_TRAIN
# diffusers keeps the schedule in float32, where sub-VP's sigma(1e-3) ~ 1e-4 makes 1 - alpha_bar_0 round
# to 0 and every scheduler return NaN: the table's noise levels are held at or above this one
SIGMA_FLOOR = 2e-3
BUDGETS = (5, 8, 10, 15, 20)
FAST, FAST_MOMENTS = "sample_fast (defaults, no moments)", "sample_fast (data's moments)"
TUNED = "sample_fast on optimize_grid's grid (fitted to 256 other draws)"
OURS = (FAST, FAST_MOMENTS, TUNED)
# optimize_grid's search in the benchmark: one Nelder-Mead run of this many iterations from the best start
TUNE_ITER, TUNE_DRAWS = 60, 256
TARGETS = {FAST: 0.9, FAST_MOMENTS: 0.8}


def three_modes() -> GaussianMixture:
    """Three modes, held apart, with unequal weights (the tuning target of ``sample_fast``'s tables)."""
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.5]], dtype=torch.float64)
    covs = (0.5**2 * torch.eye(2, dtype=torch.float64)).expand(3, 2, 2).clone()
    return GaussianMixture(means, covs, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))


def four_modes() -> GaussianMixture:
    """Four unequal modes: an elongated one, a tilted one, a tall one and a small tight one."""
    means = torch.tensor([[-4.0, -1.0], [0.5, 3.0], [3.5, -2.0], [1.0, 0.0]], dtype=torch.float64)
    covs = torch.tensor(
        [
            [[0.3, 0.1], [0.1, 0.2]],
            [[0.8, 0.0], [0.0, 0.1]],
            [[0.2, 0.0], [0.0, 0.6]],
            [[0.05, 0.0], [0.0, 0.05]],
        ],
        dtype=torch.float64,
    )
    return GaussianMixture(means, covs, torch.tensor([0.45, 0.3, 0.15, 0.1], dtype=torch.float64))


def random_mixture(k: int, d: int, seed: int) -> GaussianMixture:
    """``k`` anisotropic Gaussians in ``d`` dimensions: means of spread 3, covariances with eigenvalues
    from 0.02 to 1 in random directions, weights 0.5 plus an exponential draw each, normalised."""
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=torch.float64))
    values = torch.exp(torch.empty(k, d, dtype=torch.float64).uniform_(math.log(0.02), 0.0, generator=g))
    covs = q @ torch.diag_embed(values) @ q.transpose(1, 2)
    weights = 0.5 - torch.rand(k, generator=g, dtype=torch.float64).log()  # exponential draws, plus 0.5
    return GaussianMixture(means, covs, weights / weights.sum())


PROBLEMS = {  # name -> (group, mixture)
    "three modes, 2-D": ("tuning", three_modes),
    "four anisotropic, 16-D": ("tuning", lambda: random_mixture(4, 16, 1)),
    "four unequal modes, 2-D": ("confirmation", four_modes),
    "five anisotropic, 16-D": ("confirmation", lambda: random_mixture(5, 16, 2)),
}


class ExactScore:
    """``∇ log`` of ``Σ_k w_k N(scale μ_k, scale² C_k + std² I)``: the mixture pushed through
    ``x -> scale x + std z`` (the same function as ``mixture.diffuse``; checked in ``main``)."""

    def __init__(self, mixture: GaussianMixture):
        self.means, self.covs, self.log_weights = mixture.means, mixture.covs, mixture.weights.log()
        self.eye = torch.eye(mixture.dim, dtype=self.means.dtype)

    def __call__(self, x: torch.Tensor, scale: float, std: float) -> torch.Tensor:
        covs = scale**2 * self.covs + std**2 * self.eye
        precision = torch.linalg.inv(covs)
        diff = x.to(self.means.dtype)[:, None, :] - scale * self.means
        prec_diff = torch.einsum("kde,nke->nkd", precision, diff)
        log_r = self.log_weights - 0.5 * torch.logdet(covs) - 0.5 * (diff * prec_diff).sum(-1)
        return -(torch.softmax(log_r, dim=1)[..., None] * prec_diff).sum(1).to(x.dtype)

    def at_time(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            scale, std = sde.marginal(float(t[0]))
            return self(x, float(scale), float(std))

        return score_fn


def sigma_of(sde: SDE, t: float) -> float:
    return float(noise.noise_level(sde, torch.tensor(t, dtype=torch.float64)))


# --------------------------------------------------------------------------------------------------
# peers: each (exact, sde, x_T, budget) -> (x_0, nfe); they see the score through `counted`


@functools.cache
def load_k_diffusion() -> types.ModuleType | str:
    """``k_diffusion.sampling`` alone, or why it cannot be had. k-diffusion's package imports torchvision
    and its image tooling, which do not install beside the CPU torch of constraints.txt; its samplers
    need only ``utils.append_dims``, supplied here, so the file is loaded by itself."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return (
            "k-diffusion not installed (pip install -c constraints.txt torchsde, then "
            "pip install --no-deps -c constraints.txt k-diffusion)"
        )
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.utils = utils
    sys.modules.setdefault("k_diffusion", package)
    sys.modules.setdefault("k_diffusion.utils", utils)
    location = f"{spec.submodule_search_locations[0]}/sampling.py"
    sampling_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", location)
    module = importlib.util.module_from_spec(sampling_spec)
    try:
        sampling_spec.loader.exec_module(module)
    except Exception as error:  # a missing dependency of sampling.py itself
        return f"k_diffusion.sampling does not load ({type(error).__name__}: {error})"
    return module


def k_diffusion_peer(name: str, schedule: str) -> Callable:
    def run(exact: ExactScore, sde: SDE, x_T: torch.Tensor, budget: int):
        k = load_k_diffusion()
        calls = [0]

        def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            s = float(sigma.flatten()[0])
            return x + s**2 * exact(x, 1.0, s)

        steps = (budget + 1) // 2 if name == "heun" else budget  # heun: 2 per step, 1 on the last to 0
        s_max, s_min = sigma_of(sde, 1.0), sigma_of(sde, noise.T_END)
        if schedule == "karras":
            sigmas = k.get_sigmas_karras(steps, s_min, s_max, rho=7.0)
        else:
            sigmas = k.get_sigmas_exponential(steps, s_min, s_max)
        sigmas = sigmas.to(x_T.dtype)
        x = x_T / float(sde.marginal(torch.tensor(1.0, dtype=torch.float64))[0])
        options = {"eta": 0.0} if name == "dpmpp_3m_sde" else {}
        x = getattr(k, f"sample_{name}")(denoiser, x, sigmas, disable=True, **options)
        return x, calls[0]

    return run


def diffusers_peer(kind: str, order: int = 2, karras: bool = False, variant: str = "bh2") -> Callable:
    def run(exact: ExactScore, sde: SDE, x_T: torch.Tensor, budget: int):
        import diffusers

        t = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
        sigma = noise.noise_level(sde, t).clamp_min(SIGMA_FLOOR)
        alpha_bar = 1 / (1 + sigma**2)
        betas = (1 - alpha_bar / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])).numpy()
        common = {"num_train_timesteps": N_TRAIN, "trained_betas": betas}
        if karras:
            common["use_karras_sigmas"] = True
        if kind == "dpm++":
            scheduler = diffusers.DPMSolverMultistepScheduler(**common, solver_order=order)
        elif kind == "unipc":
            extra = {"final_sigmas_type": "sigma_min"} if variant == "bh1" else {}
            scheduler = diffusers.UniPCMultistepScheduler(
                **common, solver_order=order, solver_type=variant, **extra
            )
        elif kind == "deis":
            scheduler = diffusers.DEISMultistepScheduler(**common, solver_order=order)
        else:
            scheduler = diffusers.EulerDiscreteScheduler(**common)
        scheduler.set_timesteps(budget)
        m_1 = float(sde.marginal(torch.tensor(1.0, dtype=torch.float64))[0])
        s_1 = sigma_of(sde, 1.0)
        x = x_T / m_1 / math.sqrt(1 + s_1**2)  # x / m in the VP form at sigma(1)
        x = x * scheduler.init_noise_sigma
        calls = 0
        for index in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, index)
            s = max(sigma_of(sde, (float(index) + 1) / N_TRAIN), SIGMA_FLOOR)
            calls += 1
            eps = -s * exact(x_in * math.sqrt(1 + s**2), 1.0, s)  # eps = -sigma s_sigma(x / m)
            x = scheduler.step(eps, index, x).prev_sample
        return x, calls

    return run


PEERS: dict[str, Callable] = {}
for _karras in (False, True):
    _tag = ", Karras sigmas" if _karras else ""
    PEERS |= {
        f"diffusers DPM-Solver++2M{_tag}": diffusers_peer("dpm++", 2, _karras),
        f"diffusers DPM-Solver++3M{_tag}": diffusers_peer("dpm++", 3, _karras),
        f"diffusers UniPC bh2 order 2{_tag}": diffusers_peer("unipc", 2, _karras),
        f"diffusers UniPC bh2 order 3{_tag}": diffusers_peer("unipc", 3, _karras),
        f"diffusers UniPC bh1 order 2{_tag}": diffusers_peer("unipc", 2, _karras, "bh1"),
        f"diffusers UniPC bh1 order 3{_tag}": diffusers_peer("unipc", 3, _karras, "bh1"),
        f"diffusers DEIS order 3{_tag}": diffusers_peer("deis", 3, _karras),
    }
PEERS["diffusers EulerDiscrete"] = diffusers_peer("euler")
for _schedule in ("karras", "exponential"):
    for _name in ("dpmpp_2m", "dpmpp_3m_sde", "heun"):
        _label = f"k-diffusion {_name}{' (eta 0)' if _name == 'dpmpp_3m_sde' else ''}, {_schedule} sigmas"
        PEERS[_label] = k_diffusion_peer(_name, _schedule)


def peer_available(name: str) -> str | None:
    """None when the peer's library loads, else the reason it does not."""
    if name.startswith("k-diffusion"):
        loaded = load_k_diffusion()
        return loaded if isinstance(loaded, str) else None
    try:
        import diffusers  # noqa: F401
    except Exception as error:
        return f"diffusers not installed ({type(error).__name__}: {error}; pip install -e '.[bench]')"
    return None


def rms(x: torch.Tensor, reference: torch.Tensor) -> float:
    value = float((x.double() - reference).square().sum(1).mean().sqrt())
    return value if math.isfinite(value) else math.nan


def run_problem(mixture: GaussianMixture, sde: SDE, n: int, budgets) -> tuple[dict, float]:
    """RMS to the converged solution of every sampler at every budget, and the reference's wall time."""
    exact = ExactScore(mixture)
    score = exact.at_time(sde)
    x_T = sde.prior_sample((n, mixture.dim), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = time.perf_counter()
    ref, info = sample_ode(score, sde, x_T, rtol=1e-8, atol=1e-8)
    reference = tweedie(score, sde, ref, info["times"][-1].expand(n))
    results = {}
    moments = Gaussian(mixture.mean(), mixture.covariance())
    ours = {FAST: None, FAST_MOMENTS: moments}
    for name, given in ours.items():
        for budget in budgets:
            fn, nfe = counted(score)
            x, _ = sample_fast(fn, sde, x_T, budget, moments=given)
            results[name, budget] = (rms(x, reference), nfe[0])
    x_fit = sde.prior_sample(
        (TUNE_DRAWS, mixture.dim), generator=torch.Generator().manual_seed(1), dtype=x_T.dtype
    )
    for budget in budgets:  # fitted to other draws, scored on the benchmark's: draws it never saw
        grid, info = optimize_grid(score, sde, x_fit, budget, max_iter=TUNE_ITER, n_starts=1)
        fn, nfe = counted(score)
        x, _ = sample_fast(fn, sde, x_T, grid)
        results[TUNED, budget] = (rms(x, reference), nfe[0], info["kept_default"])
    for name, peer in PEERS.items():
        if peer_available(name):
            continue
        for budget in budgets:
            x, nfe = peer(exact, sde, x_T, budget)
            results[name, budget] = (rms(x, reference), nfe)
    return results, time.perf_counter() - start


def problem_sections(title: str, results: dict, budgets) -> tuple[list[tuple[str, str]], list[list]]:
    names = [*OURS] + [p for p in PEERS if (p, budgets[0]) in results]
    rows = [
        [name]
        + [
            f"{results[name, b][0]:.3g} ({results[name, b][1]})" if (name, b) in results else "-"
            for b in budgets
        ]
        for name in names
    ]
    table = markdown_table(["sampler \\ NFE budget", *map(str, budgets)], rows)
    verdicts = []
    for b in budgets:
        peers = {
            p: results[p, b][0]
            for p in names[len(OURS) :]
            if (p, b) in results and math.isfinite(results[p, b][0])
        }
        if not peers:
            continue
        best = min(peers, key=peers.get)
        verdicts.append(
            [
                b,
                best,
                peers[best],
                *(results[o, b][0] / peers[best] for o in (FAST, FAST_MOMENTS)),
                results[TUNED, b][0] / results[FAST, b][0],
                results[TUNED, b][2],
            ]
        )
    return [(f"{title}: RMS distance to the converged ODE solution (NFE counted)", table)], verdicts


@one_thread
def main(quick: bool = False) -> None:
    n = 300 if quick else 2000
    budgets = (5, 10) if quick else BUDGETS
    sections, summary, walls = [], [], {}
    skipped = sorted({reason for p in PEERS if (reason := peer_available(p))})
    probe = torch.randn(16, 2, dtype=torch.float64)
    torch.testing.assert_close(
        ExactScore(three_modes())(probe, 0.7, 0.4), three_modes().diffuse(_Fixed(0.7, 0.4), 0.0).score(probe)
    )
    for problem, (group, make) in PROBLEMS.items():
        mixture = make()
        sigma_max = noise.max_pairwise_distance(mixture.sample(2000, torch.Generator().manual_seed(3)))
        for sde_name, sde in (("VE", VESDE(0.01, sigma_max)), ("VP", VPSDE()), ("sub-VP", SubVPSDE())):
            label = f"{problem}, {sde_name}" + (f" (sigma_max {sigma_max:.3g})" if sde_name == "VE" else "")
            results, wall = run_problem(mixture, sde, n, budgets)
            walls[label] = wall
            print(f"  {label}: {wall:.1f} s", flush=True)
            tables, verdicts = problem_sections(f"{group}: {label}", results, budgets)
            sections += tables
            summary += [[group, label, *v] for v in verdicts]
    header = [
        "group",
        "problem",
        "NFE",
        "best peer",
        "its RMS",
        "ratio, no moments",
        "ratio, moments",
        "optimize_grid / default",
    ]
    rows = [
        [g, p, b, best, f"{r:.3g}", f"{a:.2f}", f"{m:.2f}", f"{t:.2f}" + (" (kept default)" if kept else "")]
        for g, p, b, best, r, a, m, t, kept in summary
    ]
    met = []
    for group in ("tuning", "confirmation"):
        chosen = [r for r in summary if r[0] == group]
        if not chosen:
            continue
        worst_a, worst_m = max(r[5] for r in chosen), max(r[6] for r in chosen)
        count_a = sum(r[5] <= TARGETS[FAST] for r in chosen)
        count_m = sum(r[6] <= TARGETS[FAST_MOMENTS] for r in chosen)
        met.append(
            f"- {group}: without moments {count_a} of {len(chosen)} (problem, budget) pairs at or below "
            f"{TARGETS[FAST]}x the best peer (worst {worst_a:.2f}x); with moments {count_m} of "
            f"{len(chosen)} at or below {TARGETS[FAST_MOMENTS]}x (worst {worst_m:.2f}x); optimize_grid's "
            f"grid lost to the default on the benchmark's draws in {sum(r[7] > 1.0 for r in chosen)} of "
            f"{len(chosen)} (worst {max(r[7] for r in chosen):.2f}x the default's RMS; the default kept in "
            f"{sum(bool(r[8]) for r in chosen)})"
        )
    sections = [
        ("Targets: sample_fast's RMS over the best peer's, per problem and budget", "\n".join(met)),
        ("Every problem and budget", markdown_table(header, rows)),
        *sections,
    ]
    notes = f"""
{n} prior draws per problem, the same for every sampler; the reference is dopri5 at rtol = atol = 1e-8
and Tweedie's step at t = 1e-3 (float64). RMS over draws of the distance to it; NFE (in brackets) is
counted. "best peer": the smallest RMS of the {len(PEERS)} peer configurations at that budget and
problem, chosen after the fact. sample_fast's tables (multistep.FAST_GRIDS, GAUSSIAN_GRIDS) were
chosen on the tuning group, per SDE family (VE; VP with sub-VP) and budget, by the smallest worst ratio
over that family's tuning problems, VP's at 5 and 8 NFE together with the Fréchet distance of the
digits preset's trained model (bench/results/digits.md); the confirmation group played no part. optimize_grid: fitted
to {TUNE_DRAWS} prior draws of another seed (a quarter held out, the default kept unless the fit beats it
there), one Nelder-Mead run of {TUNE_ITER} iterations from the best start, scored on the {n} draws above. Peers skipped: {", ".join(skipped) or "none"}.
k-diffusion: installed with -c constraints.txt; its package imports torchvision, which does not load
beside the CPU torch, so only k_diffusion/sampling.py is loaded (its one helper, utils.append_dims,
supplied). Heun spends 2 evaluations a step and 1 on the last, so a budget B runs (B + 1) // 2 steps.
diffusers: the VP table's noise levels are held at or above {SIGMA_FLOOR:g} (float32 rounds sub-VP's
smallest to a zero beta, and the schedulers return NaN); UniPC bh1 with final_sigmas_type="sigma_min".
VE: sigma_min 0.01, sigma_max the largest distance between 2000 draws of the mixture (Song & Ermon's rule).
Wall time: {sum(walls.values()):.0f} s in all (one thread).
"""
    write_results("samplers", "Few-step samplers against their peers on every SDE", sections, notes)


class _Fixed:
    """An SDE stand-in whose marginal is one fixed ``(scale, std)``, to check ``ExactScore``."""

    def __init__(self, scale: float, std: float):
        self.scale, self.std = scale, std

    def marginal(self, t):
        return torch.tensor(self.scale, dtype=torch.float64), torch.tensor(self.std, dtype=torch.float64)
