"""``amplified``: BAM's bias amplification (Li et al., 2023; motivationss/BAM): stage 1 trains the network on
``f(x) + λ·b_i`` with a learnable auxiliary logit vector per training example; the network alone, after T epochs,
has absorbed the easy cue, and its errors are the minority (two pseudo-groups per class).

λ, T, the loss and the optimiser are BAM's at the dataset's preset (``debiaslab methods bam``)."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.inference.base import InferredGroups, Inferrer
from debiaslab.inference.registry import register_inferrer
from debiaslab.methods.bam import AuxiliaryLogits, amplify_stage


@register_inferrer("amplified")
class Amplified(Inferrer):
    """Errors of BAM's amplified (auxiliary-logit) model, per class."""

    summary = "errors of BAM's auxiliary-logit amplified model, per class"
    source = "BAM (Li et al., 2023), motivationss/BAM: the stage-1 model's errors"
    reference_method: ClassVar[str] = "bam"

    def train_reference(self, train: GroupDataset, trainer: Trainer) -> nn.Module:
        hp = self.method.hparams
        return self.train_one_stage(
            "amplify",
            train,
            trainer,
            lambda model: amplify_stage(
                model,
                AuxiliaryLogits(len(train), train.n_classes),
                aux_lambda=hp.aux_lambda,
                loss=hp.amplify_loss,
                epochs=hp.amplify_epochs,
                batch_size=hp.batch_size,
                optim=hp.optim_config(),
            ),
        )

    def assign(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        return self.error_groups(reference, splits, trainer)
