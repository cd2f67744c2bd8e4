"""Environments for the invariance methods (IRM, VREx, CORAL, MMD): the batch split by attribute value or by group.

SubpopBench runs these domain-generalisation methods with the attribute as the environment (algorithms.py,
``return_attributes``): each attribute value present in the batch is one environment. ``environments = "group"``
uses the groups (class × attribute) instead. Either needs the attribute of every training example.
IRM and VREx switch their penalty weight from 1 to λ after ``anneal_steps`` optimiser steps of the stage, as DomainBed
and SubpopBench do (DomainBed also restarts Adam at that step, SubpopBench does not; neither is done here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import StepContext
from debiaslab.methods.base import Requirements
from debiaslab.methods.hparams import NON_NEGATIVE, TrainHparams, bounded, one_of
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, intrange, loguniform

ENVIRONMENTS = ("attr", "group")


def environment_masks(batch: Batch, by: str) -> list[Tensor]:
    """One boolean mask per environment present in the batch (attribute values or groups), in increasing order."""
    labels = batch.attr if by == "attr" else batch.group
    return [labels == value for value in torch.unique(labels)]


def environment_risks(logits: Tensor, y: Tensor, masks: list[Tensor]) -> Tensor:
    """Each environment's mean cross-entropy (one per mask, in mask order), for the whole batch in one pass."""
    env = torch.stack(masks).to(torch.int64).argmax(0)
    losses = F.cross_entropy(logits, y, reduction="none")
    totals = logits.new_zeros(len(masks)).index_add(0, env, losses)
    return totals / torch.bincount(env, minlength=len(masks)).to(logits.dtype)


@dataclass
class EnvironmentHparams(TrainHparams):
    """``environments``: ``attr`` (each attribute value; SubpopBench) or ``group`` (each class × attribute)."""

    environments: str = one_of("attr", ENVIRONMENTS)


@dataclass
class AnnealedPenaltyHparams(EnvironmentHparams):
    """A penalty weighted 1 for the first ``anneal_steps`` optimiser steps, then ``penalty_weight`` (λ)."""

    penalty_weight: float = bounded(1.0, NON_NEGATIVE)
    anneal_steps: int = bounded(0, NON_NEGATIVE)

    def weight_at(self, step: int) -> float:
        """The penalty weight at 0-based optimiser step ``step`` of the stage."""
        return self.penalty_weight if step >= self.anneal_steps else 1.0


class AnnealedPenalty(OneStage):
    """Mean environment risk plus a penalty weighted by :meth:`AnnealedPenaltyHparams.weight_at` (IRM, VREx)."""

    family = "invariance"
    requires = Requirements(train_attrs=True)
    #: searched by `debiaslab tune`: DomainBed's ranges (SubpopBench's too, for IRM), λ 10^U(−1, 5), anneal
    #: 10^U(0, 4) steps
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "penalty_weight": loguniform(0.1, 1e5),
        "anneal_steps": intrange(1, 10_000, log=True),
    }

    @staticmethod
    def risk_and_penalty(logits: Tensor, y: Tensor, masks: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The mean environment risk and the penalty of a batch's ``logits``, one boolean mask per environment."""
        raise NotImplementedError

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        hp: AnnealedPenaltyHparams = self.hparams  # type: ignore[assignment]
        terms = self.risk_and_penalty

        def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
            nll, penalty = terms(model(batch.x), batch.y, environment_masks(batch, hp.environments))
            return {"loss": nll + hp.weight_at(ctx.step) * penalty, "nll": nll.detach(), "penalty": penalty.detach()}

        return loss
