"""CRT and ReWeightCRT (Kang et al., ICLR 2020, "Decoupling representation and classifier"): re-train the classifier
of a trained model on a balanced view of the training set.

The representation of an ERM model is kept (frozen) and a freshly initialised linear classifier is trained on it with
class-balanced sampling (``crt``, classifier re-training) or with the cross-entropy reweighted by inverse class
frequency (``reweight_crt``). SubpopBench (algorithms.py, ``CRT`` / ``ReWeightCRT``; train.py) balances *groups* when
training attributes are available: ``crt_group`` and ``reweight_crt_group``. As there, the classifier is trained with
the base run's optimiser settings for as long as the base (``head_epochs`` changes it), its epoch selected on
validation; ``reweight_crt*`` weights are ``1/n`` normalised to sum to the number of non-empty classes (groups), the
normalisation of SubpopBench's ``ReWeight``. The base ERM model is trained here (stage ``erm``, last epoch) or read
from ``base_run``; the head trains on its embeddings (:mod:`debiaslab.methods.last_layer`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import WeightedSampler, inverse_frequency_weights
from debiaslab.engine.stage import Stage
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.base import Requirements
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.last_layer import LastLayer, LastLayerHparams
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace
from debiaslab.methods.stages import method_ce_stage

SUBPOP_TRAIN = "SubpopBench (YyzHarry/SubpopBench, subpopbench/train.py)"
_ROW: dict[str, Default] = {
    "head_epochs": Default(None, f"{SUBPOP_TRAIN}: the classifier is re-trained for the base run's number of steps"),
    "head_lr": Default(None, f"{SUBPOP_REGISTRY}: one lr for both stages"),
    "head_weight_decay": Default(None, f"{SUBPOP_REGISTRY}: one weight decay for both stages"),
}


def unit_weights(units: Tensor, n_units: int) -> Tensor:
    """``1/n_u`` per unit (class or group), normalised to sum to the number of non-empty units (SubpopBench's
    ``ReWeight``); a per-unit table."""
    counts = torch.bincount(units, minlength=n_units).to(torch.float64)
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return (weights / weights.sum() * (counts > 0).sum()).to(torch.float32)


class ClassifierRetraining(LastLayer):
    """Re-train a fresh classifier on frozen ERM features, balanced by ``scheme`` over ``by``."""

    Hparams: ClassVar[type[TrainHparams]] = LastLayerHparams
    head_name: ClassVar[str] = "crt"
    by: ClassVar[Literal["class", "group"]] = "class"
    scheme: ClassVar[Literal["resample", "reweight"]] = "resample"
    #: searched by `debiaslab tune`: learning rate and weight decay (of both stages), as SubpopBench searches CRT
    search_space: ClassVar[SearchSpace] = dict(COMMON_SPACE)
    hparam_table: ClassVar[HparamTable] = {"*": dict(_ROW)}

    def units(self, train: GroupDataset) -> tuple[Tensor, int]:
        return (train.y, train.n_classes) if self.by == "class" else (train.group, train.n_groups)

    def head_stage(self, head: nn.Linear, train: GroupDataset, rule: str, trainer: Trainer) -> Stage:
        hp: LastLayerHparams = self.hparams  # type: ignore[assignment]
        units, n_units = self.units(train)
        sampler, weights = None, None
        if self.scheme == "resample":
            sampler = WeightedSampler(inverse_frequency_weights(units, n_units), num_samples=len(train))
        else:
            weights = unit_weights(units, n_units)[units].to(trainer.device)
        return method_ce_stage(
            self,
            self.head_name,
            head,
            train,
            rule,
            epochs=hp.head_epochs or hp.epochs,
            optim=hp.head_optim(),
            sparsity=None,
            sampler=sampler,
            example_weights=weights,
        )

    def head_extras(self, train: GroupDataset) -> dict[str, Any]:
        return {"by": self.by, "scheme": self.scheme}


@register_method("crt")
class CRT(ClassifierRetraining):
    """Classifier re-training with class-balanced sampling (Kang et al. 2020)."""

    summary = "re-train a fresh last layer of an ERM model with class-balanced sampling (Kang et al. 2020)"


@register_method("crt_group")
class CRTGroup(ClassifierRetraining):
    """Classifier re-training with group-balanced sampling (SubpopBench's CRT with training attributes)."""

    summary = "re-train a fresh last layer of an ERM model with group-balanced sampling (needs training groups)"
    requires = Requirements(train_attrs=True)
    by = "group"


@register_method("reweight_crt")
class ReweightCRT(ClassifierRetraining):
    """Classifier re-training with inverse class-frequency loss weights."""

    summary = "re-train a fresh last layer of an ERM model with 1/n_y loss weights (ReWeightCRT)"
    scheme = "reweight"


@register_method("reweight_crt_group")
class ReweightCRTGroup(ClassifierRetraining):
    """Classifier re-training with inverse group-frequency loss weights (SubpopBench's ReWeightCRT)."""

    summary = "re-train a fresh last layer of an ERM model with 1/n_g loss weights (needs training groups)"
    requires = Requirements(train_attrs=True)
    by, scheme = "group", "reweight"
