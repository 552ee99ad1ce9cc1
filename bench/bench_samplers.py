"""Sampler quality against cost: distance to the true distribution per number of score evaluations (NFE).

Three settings, each sampled from the same prior draws by every sampler:

1. exact scores of a mixture of three held-apart Gaussians, weights 0.6/0.3/0.1 (the target on which
   ``sample_fast``'s grids were chosen);
2. exact scores of a mixture of four unequal Gaussians (elongated, tilted and one small mode, weights
   0.45/0.3/0.15/0.1) that played no part in choosing them: the confirmation;
3. a small MLP ``ScoreModel`` trained here on samples of the first mixture (VP SDE, ``sde_dsm``).

Exact scores are those of the diffused mixture in closed form, so only the sampler's own error shows.
Samplers: scorefield's Euler-Maruyama and predictor-corrector (``sample_pc``), annealed Langevin (VE,
exact score only), the probability-flow ODE with every fixed-step method of ``sample_ode`` (and Heun on
the EDM grid), dopri5 at several tolerances, ``sample_dpm`` (DPM-Solver++ 1 and 2M), the multistep
solvers of ``multistep`` (UniPC-3 on a uniform grid) and ``sample_fast`` (its default UniPC with UniC,
order 2 below 20 evaluations and 3 from 20, on ``fast_grid``; the same given the data's moments, as a
run calls it, with the Gaussian start up to 8 evaluations; on a grid ``optimize_grid`` fitted to the
target's score on other prior draws; and DPM-Solver++(3M) on ``fast_grid``).
Beside them diffusers' UniPC (bh2, orders 2
and 3), DPM-Solver++ (2M, 3M), DEIS (3), Euler and DDPM drive the same score through an adapter
(skipped with a line when diffusers is not installed: ``pip install -e '.[bench]'``).

The error that separates ODE solvers is the RMS distance of each sample to the converged
probability-flow solution from the same prior draw; at a few steps it is dominated by the few samples
that switch mode, so the median per-sample distance is reported beside it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

from scorefield import noise
from scorefield.distributions import GaussianMixture
from scorefield.fit import EMA, Trainer, fit
from scorefield.gaussian import DataMoments, data_moments
from scorefield.langevin import annealed_langevin
from scorefield.losses import sde_dsm
from scorefield.metrics import energy_distance, mode_weights, sliced_wasserstein
from scorefield.multistep import optimize_grid, sample_fast, sample_multistep
from scorefield.nets.mlp import MLP
from scorefield.samplers import counted, sample_ode, sample_pc, tweedie
from scorefield.score import ScoreModel
from scorefield.sde import SDE, VESDE, VPSDE

from .common import fmt, markdown_table, one_thread, write_results

N_TRAIN = 1000  # diffusers' discrete VP schedule: alpha_bar_i = m(t_i)^2 at t_i = (i + 1) / N_TRAIN


def target(dtype=torch.float64) -> GaussianMixture:
    """Three modes, held apart, with unequal weights so that weight errors show."""
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.5]], dtype=dtype)
    covs = (0.5**2 * torch.eye(2, dtype=dtype)).expand(3, 2, 2).clone()
    return GaussianMixture(means, covs, torch.tensor([0.6, 0.3, 0.1], dtype=dtype))


def target_confirm(dtype=torch.float64) -> GaussianMixture:
    """Four unequal modes: an elongated one, a tilted one, a tall one and a small tight one."""
    means = torch.tensor([[-4.0, -1.0], [0.5, 3.0], [3.5, -2.0], [1.0, 0.0]], dtype=dtype)
    covs = torch.tensor(
        [
            [[0.3, 0.1], [0.1, 0.2]],
            [[0.8, 0.0], [0.0, 0.1]],
            [[0.2, 0.0], [0.0, 0.6]],
            [[0.05, 0.0], [0.0, 0.05]],
        ],
        dtype=dtype,
    )
    return GaussianMixture(means, covs, torch.tensor([0.45, 0.3, 0.15, 0.1], dtype=dtype))


class ExactScore:
    """``∇ log`` of the mixture pushed through ``x -> scale x + std z``: the score of
    ``Σ_k w_k N(scale μ_k, scale² C_k + std² I)``, the same function as
    ``mixture.diffuse(sde, t).score`` (checked in ``main``), with one small ``[K, d, d]`` inverse per
    call instead of triangular solves over the whole batch."""

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture
        self.means, self.covs, self.log_weights = mixture.means, mixture.covs, mixture.weights.log()
        self.eye = torch.eye(mixture.dim, dtype=self.means.dtype)

    def __call__(self, x: torch.Tensor, scale: float, std: float) -> torch.Tensor:
        covs = scale**2 * self.covs + std**2 * self.eye  # (K, d, d)
        precision = torch.linalg.inv(covs)
        diff = x.to(self.means.dtype)[:, None, :] - scale * self.means  # (N, K, d)
        prec_diff = torch.einsum("kde,nke->nkd", precision, diff)
        log_r = self.log_weights - 0.5 * torch.logdet(covs) - 0.5 * (diff * prec_diff).sum(-1)  # (N, K)
        return -(torch.softmax(log_r, dim=1)[..., None] * prec_diff).sum(1).to(x.dtype)

    def at_time(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            scale, std = sde.marginal(float(t[0]))
            return self(x, float(scale), float(std))

        return score_fn

    def at_sigma(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self(x, 1.0, float(sigma[0]))


def train_model(
    mixture: GaussianMixture, sde: SDE, steps: int, generator: torch.Generator
) -> tuple[ScoreModel, float]:
    """A small MLP score model (eps parameterisation) fitted by continuous DSM; returns the EMA model."""
    with torch.random.fork_rng(devices=[]):  # the same initial network on every run
        torch.manual_seed(0)
        model = ScoreModel(MLP(2, hidden=128, depth=3), sde, param="eps")
    ema = EMA(model, 0.995)
    start = time.perf_counter()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=2e-3), ema=ema)
    fit(
        trainer,
        lambda step: sde_dsm(model, sde, mixture.sample(512, generator).float(), generator=generator).mean(),
        steps,
    )
    model.load_state_dict(ema.state_dict(model))
    return model.eval().requires_grad_(False), time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# the samplers, each (score_fn, x_T, budget, generator) -> x; NFE is counted by the caller


def _em(score_fn, sde, x_T, budget, generator):
    return sample_pc(
        score_fn, sde, x_T, budget - 1, predictor="euler_maruyama", corrector=None, generator=generator
    )[0]


def _pc(score_fn, sde, x_T, budget, generator):
    return sample_pc(score_fn, sde, x_T, max(1, (budget - 1) // 2), generator=generator)[0]


def _ode(method: str, per_step: int, grid: str = "uniform"):
    def run(score_fn, sde, x_T, budget, generator):
        n = max(1, budget // per_step)
        steps_or_grid = noise.time_grid(n, sde, kind=grid) if grid != "uniform" else n
        return sample_ode(score_fn, sde, x_T, steps_or_grid, method=method)[0]

    return run


def _dpm(order: int, kind: str = "uniform", t_end: float | None = None):
    """DPM-Solver++ of ``order`` on ``budget`` grid times: uniform in t from 1 to ``1 / budget`` (the last
    step's denoising then ends Lu et al.'s time-uniform grid at 0), or ``kind`` to ``t_end``."""

    def run(score_fn, sde, x_T, budget, generator):
        end = 1 / budget if t_end is None else t_end
        grid = noise.time_grid(budget - 1, sde, kind=kind, t_end=end, dtype=x_T.dtype)
        options = {"solver": "dpm++", "order": order, "corrector": False, "lower_order_final": False}
        return sample_multistep(score_fn, sde, x_T, grid, **options)[0]

    return run


def _fast(solver: str | None = None):
    def run(score_fn, sde, x_T, budget, generator):
        return sample_fast(score_fn, sde, x_T, budget, solver=solver)[0]

    return run


def gaussian_sampler(moments: DataMoments) -> Callable:
    """``sample_fast`` given the data's moments, as a run samples: the Gaussian start at small budgets."""

    def run(score_fn, sde, x_T, budget, generator):
        return sample_fast(score_fn, sde, x_T, budget, moments=moments)[0]

    return run


