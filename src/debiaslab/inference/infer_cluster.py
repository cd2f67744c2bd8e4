"""``cluster``: per-class clustering of a biased reference model's outputs or features, the number of clusters
chosen by the silhouette score (GEORGE, Sohoni et al., NeurIPS 2020, HazyResearch/hidden-stratification; SPARE,
Yang et al., ICML 2023, BIGML-CS-UCLA/SPARE).

SPARE clusters the network's *outputs* early in training, when the easy cue is already learned (the default here:
softmax outputs of JTT's identification model at the dataset preset); GEORGE clusters the penultimate *features*
of an ERM model after a dimensionality reduction (``representation=features``; PCA here, where the paper uses
UMAP). Per class, k-means for every k in ``[2, k_max]``; the k with the highest silhouette score (on at most
``silhouette_sample`` examples) is kept. Pseudo-groups are the clusters ranked by size (0: the largest, the
majority); validation examples join the nearest centre of their class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.inference.base import InferredGroups, SplitGroups
from debiaslab.inference.infer_error_set import ErrorSet
from debiaslab.inference.registry import register_inferrer
from debiaslab.methods.hparams import Default, HparamTable

SPARE = "SPARE (Yang et al. 2023): cluster the network's outputs early in training, k per class by silhouette"
GEORGE = "GEORGE (Sohoni et al. 2020): per-class clustering, the number of clusters chosen by silhouette score"
OURS_RANGE = "ours: k from 2 to 10 per class (the criterion is GEORGE's and SPARE's; the range is not fixed there)"
OURS_SAMPLE = "ours: silhouette on at most 2000 examples per class and k (exact silhouette is quadratic in n)"
OURS_PCA = "ours: PCA to 16 dimensions for features (GEORGE uses UMAP, a dependency this toolkit does not take)"
REPRESENTATIONS = ("outputs", "features")


@dataclass
class ClusterHparams:
    """Attributes:
    representation: ``outputs`` (softmax outputs, SPARE) or ``features`` (penultimate features, GEORGE).
    k_max: the largest number of clusters tried per class (from 2).
    silhouette_sample: examples per class the silhouette score is computed on.
    pca_dim: dimensions kept by PCA before clustering ``features`` (0: none).
    """

    representation: str = "outputs"
    k_max: int = 10
    silhouette_sample: int = 2000
    pca_dim: int = 16

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ConfigError(
                f"representation {self.representation!r} unknown; expected one of {', '.join(REPRESENTATIONS)}"
            )
        for name, low in (("k_max", 2), ("silhouette_sample", 10), ("pca_dim", 0)):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ConfigError(f"{name} {value!r} must be an integer >= {low}")
            setattr(self, name, int(value))


@register_inferrer("cluster")
class Cluster(ErrorSet):
    """Per-class k-means of an early model's outputs (or features), k by silhouette; clusters ranked by size."""

    summary = "per-class clustering of a biased model's outputs/features, k by silhouette (SPARE / GEORGE)"
    source = "GEORGE (Sohoni et al., NeurIPS 2020) and SPARE (Yang et al., ICML 2023)"
    Hparams: ClassVar[type] = ClusterHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "representation": Default("outputs", SPARE),
            "k_max": Default(10, OURS_RANGE),
            "silhouette_sample": Default(2000, OURS_SAMPLE),
            "pca_dim": Default(16, OURS_PCA),
        }
    }

    def represent(self, reference: nn.Module, dataset: GroupDataset, trainer: Trainer) -> np.ndarray:
        if self.hparams.representation == "outputs":
            return torch.softmax(self.logits(reference, dataset, trainer), dim=1).numpy()
        features = getattr(reference, "features", None)
        if features is None:
            raise ConfigError(f"group inferrer 'cluster': model {type(reference).__name__} exposes no features(x)")
        with eval_mode(reference):
            return trainer.predict(features, dataset).numpy()

    def assign(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        from sklearn.decomposition import PCA

        hp = self.hparams
        reps = {name: self.represent(reference, ds, trainer) for name, ds in splits.items()}
        train = splits["train"]
        if hp.representation == "features" and hp.pca_dim and reps["train"].shape[1] > hp.pca_dim:
            pca = PCA(n_components=hp.pca_dim, random_state=0).fit(reps["train"])
            reps = {name: pca.transform(r) for name, r in reps.items()}
        pseudo = {name: np.zeros(len(ds), dtype=np.int64) for name, ds in splits.items()}
        chosen: dict[str, Any] = {}
        for c in range(train.n_classes):
            members = (train.y == c).numpy()
            if members.sum() < 4:
                continue
            model, k, score = self._best_kmeans(reps["train"][members], seed=c)
            rank = _rank_by_size(model.labels_, k)
            chosen[str(c)] = {"k": k, "silhouette": round(score, 4)}
            for name, ds in splits.items():
                mask = (ds.y == c).numpy()
                if mask.any():
                    pseudo[name][mask] = rank[model.predict(reps[name][mask])]
        out = {
            name: SplitGroups(pseudo=torch.from_numpy(p), minority=torch.from_numpy(p > 0))
            for name, p in pseudo.items()
        }
        return InferredGroups(self.name, hp.k_max, out, details={"clusters_per_class": chosen})

    def _best_kmeans(self, x: np.ndarray, seed: int) -> tuple[Any, int, float]:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        hp = self.hparams
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(x), size=min(len(x), hp.silhouette_sample), replace=False)
        best: tuple[Any, int, float] | None = None
        for k in range(2, min(hp.k_max, len(x) - 1) + 1):
            model = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)
            labels = model.labels_[sample]
            score = float(silhouette_score(x[sample], labels)) if len(np.unique(labels)) > 1 else -1.0
            if best is None or score > best[2]:
                best = (model, k, score)
        assert best is not None
        return best


def _rank_by_size(labels: np.ndarray, k: int) -> np.ndarray:
    """``rank[cluster]``: 0 for the largest cluster, 1 for the next, ..."""
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank
