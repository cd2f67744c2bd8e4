"""Methods that are ERM with another loss (and perhaps another sampler): one stage, whose selected model is deployed.

A subclass says only what differs: :meth:`OneStage.loss_fn` (and :meth:`OneStage.sampler`, :meth:`OneStage.extras`);
a :class:`PerExampleLoss` only how the batch's per-example cross-entropies combine into its loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.sampling import Sampler, UniformSampler
from debiaslab.engine.stage import LossOutput, Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.stages import method_stage

LossFn = Callable[[Batch, StepContext], LossOutput]
#: a batch's loss from its per-example cross-entropies (and the batch, for labels or groups)
Reduction = Callable[[Tensor, Batch], Tensor]


class OneStage(Method):
    """One training stage named after the method: ``loss_fn`` on ``sampler``'s epochs, the selected model deployed."""

    rule_free_training: ClassVar[bool] = True  # only the one stage selects on validation
    #: how several processes average gradients (``"allreduce"`` for losses DDP cannot run, e.g. a gradient penalty)
    grad_sync: ClassVar[str] = "ddp"

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        """The stage's loss of ``model`` on a batch; tensors it keeps (counts, weights) live on ``device``."""
        raise NotImplementedError

    def sampler(self, train: GroupDataset) -> Sampler:
        """Which examples each epoch visits (default: every example once, shuffled)."""
        return UniformSampler(len(train))

    def extras(self, train: GroupDataset) -> dict[str, Any]:
        """What the fit reports beside the stage history (e.g. the class margins it used)."""
        return {}

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        rule = self.selection_rule(val)

        def build() -> Stage:
            model = self.build_model(train)  # first, so initialisation does not depend on the method
            loss = self.loss_fn(model, train, trainer.device)
            return method_stage(
                self,
                self.name,
                train,
                rule,
                modules=model,
                loss_fn=loss,
                predict_fn=model,
                sampler=self.sampler(train),
                grad_sync=self.grad_sync,
            )

        stage, result = trainer.run_stage(self.name, build, train, val)
        return self.fit_result(train, stage.modules, [result], rule, self.extras(train))


class PerExampleLoss(OneStage):
    """One stage whose loss is the batch's per-example cross-entropies combined by :meth:`reduction`."""

    def reduction(self, train: GroupDataset, device: torch.device) -> Reduction:
        """How the per-example cross-entropies of a batch become its loss; tensors it keeps live on ``device``."""
        raise NotImplementedError

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        reduce = self.reduction(train, device)

        def loss(batch: Batch, ctx: StepContext) -> Tensor:
            return reduce(F.cross_entropy(model(batch.x), batch.y, reduction="none"), batch)

        return loss