def tuned_sampler(score_fn, sde: SDE, budgets: list[int], n: int, moments: DataMoments) -> Callable:
    """``sample_fast`` on grids fitted to this score by ``optimize_grid``, one per budget of the targets
    (``VERDICT_BUDGETS``; the search's cost grows with the budget's square, and at 50 and 100 evaluations
    the default grid is already within 1e-3 of the converged solution), on ``n`` prior draws of their
    own (seed 7, never the evaluation draws); the fitting is done here, before the sampler is timed and
    its evaluations counted. Returns None at the other budgets (no row)."""
    x_fit = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(7))
    grids = {
        budget: optimize_grid(score_fn, sde, x_fit, budget, moments=moments)[0].float()
        for budget in budgets
        if budget in VERDICT_BUDGETS
    }

    def run(score, sde, x_T, budget, generator):
        if budget not in grids:
            return None
        return sample_fast(score, sde, x_T, grids[budget], moments=moments)[0]

    return run


def with_tuned(
    samplers: dict[str, Callable], gaussian: Callable | None = None, tuned: Callable | None = None
) -> dict[str, Callable | None]:
    """``samplers`` with the rows of one target after ``FAST``: ``sample_fast`` given the data's moments
    (``gaussian``) and on grids fitted to the model (``tuned``); None for the rows' order only."""
    out: dict[str, Callable | None] = {}
    for name, sampler in samplers.items():
        out[name] = sampler
        if name == FAST:
            out[FAST_GAUSSIAN], out[TUNED] = gaussian, tuned
    return out


