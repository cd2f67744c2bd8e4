"""Deep CORAL (Sun & Saenko, ECCV-W 2016) as a domain-generalisation penalty: match the environments' features.

Loss: cross-entropy on the batch plus ``γ`` times the mean over pairs of environments of a distance between their
penultimate features ``φ(x)`` (the backbone's ``features``). CORAL's distance is the mean squared difference of the
feature means plus that of the feature covariances (unbiased, ``/(n − 1)``) -- DomainBed's and SubpopBench's
``AbstractMMD`` with the ``mean_cov`` kernel (algorithms.py, ``CORAL``). :mod:`debiaslab.methods.mmd` swaps in a
Gaussian-kernel MMD. Environments are the attribute values of the batch (:mod:`debiaslab.methods.environments`); an
environment needs two examples in the batch for a covariance, one with fewer is left out of the penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import StepContext
from debiaslab.methods.base import Requirements
from debiaslab.methods.environments import EnvironmentHparams, environment_masks
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, bounded
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.presets import DOMAINBED_REGISTRY, SUBPOP_ALGORITHMS, SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform


def coral_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference of the feature means plus that of the (unbiased) feature covariances."""
    mean_a, mean_b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)
    ca, cb = a - mean_a, b - mean_b
    cov_a, cov_b = ca.t() @ ca / (len(a) - 1), cb.t() @ cb / (len(b) - 1)
    return (mean_a - mean_b).pow(2).mean() + (cov_a - cov_b).pow(2).mean()


@dataclass
class MatchingHparams(EnvironmentHparams):
    """Feature matching: ``penalty_weight`` γ on the mean pairwise distance between environments."""

    penalty_weight: float = bounded(1.0, NON_NEGATIVE)


_MATCHING_ROW: dict[str, Default] = {
    "penalty_weight": Default(
        1.0, f"{SUBPOP_REGISTRY}: MMD/CORAL mmd_gamma 1 (random search 10^U(−1, 1)); same in {DOMAINBED_REGISTRY}"
    ),
    "environments": Default("attr", f"{SUBPOP_ALGORITHMS}: AbstractMMD matches the features of the attribute values"),
}


class FeatureMatching(OneStage):
    """Cross-entropy plus ``γ`` · mean pairwise :meth:`distance` between environments' features."""

    family = "invariance"
    Hparams = MatchingHparams
    requires = Requirements(train_attrs=True)
    #: the fewest examples an environment needs in a batch to enter the penalty
    min_examples: ClassVar[int] = 2
    #: searched by `debiaslab tune`: γ over SubpopBench's and DomainBed's range 10^U(−1, 1)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "penalty_weight": loguniform(0.1, 10.0)}
    hparam_table: ClassVar[HparamTable] = {"*": dict(_MATCHING_ROW)}

    @staticmethod
    def distance(a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    @classmethod
    def penalty(cls, phi: Tensor, masks: list[Tensor]) -> Tensor | None:
        """Mean of :meth:`distance` over the pairs of environments (``masks`` over the rows of ``phi``, each with
        at least :attr:`min_examples`); None with fewer than two. A subclass may compute it in one pass."""
        pairs = [cls.distance(phi[a], phi[b]) for a, b in combinations(masks, 2)]
        return torch.stack(pairs).mean() if pairs else None

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        hp: MatchingHparams = self.hparams  # type: ignore[assignment]
        features, head = model.features, model.head  # the backbone contract (debiaslab.models.base)
        penalty_of, least = self.penalty, self.min_examples

        def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
            phi = features(batch.x)
            nll = F.cross_entropy(head(phi), batch.y)
            masks = [m for m in environment_masks(batch, hp.environments) if int(m.sum()) >= least]
            found = penalty_of(phi, masks)
            penalty = nll.new_zeros(()) if found is None else found
            return {"loss": nll + hp.penalty_weight * penalty, "nll": nll.detach(), "penalty": penalty.detach()}

        return loss


@register_method("coral")
class CORAL(FeatureMatching):
    """Match the means and covariances of the environments' features."""

    summary = "CE + γ · distance between environments' feature means and covariances (Deep CORAL, Sun 2016)"

    @staticmethod
    def distance(a: Tensor, b: Tensor) -> Tensor:
        return coral_distance(a, b)
