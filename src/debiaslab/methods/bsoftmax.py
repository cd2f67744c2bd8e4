"""Balanced softmax (Ren et al., NeurIPS 2020) / logit adjustment (Menon et al., ICLR 2021).

Training adds ``τ · log n_y`` (the log class prior, up to a constant) to every logit before the cross-entropy;
prediction uses the raw logits. The model so learns the class-balanced posterior instead of the training one: a
class that is rare in training is not penalised at test time. τ = 1 is the balanced softmax of SubpopBench
(algorithms.py, ``BSoftmax``) and of Menon et al.'s logit-adjusted loss at its default; other τ are Menon et al.'s
family. Needs no attribute labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import StepContext
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.presets import SUBPOP_ALGORITHMS
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace


def log_prior(class_counts: Tensor) -> Tensor:
    """``log π_y`` from the training counts (an empty class counts as one example, so its prior stays finite)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1)
    return (counts / counts.sum()).log().to(torch.float32)


@dataclass
class BSoftmaxHparams(TrainHparams):
    """Balanced softmax / logit adjustment: ``tau`` scales the log prior added to the training logits."""

    tau: float = bounded(1.0, NON_NEGATIVE, "0 is plain cross-entropy, 1 the balanced softmax")


@register_method("bsoftmax")
class BalancedSoftmax(OneStage):
    """Cross-entropy on ``z + τ log π_y`` in training, raw logits at prediction."""

    summary = "balanced softmax / logit adjustment: log class priors added to the logits in training (Ren 2020)"
    family = "class-imbalance losses"
    Hparams = BSoftmaxHparams
    #: searched by `debiaslab tune`: learning rate and weight decay only, as SubpopBench searches BSoftmax
    search_space: ClassVar[SearchSpace] = dict(COMMON_SPACE)
    hparam_table: ClassVar[HparamTable] = {
        "*": {"tau": Default(1.0, f"{SUBPOP_ALGORITHMS}: BSoftmax adds log n_y (τ = 1); Menon et al. 2021 default")},
    }

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        shift = (float(self.hparams.tau) * log_prior(train.class_counts)).to(device)

        def loss(batch: Batch, ctx: StepContext) -> Tensor:
            logits = model(batch.x)
            return F.cross_entropy(logits + shift.to(logits.dtype), batch.y)

        return loss

    def extras(self, train: GroupDataset) -> dict[str, Any]:
        return {"log_prior": log_prior(train.class_counts).tolist()}
