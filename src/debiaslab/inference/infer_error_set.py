"""``error_set``: JTT's identification (Liu et al., ICML 2021; anniesch/jtt): ERM for T epochs; per class, the
examples it gets right and those it gets wrong are two pseudo-groups (the wrong ones the minority).

T, the identification learning rate and weight decay, the model and the optimiser are JTT's at the dataset's
preset (``debiaslab methods jtt``); any of them can be given as a setting (``--hp identify_epochs=2``)."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.inference.base import InferredGroups, Inferrer
from debiaslab.inference.registry import register_inferrer
from debiaslab.methods.stages import method_ce_stage, optim_with


@register_inferrer("error_set")
class ErrorSet(Inferrer):
    """Errors of an early-stopped ERM model, split per class (two pseudo-groups per class)."""

    summary = "errors of an early-stopped ERM model, per class (JTT's identification)"
    source = "JTT (Liu et al., ICML 2021), anniesch/jtt: the identification model's training errors"
    reference_method: ClassVar[str] = "jtt"

    def train_reference(self, train: GroupDataset, trainer: Trainer) -> nn.Module:
        hp = self.method.hparams
        optim = optim_with(hp, hp.identify_lr, hp.identify_weight_decay)
        return self.train_one_stage(
            "identify",
            train,
            trainer,
            lambda model: method_ce_stage(
                self.method, "identify", model, train, "last", epochs=hp.identify_epochs, optim=optim
            ),
        )

    def assign(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        return self.error_groups(reference, splits, trainer)