def _unipc_uniform(score_fn, sde, x_T, budget, generator):
    """UniPC-3 with UniC on the grid diffusers uses: uniform in t from 1, the last step to t = 0."""
    grid = noise.time_grid(budget - 1, t_end=1 / budget, dtype=x_T.dtype)
    return sample_multistep(score_fn, sde, x_T, grid, solver="unipc", order=3)[0]


def discrete_betas(sde: SDE) -> torch.Tensor:
    """``β_i = 1 - ᾱ_i / ᾱ_{i-1}`` with ``ᾱ_i = m(t_i)²``, ``t_i = (i + 1) / N``: the continuous VP
    SDE discretised to diffusers' ``N = 1000`` training steps."""
    t = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
    alpha_bar = sde.marginal(t)[0] ** 2
    return 1 - alpha_bar / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])


def _diffusers(kind: str, order: int = 2):
    """A diffusers scheduler driving ``score_fn``: ε = -std(t) s(x, t) at ``t = (index + 1) / N``."""

    def run(score_fn, sde, x_T, budget, generator):
        import diffusers

        betas = discrete_betas(sde).numpy()
        if kind == "dpm++":
            scheduler = diffusers.DPMSolverMultistepScheduler(
                N_TRAIN, trained_betas=betas, solver_order=order
            )
        elif kind == "unipc":
            scheduler = diffusers.UniPCMultistepScheduler(
                N_TRAIN, trained_betas=betas, solver_order=order, solver_type="bh2"
            )
        elif kind == "deis":
            scheduler = diffusers.DEISMultistepScheduler(N_TRAIN, trained_betas=betas, solver_order=order)
        elif kind == "euler":
            scheduler = diffusers.EulerDiscreteScheduler(N_TRAIN, trained_betas=betas)
        else:  # trailing spacing starts at the last training step, where x_T is the prior
            scheduler = diffusers.DDPMScheduler(
                N_TRAIN, trained_betas=betas, clip_sample=False, timestep_spacing="trailing"
            )
        scheduler.set_timesteps(budget)
        x = x_T * scheduler.init_noise_sigma
        for index in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, index)
            t = (float(index) + 1) / N_TRAIN
            eps = -float(sde.marginal(t)[1]) * score_fn(x_in, torch.full((x.shape[0],), t))
            extra = {"generator": generator} if kind == "ddpm" else {}
            x = scheduler.step(eps, index, x, **extra).prev_sample
        return x

    return run


