"""What a conditional run does with its labels (``model.num_classes > 0``): class indices from names, one
label per row, and, for a row given without a label, the choice of the class or k-means cluster it most
probably came from given its observed entries (docs/math.md#choosing-the-class-of-a-partly-observed-row;
docs/math.md#cluster-conditional-models). ``Run`` (``finished.py``) takes these methods from ``Labels``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..gaussian import DataMoments, component_log_probs
from .clusters import cluster_distances, draw_clusters
from .config import Config
from .train import RunError

__all__ = ["Labels"]


class Labels:
    """The label methods of ``Run``, on the run's fields below."""

    run_dir: Path
    config: Config
    classes: tuple[str, ...]
    clusters: dict[str, torch.Tensor] | None
    component_moments: DataMoments | None
    class_weights: torch.Tensor | None

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
        (``component_moments``, marginal on the observed entries; ``gaussian.component_log_probs``). ``[N]``."""
        clusters = self._clusters()
        log_p = component_log_probs(self.component_moments, z, mask) + clusters["weights"].log()
        return log_p.argmax(1).to(z.device)

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
        log_p = component_log_probs(self.component_moments, z, mask) + self.label_shares.log()
        return log_p.argmax(1).to(z.device)

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
