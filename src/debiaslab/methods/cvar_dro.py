"""CVaR-DRO (Levy, Carmon, Duchi, Sidford; NeurIPS 2020): minimise the mean of the worst α fraction of the losses.

Per batch of m losses the adversary's best response puts weight ``1/(αm)`` on the ``⌊αm⌋`` largest losses and the
remainder ``1 − ⌊αm⌋/(αm)`` on the next one (the conditional value at risk at level α, no entropy regulariser), and
the model minimises the weighted sum; the weights are constants (no gradient through the sort). This is the
``cvar`` geometry of the authors' fast-dro code (daniellevy/fast-dro, robust_losses.py) with ``reg = 0``, as
SubpopBench runs it (algorithms.py, ``CVaRDRO``). α = 1 is ERM. Needs no attribute labels: the worst examples stand
in for the worst group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.methods.hparams import Bounds, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.one_stage import PerExampleLoss, Reduction
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform


@torch.no_grad()
def cvar_weights(losses: Tensor, alpha: float) -> Tensor:
    """The CVaR_α best response over one batch: ``1/(αm)`` on the ``⌊αm⌋`` largest losses, the rest of the unit
    mass on the next largest, 0 elsewhere (sums to 1)."""
    m = losses.numel()
    cutoff = min(math.floor(alpha * m), m)
    weights = torch.zeros_like(losses, dtype=torch.float32)
    order = torch.argsort(losses.detach().float(), descending=True)
    weights[order[:cutoff]] = 1.0 / (alpha * m)
    if cutoff < m:
        weights[order[cutoff]] = 1.0 - cutoff / (alpha * m)
    return weights


def cvar_loss(losses: Tensor, alpha: float) -> Tensor:
    """``Σ p_i ℓ_i`` with ``p`` the CVaR_α best response (α = 1: the mean)."""
    return (cvar_weights(losses, alpha).to(losses.dtype) * losses).sum()


@dataclass
class CVaRHparams(TrainHparams):
    """CVaR-DRO: ``alpha`` in (0, 1] is the fraction of the batch's largest losses that is minimised."""

    alpha: float = bounded(0.1, Bounds(0.0, 1.0, low_open=True), "1 is ERM")


@register_method("cvar_dro")
class CVaRDRO(PerExampleLoss):
    """Minimise the conditional value at risk of the per-example losses (batch estimate)."""

    summary = "minimise the mean of the worst α fraction of per-example losses (CVaR-DRO, Levy et al. 2020)"
    family = "robust optimisation"
    Hparams = CVaRHparams
    #: searched by `debiaslab tune`: α over SubpopBench's range 10^U(−2, 0)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "alpha": loguniform(0.01, 1.0)}
    hparam_table: ClassVar[HparamTable] = {
        "*": {"alpha": Default(0.1, f"{SUBPOP_REGISTRY}: CVaRDRO joint_dro_alpha 0.1 (random search 10^U(−2, 0))")},
    }

    def reduction(self, train: GroupDataset, device: torch.device) -> Reduction:
        alpha = float(self.hparams.alpha)
        return lambda ce, batch: cvar_loss(ce, alpha)