SAMPLERS: dict[str, Callable] = {
    "EM (sample_pc euler_maruyama)": _em,
    "PC (reverse_diffusion + langevin)": _pc,
    "ODE euler": _ode("euler", 1),
    "ODE heun": _ode("heun", 2),
    "ODE heun, EDM grid": _ode("heun", 2, "edm"),
    "ODE rk4": _ode("rk4", 4),
    "DDIM (multistep dpm++ order 1)": _dpm(1),
    "DPM-Solver++2M (multistep, uniform grid)": _dpm(2),
    "DPM-Solver++2M, log-SNR grid to t=1e-3": _dpm(2, kind="log_snr", t_end=1e-3),
    "UniPC-3 + UniC, uniform grid (multistep)": _unipc_uniform,
    "sample_fast dpm++ (DPM-Solver++3M, fast_grid)": _fast("dpm++"),
    "sample_fast (UniPC + UniC, fast_grid)": _fast(),
    "diffusers DPMSolverMultistep (DPM-Solver++2M)": _diffusers("dpm++"),
    "diffusers DPMSolverMultistep order 3 (DPM-Solver++3M)": _diffusers("dpm++", 3),
    "diffusers UniPC bh2 order 2": _diffusers("unipc", 2),
    "diffusers UniPC bh2 order 3": _diffusers("unipc", 3),
    "diffusers DEIS order 3": _diffusers("deis", 3),
    "diffusers EulerDiscrete": _diffusers("euler"),
    "diffusers DDPM": _diffusers("ddpm"),
}
DIFFUSERS = {name for name in SAMPLERS if name.startswith("diffusers")}


def diffusers_available() -> str | None:
    """None when diffusers imports, else the reason it does not."""
    try:
        import diffusers  # noqa: F401
    except Exception as error:  # ImportError, or a broken optional dependency of it
        return f"{type(error).__name__}: {error}"
    return None


STOCHASTIC = {"EM (sample_pc euler_maruyama)", "PC (reverse_diffusion + langevin)", "diffusers DDPM"}
BEST = "DPM-Solver++2M (multistep, uniform grid)"
FAST = "sample_fast (UniPC + UniC, fast_grid)"
FAST_GAUSSIAN = "sample_fast given the data's moments (Gaussian start up to 8 NFE)"
TUNED = "sample_fast, grid fitted to this model (optimize_grid, 4000 other draws, data's moments)"
N_FIT = 4000  # prior draws optimize_grid fits each tuned grid on
N_FLOOR = 24  # independent exact sample sets that measure the energy distance's noise floor
VERDICT_BUDGETS = (5, 8, 10, 15, 20)
DPM_PEER = "diffusers DPMSolverMultistep (DPM-Solver++2M)"
EM = "EM (sample_pc euler_maruyama)"


