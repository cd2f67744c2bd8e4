"""V-REx, Risk Extrapolation (Krueger et al., ICML 2021): penalise the variance of the environments' risks.

Loss: the mean over environments of each environment's cross-entropy plus ``λ`` times their (population) variance,
with λ = 1 for the first ``anneal_steps`` steps (DomainBed algorithms.py, ``VREx``; SubpopBench has no V-REx).
Environments are the attribute values of the batch (:mod:`debiaslab.methods.environments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from debiaslab.methods.environments import AnnealedPenalty, AnnealedPenaltyHparams, environment_risks
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, bounded
from debiaslab.methods.presets import DOMAINBED_REGISTRY, SUBPOP_ALGORITHMS
from debiaslab.methods.registry import register_method


def risk_variance(risks: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance of the environments' risks."""
    mean = risks.mean()
    return mean, ((risks - mean) ** 2).mean()


@dataclass
class VRExHparams(AnnealedPenaltyHparams):
    """V-REx: ``penalty_weight`` λ on the risk variance after ``anneal_steps`` optimiser steps (1 before)."""

    penalty_weight: float = bounded(10.0, NON_NEGATIVE)
    anneal_steps: int = bounded(500, NON_NEGATIVE)


@register_method("vrex")
class VREx(AnnealedPenalty):
    """Mean environment risk plus the annealed variance of the environment risks."""

    summary = "mean environment risk + λ · variance of the risks, environments = attribute values (Krueger 2021)"
    Hparams = VRExHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "penalty_weight": Default(10.0, f"{DOMAINBED_REGISTRY}: VREx vrex_lambda 1e1"),
            "anneal_steps": Default(500, f"{DOMAINBED_REGISTRY}: VREx vrex_penalty_anneal_iters 500"),
            "environments": Default("attr", f"{SUBPOP_ALGORITHMS}: environments are the attribute values (IRM)"),
        },
    }

    @staticmethod
    def risk_and_penalty(logits: Tensor, y: Tensor, masks: list[Tensor]) -> tuple[Tensor, Tensor]:
        return risk_variance(environment_risks(logits, y, masks))
