"""``gce``: the biased branch of LfF (Nam et al., NeurIPS 2020) and DFA (Lee et al., NeurIPS 2021): a model trained
with generalised cross-entropy, ``(1 - p_y^q) / q``, which weights the examples it already fits and so amplifies
the easy cue. Its errors (default), or its per-example loss above a per-class quantile, mark the minority.

The model, optimiser and learning rate are LfF's at the dataset's preset (``debiaslab methods lff``); q = 0.7 is the
LfF paper's. The papers train the biased model for the whole run beside the debiased one; as an inferrer it trains
alone for ``epochs`` (unset: JTT's identification length at the dataset preset, so that ``gce`` and ``error_set``
differ only in the loss)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.inference.base import InferredGroups, Inferrer, SplitGroups
from debiaslab.inference.registry import register_inferrer
from debiaslab.methods.hparams import Default, HparamTable
from debiaslab.methods.lff import generalized_cross_entropy
from debiaslab.methods.registry import get_method
from debiaslab.methods.stages import method_stage

LFF_Q = "LfF paper (Nam et al. 2020): GCE with q = 0.7 for the biased model"
OURS_EPOCHS = "ours: unset = JTT's identification epochs at the dataset preset (the same budget as error_set)"
OURS_ERRORS = "ours: the biased model's errors, as JTT and BAM read their reference models"


@dataclass
class GCEHparams:
    """Attributes:
    q: the GCE exponent.
    epochs: epochs of the GCE model (None: JTT's ``identify_epochs`` at the dataset preset).
    loss_quantile: None marks the model's errors as the minority; a value in (0, 1) marks, per class, the examples
        whose cross-entropy under the GCE model is above that quantile of the class's losses.
    """

    q: float = 0.7
    epochs: int | None = None
    loss_quantile: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.q, int | float) and 0 < self.q <= 1):
            raise ConfigError(f"q {self.q!r} must be in (0, 1]")
        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 1):
            raise ConfigError(f"epochs {self.epochs!r} must be an integer >= 1 (or unset)")
        if self.loss_quantile is not None and not (0 < self.loss_quantile < 1 and math.isfinite(self.loss_quantile)):
            raise ConfigError(f"loss_quantile {self.loss_quantile!r} must be in (0, 1) (or unset for errors)")


@register_inferrer("gce")
class GCE(Inferrer):
    """Errors (or high-loss examples) of a generalised-cross-entropy model, per class."""

    summary = "errors of a generalised-CE (q=0.7) biased model, per class (LfF / DFA's biased branch)"
    source = (
        "LfF (Nam et al., NeurIPS 2020; alinlab/LfF) and DFA (Lee et al., NeurIPS 2021): the GCE-trained biased model"
    )
    Hparams: ClassVar[type] = GCEHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "q": Default(0.7, LFF_Q),
            "epochs": Default(None, OURS_EPOCHS),
            "loss_quantile": Default(None, OURS_ERRORS),
        }
    }
    reference_method: ClassVar[str] = "lff"

    def epochs(self) -> int:
        if self.hparams.epochs is not None:
            return int(self.hparams.epochs)
        return int(get_method("jtt")(dataset=self.dataset).hparams.identify_epochs)

    def train_reference(self, train: GroupDataset, trainer: Trainer) -> nn.Module:
        q = float(self.hparams.q)

        def stage(model: nn.Module) -> Stage:
            def loss(batch: Batch, ctx: StepContext) -> Tensor:
                return generalized_cross_entropy(model(batch.x), batch.y, q).mean()

            return method_stage(
                self.method, "gce", train, "last", modules=model, loss_fn=loss, predict_fn=model, epochs=self.epochs()
            )

        return self.train_one_stage("gce", train, trainer, stage)

    def assign(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        quantile = self.hparams.loss_quantile
        if quantile is None:
            return self.error_groups(reference, splits, trainer)
        out = {}
        for name, ds in splits.items():
            losses = F.cross_entropy(self.logits(reference, ds, trainer), ds.y, reduction="none")
            high = torch.zeros(len(ds), dtype=torch.bool)
            for c in range(ds.n_classes):
                members = ds.y == c
                if bool(members.any()):
                    high[members] = losses[members] > torch.quantile(losses[members], float(quantile))
            out[name] = SplitGroups(pseudo=high.long(), minority=high)
        return InferredGroups(self.name, 2, out)