class Scorer:
    """Distances of a sample set to the truth: energy distance, sliced W2, the largest mode-weight
    error and, for deterministic samplers, the RMS distance to the converged probability-flow ODE
    solution from the same prior draws (the solver's own error, free of sampling noise)."""

    def __init__(self, mixture: GaussianMixture, n: int, n_truth: int, seed: int):
        self.mixture = mixture
        self.truth = mixture.sample(n_truth, torch.Generator().manual_seed(seed))
        floors = [  # 24 sets: the spread of 4 was off by 5x on the confirmation mixture (0.00053 vs 0.0025)
            self.energy(mixture.sample(n, torch.Generator().manual_seed(seed + 1 + i)))
            for i in range(N_FLOOR)
        ]
        self.floor = (statistics.mean(floors), statistics.stdev(floors))
        self.reference: torch.Tensor | None = None

    def energy(self, x: torch.Tensor) -> float:
        return energy_distance(x.double(), self.truth)

    def __call__(self, x: torch.Tensor, deterministic: bool = True) -> tuple[float, ...]:
        """Energy distance, sliced W2, largest mode-weight error, RMS and median distance to the reference."""
        x = x.double()
        if not torch.isfinite(x).all():
            return math.nan, math.nan, math.nan, math.nan, math.nan
        sw = sliced_wasserstein(x, self.truth, n_projections=128, generator=torch.Generator().manual_seed(0))
        weight_error = float((mode_weights(x, self.mixture) - self.mixture.weights).abs().max())
        rms = median = math.nan
        if deterministic and self.reference is not None:
            distance = (x - self.reference).square().sum(1).sqrt()
            rms, median = float(distance.square().mean().sqrt()), float(distance.median())
        return self.energy(x), sw, weight_error, rms, median

    def set_reference(self, score_fn, sde: SDE, x_T: torch.Tensor) -> int:
        """The converged ODE solution (dopri5 at 1e-7, then Tweedie at eps, as sample_dpm ends)."""

        def score64(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return score_fn(y.to(x_T.dtype), t.to(x_T.dtype)).double()

        x, info = sample_ode(score64, sde, x_T.double(), rtol=1e-7, atol=1e-7)
        self.reference = tweedie(score64, sde, x, info["times"][-1].double().expand(x.shape[0]))
        return info["nfe"]


def run_grid(
    samplers: dict[str, Callable],
    score_fn,
    sde: SDE,
    x_T: torch.Tensor,
    budgets: list[int],
    scorer: Scorer,
    skip: dict[str, str],
) -> dict[tuple[str, int], dict]:
    results = {}
    for name, sampler in samplers.items():
        if name in skip:
            continue
        begin = time.perf_counter()
        for budget in budgets:
            score, nfe = counted(score_fn)
            start = time.perf_counter()
            x = sampler(score, sde, x_T, budget, torch.Generator().manual_seed(budget))
            wall = time.perf_counter() - start
            if x is None:  # the sampler has no configuration for this budget
                continue
            ed, sw, we, oe, med = scorer(x, name not in STOCHASTIC)
            results[name, budget] = {
                "nfe": nfe[0],
                "ed": ed,
                "sw": sw,
                "we": we,
                "oe": oe,
                "med": med,
                "wall": wall,
            }
        print(f"  {name}: {time.perf_counter() - begin:.1f} s", flush=True)
    return results


def dopri5_rows(score_fn, sde, x_T, scorer, tolerances) -> list[list]:
    rows = []
    for tol in tolerances:
        start = time.perf_counter()
        x, info = sample_ode(score_fn, sde, x_T, rtol=tol, atol=tol)
        wall = time.perf_counter() - start
        rows.append([f"dopri5 rtol=atol={tol:g}", info["nfe"], *scorer(x), wall * 1e3])
    return rows


def ald_rows(exact: ExactScore, x_T_ve: torch.Tensor, sigma_max: float, budgets, scorer) -> list[list]:
    """Annealed Langevin (NCSN; Song & Ermon 2019) on the exact VE score: ``L`` geometric levels from
    ``sigma_max`` to 0.01, ``T`` steps each (``T ≈ sqrt(NFE/10)``), step ``0.3 σ_i²``, final denoising."""
    rows = []
    for budget in budgets:
        n_each = max(1, round(math.sqrt(budget / 10)))
        levels = max(2, (budget - 1) // n_each)
        sigmas = noise.geometric_sigmas(sigma_max, 0.01, levels, dtype=torch.float64)
        score, nfe = counted(exact.at_sigma)
        start = time.perf_counter()
        x, _ = annealed_langevin(
            score, x_T_ve, sigmas, n_steps_each=n_each, step_size=0.3 * 0.01**2,
            generator=torch.Generator().manual_seed(budget),
        )  # fmt: skip
        wall = time.perf_counter() - start
        rows.append([f"ALD, {levels} levels x {n_each}", nfe[0], *scorer(x, False), wall * 1e3])
    return rows


def long_rows(results, budgets, samplers, skip) -> list[list]:
    rows = []
    for name in samplers:
        if name in skip:
            rows.append([name, "-", "skipped", skip[name], "", "", "", ""])
            continue
        for budget in budgets:
            if (name, budget) not in results:
                continue
            r = results[name, budget]
            rows.append([name, r["nfe"], r["ed"], r["sw"], r["we"], r["oe"], r["med"], r["wall"] * 1e3])
    return rows


def pivot(results, budgets, samplers, skip, key: str) -> str:
    rows = []
    for name in samplers:
        if name in skip:
            rows.append([name] + ["skipped"] * len(budgets))
        elif key in ("oe", "med") and name in STOCHASTIC:
            continue
        else:
            rows.append(
                [name]
                + [
                    fmt(results[name, b][key], 3) + f" ({results[name, b]['nfe']})"
                    if (name, b) in results
                    else "-"
                    for b in budgets
                ]
            )
    return markdown_table(["sampler \\ NFE budget", *map(str, budgets)], rows)


def verdict(results, scorer: Scorer, skip, budgets) -> list[str]:
    """The targets: sample_fast's RMS at most 0.8x the best diffusers configuration's at each budget, its
    energy distance at the noise floor (within 2 sd) from 10 evaluations, no diverged sampler."""
    band = scorer.floor[0] + 2 * scorer.floor[1]
    peers = [n for n in SAMPLERS if n in DIFFUSERS and n not in skip and n not in STOCHASTIC]
    lines = []
    if not peers:
        return ["- diffusers skipped: no peer to compare with"]
    for budget in [b for b in VERDICT_BUDGETS if b in budgets]:
        best = min(peers, key=lambda n: results[n, budget]["oe"])
        b = results[best, budget]
        for name, what in (
            (FAST, "sample_fast without the data's moments"),
            (FAST_GAUSSIAN, "sample_fast with the data's moments (as a run samples)"),
            (TUNED, "sample_fast on a grid fitted to the model"),
        ):
            a = results[name, budget]
            ratio = a["oe"] / b["oe"]
            floor = (
                ""
                if budget < 10
                else f"; energy distance {a['ed']:.3g} {'at' if a['ed'] <= band else 'ABOVE'} the noise floor ({band:.2g})"
            )
            lines.append(
                f"- {budget} NFE: {what} RMS {a['oe']:.3g} (median {a['med']:.3g}) vs best diffusers "
                f"**{best}** {b['oe']:.3g} (median {b['med']:.3g}): ratio **{ratio:.2f}** "
                f"({'met' if ratio <= 0.8 else 'NOT met'}, target <= 0.8){floor}"
            )
    diverged = sorted({n for (n, _), r in results.items() if not math.isfinite(r["ed"])})
    lines.append(f"- diverged (non-finite samples): {', '.join(diverged) if diverged else 'none'}")
    return lines


def exact_sections(title: str, results, budgets, skip, scorer: Scorer) -> list[tuple[str, str]]:
    names = with_tuned(SAMPLERS)
    return [
        (
            f"{title}: RMS distance to the converged ODE solution",
            pivot(results, budgets, names, skip, "oe"),
        ),
        (f"{title}: median per-sample distance to it", pivot(results, budgets, names, skip, "med")),
        (f"{title}: energy distance to the truth", pivot(results, budgets, names, skip, "ed")),
        (f"{title}: targets", "\n".join(verdict(results, scorer, skip, budgets))),
    ]


HEADER = [
    "sampler",
    "NFE",
    "energy distance",
    "sliced W2",
    "max mode-weight error",
    "RMS error",
    "median error",
    "wall ms",
]


@one_thread
def main(quick: bool = False) -> None:
    n, n_truth = (400, 1000) if quick else (2000, 4000)
    budgets = [5, 10, 20] if quick else [5, 8, 10, 15, 20, 50, 100]
    tolerances = [1e-2, 1e-3] if quick else [1e-2, 1e-3, 1e-4, 1e-5]
    train_steps = 200 if quick else 2000
    sde = VPSDE()
    probe = torch.randn(64, 2, dtype=torch.float64)
    reason = diffusers_available()
    skip = {name: f"diffusers not installed ({reason})" for name in DIFFUSERS} if reason else {}
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(0))
    sections, walls = [], {}

    # 1-2. exact scores of the tuning and the confirmation mixtures
    for label, mixture in (
        ("Exact scores, three modes (tuning)", target()),
        ("Exact scores, four unequal modes (confirmation)", target_confirm()),
    ):
        exact = ExactScore(mixture)
        torch.testing.assert_close(
            exact(probe, 0.7, 0.4), mixture.diffuse(_Fixed(0.7, 0.4), 0.0).score(probe)
        )
        scorer = Scorer(mixture, n, n_truth, seed=1)
        start = time.perf_counter()
        reference_nfe = scorer.set_reference(exact.at_time(sde), sde, x_T)
        moments = DataMoments(mixture.mean(), mixture.covariance())
        samplers = with_tuned(
            SAMPLERS,
            gaussian_sampler(moments),
            tuned_sampler(exact.at_time(sde), sde, budgets, N_FIT, moments),
        )
        results = run_grid(samplers, exact.at_time(sde), sde, x_T, budgets, scorer, skip)
        sections += exact_sections(label, results, budgets, skip, scorer)
        rows = long_rows(results, budgets, samplers, skip) + dopri5_rows(
            exact.at_time(sde), sde, x_T, scorer, tolerances
        )
        if mixture.weights.numel() == 3:  # the tutorials' samplers of the noise ladder, on the first target
            sigma_max = noise.max_pairwise_distance(scorer.truth)
            ve = VESDE(0.01, sigma_max)
            x_T_ve = ve.prior_sample((n, 2), generator=torch.Generator().manual_seed(0))
            scorer.set_reference(exact.at_time(ve), ve, x_T_ve)
            rows += ald_rows(exact, x_T_ve, sigma_max, budgets, scorer)
            for budget in (10, 20):
                for name in (FAST, BEST, EM):
                    score, nfe = counted(exact.at_time(ve))
                    begin = time.perf_counter()
                    x = SAMPLERS[name](score, ve, x_T_ve, budget, torch.Generator().manual_seed(budget))
                    wall = time.perf_counter() - begin
                    rows.append(
                        [
                            f"{name}, VE SDE (sigma_max = {sigma_max:.3g})",
                            nfe[0],
                            *scorer(x, name not in STOCHASTIC),
                            wall * 1e3,
                        ]
                    )
        sections.append(
            (
                f"{label}: every metric (dopri5; ALD and the VE SDE on the first target)",
                markdown_table(HEADER, rows),
            )
        )
        walls[label] = time.perf_counter() - start

    # 3. a trained VP model of the first mixture
    mixture = target()
    scorer = Scorer(mixture, n, n_truth, seed=1)
    model, train_wall = train_model(mixture, sde, train_steps, torch.Generator().manual_seed(3))
    start = time.perf_counter()
    scorer.set_reference(model, sde, x_T)
    moments = data_moments(mixture.sample(20_000, torch.Generator().manual_seed(5)))  # as a run keeps them
    samplers = with_tuned(
        SAMPLERS, gaussian_sampler(moments), tuned_sampler(model, sde, budgets, N_FIT, moments)
    )
    trained = run_grid(samplers, model, sde, x_T, budgets, scorer, skip)
    label = f"Trained VP model ({train_steps} steps, {train_wall:.0f} s)"
    sections += exact_sections(label, trained, budgets, skip, scorer)
    rows = long_rows(trained, budgets, samplers, skip) + dopri5_rows(model, sde, x_T, scorer, tolerances)
    sections.append((f"{label}: every metric", markdown_table(HEADER, rows)))
    walls["trained"] = time.perf_counter() - start
    floor_mean, floor_sd = scorer.floor
    notes = f"""
{n} samples per sampler, all from the same prior draws; the truth is {n_truth} exact samples of the
mixture. Sampling noise ({N_FLOOR} independent exact sets of {n} samples against the truth, first mixture): energy
distance {floor_mean:.2g} +- {floor_sd:.2g} (the estimator is unbiased, so it fluctuates around 0).
"RMS error" / "median error": RMS and median over samples of the distance to the converged
probability-flow solution from the same prior draw (dopri5 at rtol = atol = 1e-7 plus Tweedie at eps,
{reference_nfe} NFE on the exact score) - the solver's own error, free of sampling noise; deterministic
samplers only (diffusers' samplers solve the ODE of the 1000-step discretised schedule, so theirs also
holds that discretisation's difference, which their first-order row shows to be small).
NFE = score evaluations, counted; for a budget B: EM B-1 steps + Tweedie denoising; PC (B-1)//2
predictor + corrector steps + denoising; ODE euler/heun/rk4 B, B/2, B/4 steps (uniform in t, or the EDM
grid, rho = 7); sample_dpm B-1 steps + denoising (default: one uniform grid from 1 to 0, the last step
the denoising one; or the log-SNR grid to eps = 1e-3); UniPC / sample_fast: B grid times, the answer the
denoised state at the last one (UniC reuses each next evaluation, so it is free); diffusers B steps
(default linspace spacing, the last step to sigma = 0; DDPM: trailing spacing, clip_sample off).
Adapter: trained_betas from alpha_bar(t_i) = m(t_i)^2, t_i = (i+1)/1000; epsilon = -std(t) s(x, t) at
t = (index+1)/1000. sample_fast's grids (multistep.FAST_GRIDS and GAUSSIAN_STARTS) were chosen on the first
mixture and the trained model only; the second mixture confirms them.
"given the data's moments": sample_fast with the data's mean and covariance (the mixture's, in closed form;
for the trained model those of 20,000 draws, as a run keeps its training data's), as a run samples: up to 8
evaluations it carries x_T in closed form along the flow of the data's Gaussian to where the data's
largest variance is snr times the noise's (multistep.GAUSSIAN_STARTS), with no evaluation, and spends the
budget from there; from 9 evaluations it is the row without them.
"grid fitted to this model": sample_fast on the grid optimize_grid fits to each target's score and budget
(with the data's moments, so the hand-over time is fitted too)
on 4000 prior draws of their own (seed 7; the table's draws are seed 0), as `scorefield tune` does for a
run; the fitting's evaluations are not counted in the NFE, which is the sampling budget; fitted at the
targets' budgets (5 to 20) only.
Wall time: {", ".join(f"{k} {v:.0f} s" for k, v in walls.items())} (one thread).
"""
    write_results("samplers", "Sampler quality against score evaluations", sections, notes)


class _Fixed:
    """An SDE stand-in whose marginal is one fixed ``(scale, std)``, to check ``ExactScore``."""

    def __init__(self, scale: float, std: float):
        self.scale, self.std = scale, std

    def marginal(self, t):
        return torch.tensor(self.scale, dtype=torch.float64), torch.tensor(self.std, dtype=torch.float64)
