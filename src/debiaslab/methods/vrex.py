"""V-REx, Risk Extrapolation (Krueger et al., ICML 2021): penalise the variance of the environments' risks.

Loss: the mean over environments of each environment's cross-entropy plus ``λ`` times their (population) variance,
with λ = 1 for the first ``anneal_steps`` steps (DomainBed algorithms.py, ``VREx``; SubpopBench has no V-REx).
Environments are the attribute values of the batch (:mod:`debiaslab.methods.environments`).
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
from debiaslab.methods.environments import AnnealedPenaltyHparams, environment_masks
from debiaslab.methods.hparams import Default, HparamTable
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.presets import DOMAINBED_REGISTRY, SUBPOP_ALGORITHMS
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, intrange, loguniform


def risk_variance(risks: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance of the environments' risks."""
    mean = risks.mean()
    return mean, ((risks - mean) ** 2).mean()


@dataclass
class VRExHparams(AnnealedPenaltyHparams):
    """V-REx: ``penalty_weight`` λ on the risk variance after ``anneal_steps`` optimiser steps (1 before)."""

    penalty_weight: float = 10.0
    anneal_steps: int = 500


@register_method("vrex")
class VREx(OneStage):
    """Mean environment risk plus the annealed variance of the environment risks."""

    summary = "mean environment risk + λ · variance of the risks, environments = attribute values (Krueger 2021)"
    family = "invariance"
    Hparams = VRExHparams
    requires = Requirements(train_attrs=True)
    #: searched by `debiaslab tune`: DomainBed's ranges, λ 10^U(−1, 5), anneal 10^U(0, 4) steps
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "penalty_weight": loguniform(0.1, 1e5),
        "anneal_steps": intrange(1, 10_000, log=True),
    }
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "penalty_weight": Default(10.0, f"{DOMAINBED_REGISTRY}: VREx vrex_lambda 1e1"),
            "anneal_steps": Default(500, f"{DOMAINBED_REGISTRY}: VREx vrex_penalty_anneal_iters 500"),
            "environments": Default("attr", f"{SUBPOP_ALGORITHMS}: environments are the attribute values (IRM)"),
        },
    }

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        hp: VRExHparams = self.hparams  # type: ignore[assignment]

        def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
            logits = model(batch.x)
            masks = environment_masks(batch, hp.environments)
            risks = torch.stack([F.cross_entropy(logits[m], batch.y[m]) for m in masks])
            mean, variance = risk_variance(risks)
            total = mean + hp.weight_at(ctx.step) * variance
            return {"loss": total, "nll": mean.detach(), "penalty": variance.detach()}

        return loss
