"""Class-balanced loss (Cui, Jia, Lin, Song, Belongie; CVPR 2019): weight each class by its *effective number*.

A class of ``n`` examples counts as ``(1 − β^n) / (1 − β)`` distinct ones, so its examples get weight
``w = (1 − β) / (1 − β^n)``; β = 0 is plain cross-entropy, β → 1 inverse frequency. The weights are normalised to
sum to the number of classes and the loss is the batch mean of ``w_y · CE``, as in SubpopBench (algorithms.py,
``CBLoss``). ``cb_loss`` weights classes (the paper; no attribute labels); ``cb_loss_group`` weights the groups
(class × attribute), which is what SubpopBench's ``CBLoss`` does when training attributes are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.errors import ConfigError
from debiaslab.methods.base import Requirements
from debiaslab.methods.hparams import Bounds, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.one_stage import PerExampleLoss, Reduction
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, categorical

CUI_PAPER = "class-balanced loss paper (Cui et al., CVPR 2019), β searched in {0.9, 0.99, 0.999, 0.9999}"


def effective_number_weights(counts: Tensor, beta: float) -> Tensor:
    """``(1 − β) / (1 − β^n_k)`` per unit (class or group), normalised to sum to the number of non-empty units;
    empty units get 0."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    present = counts > 0
    if not bool(present.any()):
        raise ConfigError("class-balanced loss needs at least one training example")
    effective = 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)
    weights = torch.where(present, (1.0 - beta) / effective.clamp(min=1e-300), torch.zeros_like(counts))
    return (weights / weights.sum() * present.sum()).to(torch.float32)


@dataclass
class CBHparams(TrainHparams):
    """Class-balanced loss: ``beta`` in [0, 1) sets the effective number ``(1 − β^n) / (1 − β)``."""

    beta: float = bounded(0.9999, Bounds(0.0, 1.0, high_open=True), "0: plain cross-entropy, near 1: 1/n weights")


class ClassBalancedLoss(PerExampleLoss):
    """Cross-entropy weighted by effective numbers of the classes (``by = "class"``) or groups (``"group"``)."""

    family = "class-imbalance losses"
    Hparams = CBHparams
    by: ClassVar[Literal["class", "group"]] = "class"
    #: searched by `debiaslab tune`: β at the decades of SubpopBench's range 1 − 10^U(−5, −2)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "beta": categorical(0.99, 0.999, 0.9999, 0.99999)}
    hparam_table: ClassVar[HparamTable] = {
        "*": {"beta": Default(0.9999, f"{SUBPOP_REGISTRY}: CBLoss beta 0.9999 (search 1 − 10^U(−5, −2)); {CUI_PAPER}")},
    }

    def unit_weights(self, train: GroupDataset) -> tuple[Tensor, Tensor]:
        """Each training unit's weight and each example's unit (its class or its group)."""
        counts = train.class_counts if self.by == "class" else train.group_counts
        units = train.y if self.by == "class" else train.group
        return effective_number_weights(counts, float(self.hparams.beta)), units

    def reduction(self, train: GroupDataset, device: torch.device) -> Reduction:
        weights = self.unit_weights(train)[0].to(device)
        by_class = self.by == "class"
        return lambda ce, batch: (weights[batch.y if by_class else batch.group] * ce).mean()

    def extras(self, train: GroupDataset) -> dict[str, Any]:
        return {"unit_weights": self.unit_weights(train)[0].tolist(), "by": self.by}


@register_method("cb_loss")
class CBLoss(ClassBalancedLoss):
    """Class-balanced loss on the classes (Cui et al. 2019); needs no attribute labels."""

    summary = "cross-entropy weighted by class effective numbers (1 − β)/(1 − β^n_y) (Cui et al. 2019)"
    by = "class"


@register_method("cb_loss_group")
class CBLossGroup(ClassBalancedLoss):
    """Class-balanced loss on the groups, as SubpopBench's ``CBLoss`` with training attributes."""

    summary = "cross-entropy weighted by group effective numbers (1 − β)/(1 − β^n_g) (needs training groups)"
    requires = Requirements(train_attrs=True)
    by = "group"
