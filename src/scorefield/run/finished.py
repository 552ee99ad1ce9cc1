"""A finished run, read back from its newest good checkpoint: sampling and log-densities in data units.

``load_run(run_dir)`` rebuilds the model (EMA weights, or the last ones), SDE, noise levels, scaler
and config from the newest checkpoint that verifies (``train.check_run_checkpoint``), and nothing else.
``Run.sample`` dispatches to the plain dict ``SAMPLERS``
of ``sampling.py`` (probability-flow ODE, DPM-Solver++, the few-step ``sample_fast``, predictor-corrector,
Euler-Maruyama, annealed Langevin), for a class-conditional run of one class with classifier-free
guidance on request (``score.guided``); ``Run.inpaint`` fills the entries of data rows a mask leaves out
given the others (``sample_conditional``), for a class-conditional run without a label as the class each
row most probably belongs to (``most_probable_class``); ``Run.log_prob`` integrates the probability-flow ODE (of the
unconditional model, for a class-conditional run). A run conditioned on k-means clusters
(``data.labels = clusters``) is the mixture of its clusters' models wherever no label is given:
``sample`` draws each sample's cluster (stratified, ``draw_clusters``), ``log_prob`` sums the nearest
clusters' terms, ``inpaint`` fills a row from the cluster its observed entries most probably came from.
Under torchrun both split their blocks over the processes, and every process gets all results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..conditional import inpaint_settings, sample_conditional
from ..datasets import default_columns
from ..distributions import Gaussian, GaussianMixture
from ..files import atomic_write
from ..keyed import KeyedNoise
from ..likelihood import log_likelihood
from ..multistep import optimize_grid
from ..scalers import Standardizer
from ..score import guided
from ..utils import default_device
from .build import DiffusionModel, build
from .checkpoint import CheckpointError, latest_good
from .clusters import cluster_distances, draw_clusters
from .config import Config, parse_config
from .distributed import blocks, gather
from .sampling import SAMPLERS, Scores, rows_score
from .train import RunError, check_run_checkpoint

__all__ = ["GRIDS_FILE", "SAMPLERS", "Run", "Scores", "load_run"]

GRIDS_FILE = "grids.json"  # time grids fitted to the run by `scorefield tune`, by budget


@dataclass
class Run:
    """A trained run: its config, ``diffusion`` (the SDE, noise levels and score model the config builds,
    with EMA or last weights), scaler and step,
    and ``columns``, the names of the training data's features (a CSV's header, else ``x0, x1, ...``;
    one per feature of a flattened example), and ``classes``, the names of the class labels of a
    class-conditional run (``model.num_classes > 0``; label ``k`` is ``classes[k]``), else empty;
    ``clusters``, for a run conditioned on k-means clusters (``data.labels = clusters``), their centroids
    in model units and their shares of the training data, else None; ``moments``, the training data's
    mean and covariance in model units (``gaussian.data_moments``), which give ``sample_fast`` its Gaussian start; ``component_moments``, one Gaussian per class or
    cluster of a conditional run (``gaussian.component_moments``), the start of their samples and the
    choice of the class or cluster a row is inpainted from; ``class_weights``, each class's share of
    a class-conditional run's training data (``[k]``, else None).

    A conditional run (``model.num_classes > 0``) also turns class names into indices, takes one label per
    row, and, for a row given without a label, chooses the class or k-means cluster it most probably came
    from given its observed entries (docs/math.md#choosing-the-class-of-a-partly-observed-row;
    docs/math.md#cluster-conditional-models)."""

    run_dir: Path
    config: Config
    diffusion: DiffusionModel
    scaler: Standardizer
    step: int
    device: torch.device
    columns: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    clusters: dict[str, torch.Tensor] | None = None  # data.labels = clusters: centroids [k, D], weights [k]
    moments: Gaussian | None = None  # None only for a Run built by hand
    component_moments: GaussianMixture | None = None
    class_weights: torch.Tensor | None = None  # class-conditional runs: each class's share of the data

    def __post_init__(self) -> None:
        self.columns = tuple(self.columns) or default_columns(math.prod(self.data_shape))
        self.classes = tuple(self.classes)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.diffusion.data_shape

    def check_data(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise RunError(
                f"the data have shape {tuple(x.shape[1:])} per example but the run in {self.run_dir} "
                f"was trained on {self.data_shape}"
            )

    def check_columns(self, names: tuple[str, ...] | None, source: str | Path) -> None:
        """Refuse data from ``source`` whose column names differ from the training data's. Data without
        names (None: a ``.npy`` file, a CSV without header) and a run trained on data without names
        (``x0, x1, ...``) are only checked for their width, by ``check_data``."""
        if names is None or self.columns == default_columns(len(self.columns)):
            return
        if tuple(names) != self.columns:
            raise RunError(
                f"{source} has columns ({', '.join(names)}) but the run in {self.run_dir} was trained on "
                f"({', '.join(self.columns)}); give the file the run's columns, in that order"
            )

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: str | None = None,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
        label: int | str | None = None,
        guidance: float = 0.0,
    ) -> torch.Tensor:
        """``n`` samples in data units, ``[n, *data_shape]`` (torchrun: split over processes, all get all).

        ``label`` (a class-conditional run only; a class index or name, ``label_index``) samples that
        class, ``p(x | y)``, with classifier-free guidance of weight ``guidance`` >= 0 (Ho & Salimans
        2022; ``score.guided``; docs/math.md#classifier-free-guidance), which costs two network
        evaluations per score evaluation when it is not 0. Without a label a class-conditional run
        samples its unconditional model (the null label), and a run conditioned on clusters samples
        its mixture: each sample's cluster drawn by the clusters' shares of the training data, stratified
        and keyed like its noise (``draw_clusters``; docs/math.md#cluster-conditional-models).

        ``sampler``, ``steps`` and ``batch_size`` default to the config's ``sample`` section.
        ``batch_size``, the samples per sampler call, changes memory and speed, not the samples: every
        random number of sample ``i`` (its prior draw and, for pc, em and ald, the noise of every step)
        is keyed by ``(seed, i)`` alone (``KeyedNoise``), so sample ``i`` is the same for any
        ``batch_size`` and any number of processes, up to float rounding: matrix products over
        batches of different sizes may round differently in the last bit, and a chaotic sampler can
        grow such differences.
        """
        s = self.config.sample
        sampler = sampler or s.sampler
        steps = steps or s.steps
        batch_size = batch_size or s.batch_size
        if sampler not in SAMPLERS:
            raise RunError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.diffusion.single_level and sampler != "ald":
            raise RunError(
                f"a model trained at one noise level ({self.config.objective.kind}) has no time axis; "
                "sample it with ald"
            )
        if sampler == "ald" and self.diffusion.sigmas is None:
            raise RunError(f"ald needs noise levels; the run's sde.kind ({self.config.sde.kind}) has none")
        score = self.score_functions(label, guidance)
        s = s.model_copy(update={"steps": steps})
        grid = self._grid(sampler, steps, score)
        out = torch.zeros((n, *self.data_shape), device=self.device)
        shares = list(blocks(n, batch_size))
        for start, stop in tqdm(shares, disable=not progress, desc="sample", unit="block"):
            rows = torch.arange(start, stop, device=self.device)
            noise = KeyedNoise(seed, rows)
            x_T = noise.randn((stop - start, *self.data_shape))
            if label is None and self.clusters is not None:
                score = self.score_functions(self.draw_clusters(seed, rows), 0.0)
            out[start:stop] = SAMPLERS[sampler](self.diffusion.sde, s, grid, x_T, score, noise)
        return self.scaler.inverse_transform(gather(out).cpu())

    @torch.no_grad()
    def inpaint(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        nfe: int | None = None,
        resample: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
        label: int | str | Sequence[int | str] | torch.Tensor | None = None,
        guidance: float = 0.0,
        particles: int | None = None,
        choose: bool = True,
    ) -> torch.Tensor:
        """``x`` (data units, ``[N, *data_shape]``) with the entries where ``mask`` is False filled by draws of
        ``p(x_missing | x_observed)``; the observed entries (``mask`` True) are returned exactly as given, in
        ``x``'s dtype (the model computes in float32).

        ``mask`` (booleans, or 0 and 1) broadcasts to ``x``'s shape. A row without an observed entry is a
        draw of the model; a mask that observes no entry at all raises ``RunError``. The filling runs in
        the model's units: the scaler is elementwise, so a mask means the same there.

        ``sample_conditional`` runs on the run's SDE and model, ``conditional.inpaint_settings`` filling
        in what is not given: sequential Monte Carlo with 16 particles and 51 score evaluations (about
        800 network evaluations per row; docs/math.md#conditional-sampling-by-sequential-monte-carlo),
        or, when ``resample`` is given without ``particles``, the replacement method with RePaint's
        resampling (``nfe`` 800 by default; docs/math.md#conditional-sampling).

        ``label`` and ``guidance`` are as in ``sample``, or one label per row (a sequence or tensor of
        ``N``: each row completed as its own class). Without a label, a conditional run fills each row
        from the class or cluster it most probably came from given its observed entries
        (``most_probable_class``, with ``guidance`` towards it, or ``most_probable_cluster``;
        docs/math.md#choosing-the-class-of-a-partly-observed-row). With ``choose=False`` a
        class-conditional run fills it from its unconditional model instead (the null label: ``p(x)``,
        no class chosen); a run conditioned on clusters has no unconditional model and always chooses.

        Every random number of row ``i`` is keyed by ``(seed, i)``, so row ``i`` is the same for any
        ``batch_size`` (default: ``sample.batch_size`` divided by ``particles``, so that a network call
        holds about ``sample.batch_size`` examples) and any number of processes (under torchrun the rows
        are split over the processes, and every process gets all of them back).
        """
        self.check_data(x)
        nfe, resample, particles = inpaint_settings(nfe, resample, particles)
        if self.diffusion.single_level:
            raise RunError(
                f"a model trained at one noise level ({self.config.objective.kind}) has no time axis to "
                "inpaint along; train with ncsn or an SDE"
            )
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise RunError("the mask must hold booleans or 0 and 1 only (True or 1 = observed)")
        try:
            mask = mask.to(torch.bool).expand(x.shape)
        except RuntimeError:
            raise RunError(
                f"a mask of shape {tuple(mask.shape)} does not fit data of shape {tuple(x.shape)}"
            ) from None
        if not bool(mask.any()):
            raise RunError("the mask observes no entry: nothing to condition on; use sample instead")
        rows_labels, chosen_by = self.row_labels(label, x.shape[0]), self._chooser(label, choose, guidance)
        if rows_labels is None and chosen_by is None:
            score = self.score_functions(label, guidance).at_time
        given, x = x, x.to(self.device, torch.float32)
        z_obs = self.scaler.transform(x)
        out = torch.zeros_like(z_obs)
        for start, stop in tqdm(
            list(blocks(x.shape[0], batch_size or max(1, self.config.sample.batch_size // particles))),
            disable=not progress, desc="inpaint", unit="block",
        ):  # fmt: skip
            if rows_labels is not None:
                score = self.score_functions(rows_labels[start:stop], guidance).at_time
            elif chosen_by is not None:  # (each row's particles share its class or cluster: rows_score)
                chosen = chosen_by(z_obs[start:stop], mask[start:stop])
                # a row that observes nothing is a draw of the model: its class or cluster drawn by the shares
                blank = ~mask[start:stop].flatten(1).any(1)
                rows = torch.arange(start, stop, device=self.device)[blank]
                chosen[blank] = draw_clusters(self.label_shares, seed, rows).to(chosen)
                score = self.score_functions(chosen, guidance).at_time
            noise = KeyedNoise(seed, torch.arange(start, stop, device=self.device))
            out[start:stop], _ = sample_conditional(
                score, self.diffusion.sde, z_obs[start:stop], mask[start:stop], nfe, resample=resample,
                particles=particles, t_end=self.config.sample.t_end, generator=noise, allow_unobserved=True,
            )  # fmt: skip
        filled = self.scaler.inverse_transform(gather(out).cpu())
        # the observed entries as given, in the caller's dtype: no float32 round trip (30.2 stays 30.2)
        dtype = given.dtype if given.is_floating_point() else torch.float32
        return torch.where(mask.cpu(), given.cpu().to(dtype), filled.to(dtype))

    def _grid(self, sampler: str, steps: int, score: Scores) -> int | torch.Tensor:
        """What a sampler of ``SAMPLERS`` runs on: annealed Langevin the run's noise levels; ``fast`` the grid
        ``tune_grid`` stored for ``steps`` evaluations (not for a class's or a cluster's samples when it
        starts from the data's Gaussian, which is not theirs); the others ``steps``."""
        if sampler == "ald":
            return self.diffusion.sigmas
        grid = self.fast_grid(steps) if sampler == "fast" else None
        if grid is None or (float(grid[0]) < 1 and score.moments is None):
            return steps
        return grid

    def fast_grid(self, nfe: int) -> torch.Tensor | None:
        """The grid ``tune_grid`` stored for ``nfe`` score evaluations at this checkpoint's step, else None
        (``sample_fast``'s default grid is used then)."""
        path = self.run_dir / GRIDS_FILE
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text()).get(str(nfe))
        except (ValueError, AttributeError):
            raise RunError(f"{path} is not a grid file written by `scorefield tune`; delete it") from None
        if stored is None or stored.get("step") != self.step:
            return None
        return torch.tensor(stored["times"], dtype=torch.float32, device=self.device)

    def tune_grid(
        self, nfe: int, n: int = 256, seed: int = 0, max_iter: int = 200, n_starts: int = 3
    ) -> dict:
        """Fit ``sample_fast``'s time grid for ``nfe`` evaluations to this model (``optimize_grid``: the RMS
        distance to the converged ODE solution over ``n`` prior draws; Nelder-Mead for ``max_iter``
        iterations from each of the ``n_starts`` best starting grids) and store it in ``grids.json``
        beside the checkpoints, keyed by the budget and the checkpoint's step; ``sample`` with the
        ``fast`` sampler (``scorefield sample --nfe``) uses it from then on. Returns ``optimize_grid``'s
        info with the grid and the file. A run conditioned on clusters is fitted on its mixture, each
        draw's cluster drawn as ``sample`` draws it."""
        rows = torch.arange(n, device=self.device)
        noise = KeyedNoise(seed, rows)
        x_T = self.diffusion.sde.prior_std * noise.randn((n, *self.data_shape))
        score = self.score_functions(None if self.clusters is None else self.draw_clusters(seed, rows), 0)
        grid, info = optimize_grid(
            score.at_time, self.diffusion.sde, x_T, nfe, max_iter=max_iter, n_starts=n_starts, moments=score.moments,
            components=score.components,
        )  # fmt: skip
        path = self.run_dir / GRIDS_FILE
        stored = json.loads(path.read_text()) if path.is_file() else {}
        stored[str(nfe)] = {"times": grid.tolist(), "step": self.step, "draws": n, **info}
        atomic_write(path, (json.dumps(stored, indent=2) + "\n").encode())
        return {**info, "grid": grid, "path": path}

    def score_functions(self, label: int | str | torch.Tensor | None, guidance: float) -> Scores:
        """The score functions a sampler uses: the model's own, or the guided ones of ``label`` (a class,
        or a tensor of one class index per example: ``rows_score``, guided as one class is)."""
        if not (math.isfinite(guidance) and guidance >= 0):
            raise RunError(f"guidance must be a finite number >= 0, got {guidance}")
        if label is None:
            if guidance:
                raise RunError("guidance applies to the samples of one class: give a label too")
            moments = self.moments if self.clusters is None else None  # a cluster's Gaussian is not kept
            return Scores(self.diffusion.score_t, self.diffusion.score_sigma, moments)
        stack = self.component_moments
        if isinstance(label, torch.Tensor):
            if guidance:  # a batch of rows, each guided towards its own class (score.guided takes [B])
                t_fn, sigma_fn = (
                    _guided_rows(f, guidance) for f in (self.diffusion.score_t, self.diffusion.score_sigma)
                )
                return Scores(rows_score(t_fn, label), rows_score(sigma_fn, label))
            return Scores(
                rows_score(self.diffusion.score_t, label),
                rows_score(self.diffusion.score_sigma, label),
                stack,
                label,
            )
        y = self.label_index(label)
        start = (stack, y) if stack is not None and not guidance else (None, None)  # guided: not its Gaussian
        return Scores(
            guided(self.diffusion.score_t, y, guidance),
            guided(self.diffusion.score_sigma, y, guidance),
            *start,
        )

    def log_prob(
        self,
        x: torch.Tensor,
        divergence: str = "exact",
        n_probes: int = 1,
        seed: int = 0,
        batch_size: int = 1000,
        clusters: int = 1,
    ) -> torch.Tensor:
        """Log-density of ``x`` (data units, ``[N, *data_shape]``) in nats, ``[N]`` float64, through the
        probability-flow ODE at ``t = sde.t_min``, plus the scaler's log-determinant.

        For a run conditioned on clusters, the lower bound ``log sum_k w_k p(x | k)`` of its mixture's
        ``log p(x)`` over the ``clusters`` clusters nearest to ``x``: 1 (the default) is the bound at the
        nearest, ``model.num_classes`` the mixture itself; each cluster costs one ODE solve
        (docs/math.md#cluster-conditional-models). ``clusters`` is ignored by other runs."""
        self.check_data(x)
        if self.clusters is not None and not 1 <= clusters <= len(self.clusters["weights"]):
            k = len(self.clusters["weights"])
            raise RunError(f"clusters must be between 1 and the run's {k} clusters, got {clusters}")
        if self.diffusion.single_level:
            raise RunError(
                f"a model trained at one noise level ({self.config.objective.kind}) has no likelihood; "
                "train with ncsn or an SDE"
            )
        s = self.config.sample

        def log_prob_z(z: torch.Tensor) -> torch.Tensor:
            z = z.to(self.device)
            out = torch.zeros(z.shape[0], dtype=torch.float64, device=self.device)
            for start, stop in blocks(z.shape[0], batch_size):
                if self.clusters is None:
                    terms = [(self.diffusion.score_t, 0.0)]
                else:
                    distances = cluster_distances(self.clusters["centroids"], z[start:stop])
                    nearest = distances.topk(clusters, 1, largest=False).indices
                    log_w = self.clusters["weights"].to(self.device, torch.float64).log()
                    terms = [(rows_score(self.diffusion.score_t, k), log_w[k]) for k in nearest.T]
                logps = []
                for score, log_weight in terms:
                    generator = KeyedNoise(seed, torch.arange(start, stop, device=self.device))
                    logp, _ = log_likelihood(
                        score, self.diffusion.sde, z[start:stop], divergence=divergence, n_probes=n_probes,
                        rtol=s.rtol, atol=s.atol, t_eval=self.config.sde.t_min, generator=generator,
                    )  # fmt: skip
                    logps.append(logp.to(torch.float64) + log_weight)
                out[start:stop] = torch.stack(logps).logsumexp(0)
            return gather(out).cpu()

        return self.scaler.log_prob(log_prob_z, x.to(torch.float32))

    def label_index(self, label: int | str) -> int:
        """The class index of ``label``: a class name (``classes``; a CSV's label, a digit), else an
        index ``0 .. num_classes - 1`` (an int, or a string of one). ``RunError`` for a run without
        labels or a label it does not have."""
        k = self.config.model.num_classes
        if not k:
            raise RunError(
                f"the run in {self.run_dir} is unconditional (model.num_classes = 0): it takes no label; "
                "train with model.num_classes > 0 on labelled data"
            )
        if isinstance(label, str) and label.strip() in self.classes:
            return self.classes.index(label.strip())
        try:
            index = int(label)
        except (TypeError, ValueError):
            index = None
        if index is None or not 0 <= index < k or (isinstance(label, float) and label != index):
            names = f" or a class name ({', '.join(self.classes)})" if self.classes else ""
            raise RunError(
                f"label {label!r} is out of range: the run has {k} classes, indices 0 .. {k - 1}{names}"
            )
        return index

    def row_labels(self, label, n: int) -> torch.Tensor | None:
        """The class index of each of ``n`` rows when ``label`` holds one label per row (a sequence or a
        1-D tensor of ``n`` labels, each as ``label_index`` takes it), else None (one label or none for
        all). ``RunError`` for a count other than ``n`` or a label the run does not have."""
        if (
            label is None
            or isinstance(label, (int, str))
            or (isinstance(label, torch.Tensor) and label.ndim == 0)
        ):
            return None
        labels = label.tolist() if isinstance(label, torch.Tensor) else list(label)
        if len(labels) != n:
            raise RunError(f"{len(labels)} labels for {n} rows: give one label, or one per row")
        return torch.tensor([self.label_index(y) for y in labels], dtype=torch.long, device=self.device)

    def draw_clusters(self, seed: int, rows: torch.Tensor) -> torch.Tensor:
        """The cluster of each sample ``rows`` (global indices) of a run conditioned on clusters, drawn by
        the clusters' shares, stratified and keyed by ``(seed, row)`` alone (``clusters.draw_clusters``)."""
        return draw_clusters(self._clusters()["weights"], seed, rows)

    def nearest_cluster(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The cluster whose centroid is nearest (Euclidean, model units) to each example of ``z``, ``[N]``;
        with ``mask`` (True = observed) on the observed entries only (``clusters.cluster_distances``)."""
        return cluster_distances(self._clusters()["centroids"], z, mask).argmin(1)

    def most_probable_cluster(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The cluster each example of ``z`` (model units) most probably came from given the entries ``mask``
        observes: the largest ``log w_k + log N(z_obs; μ_k, Σ_k)`` under the clusters' Gaussians
        (``component_moments``, weighted by the clusters' shares, marginal on the observed entries). ``[N]``."""
        self._clusters()
        return self._observed_log_probs(z, mask).argmax(1).to(z.device)

    def most_probable_class(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The class of a class-conditional run each example of ``z`` (model units) most probably belongs to
        given the entries ``mask`` observes: Bayes' rule under the class Gaussians, the largest
        ``log π_y + log N(z_obs; μ_y, Σ_y)`` (``component_moments`` marginal on the observed entries,
        ``π`` the ``class_weights``; docs/math.md#choosing-the-class-of-a-partly-observed-row). ``[N]`` class indices."""
        k = self.config.model.num_classes
        if not k or self.clusters is not None or self.component_moments is None:
            raise RunError(
                f"the run in {self.run_dir} keeps no class Gaussians to choose a class with: it is not "
                "class-conditional"
            )
        return self._observed_log_probs(z, mask).argmax(1).to(z.device)

    def _observed_log_probs(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``log π_k + log N(z_obs; μ_k, Σ_k)`` ``[N, k]`` under ``component_moments`` (weighted by the shares
        of the classes or clusters), of the flattened examples' entries ``mask`` observes (all without one)."""
        flat = z.reshape(z.shape[0], -1).to("cpu", torch.float64)
        seen = (
            torch.ones(())
            if mask is None
            else torch.as_tensor(mask).cpu().expand(z.shape).reshape(flat.shape)
        )
        return self.component_moments.observed_log_probs(flat, seen.bool())

    @property
    def label_shares(self) -> torch.Tensor:
        """``[k]`` float64: the shares of the training data of a conditional run's clusters or classes."""
        if self.clusters is not None:
            return self.clusters["weights"].double()
        if self.class_weights is None:
            raise RunError(f"the run in {self.run_dir} is unconditional: it has no classes or clusters")
        return self.class_weights.double()

    def _chooser(self, label, choose: bool, guidance: float):
        """What ``inpaint`` chooses each row's class or cluster with when no label is given, else None."""
        if label is not None or not self.config.model.num_classes:
            return None
        if self.clusters is not None:
            if not choose or guidance:
                raise RunError(
                    "a run conditioned on clusters fills each row from its most probable cluster, unguided: "
                    "it has no unconditional model (choose=False) and no guidance without a label"
                )
            return self.most_probable_cluster
        return self.most_probable_class if choose else None

    def _clusters(self) -> dict[str, torch.Tensor]:
        if self.clusters is None:
            raise RunError(
                f"the run in {self.run_dir} is not conditioned on clusters (data.labels = "
                f"{self.config.data.labels}); it has none to draw or to compare with"
            )
        return self.clusters


def _guided_rows(score_fn, w: float):
    """``score_fn(x, t, y)`` guided with weight ``w`` towards each row's own label ``y`` (``[B]``)."""

    def score(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return guided(score_fn, y, w)(x, t)

    return score


def load_run(
    run_dir: str | Path,
    device: str | torch.device | None = None,
    use_ema: bool = True,
    precision: str = "fp32",
    compile: bool = False,
) -> Run:
    """The run in ``run_dir`` from its newest checkpoint that verifies: EMA weights (or the last
    ones), SDE, noise levels, scaler and config. ``CheckpointError`` if none verifies. ``precision``
    (``"fp32"`` or ``"bf16"``) and ``compile`` set how the network runs for ``sample``, ``inpaint`` and
    ``log_prob`` (``nets.Network.accelerate``; the samplers' and the ODE's arithmetic stay float32 or
    float64); a precision the device cannot run is a ``ConfigError``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory written by `scorefield train`")
    ckpt = latest_good(run_dir, check_run_checkpoint)
    if ckpt is None:
        raise CheckpointError(f"run directory {run_dir} holds no checkpoint; train it first")
    meta, state = ckpt.meta, ckpt.state
    config = parse_config(meta["config"])
    device = default_device(device)
    diffusion = build(config, tuple(meta["data_shape"]), meta["sigma_max"], device, precision, compile)
    try:  # tensors that verify against their hash but do not fit the config: a file made by hand
        diffusion.model.load_state_dict(state["ema" if use_ema else "model"])
        scaler = Standardizer.from_state_dict(state["scaler"])
        moments = Gaussian.from_state_dict(state["moments"])
        components = state.get("component_moments")
        components = None if components is None else GaussianMixture.from_state_dict(components)
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit its own config ({first})") from None
    diffusion.model.eval().requires_grad_(False)
    kept = [state.get(k) for k in ("clusters", "class_weights")]  # conditional runs only
    return Run(
        run_dir, config, diffusion, scaler, ckpt.step, device, tuple(meta["columns"]), tuple(meta["classes"]),
        kept[0], moments, components, kept[1],
    )  # fmt: skip
