"""Focal loss (Lin, Goyal, Girshick, He, Dollár; ICCV 2017): cross-entropy scaled down on well-classified examples.

Per example ``FL = (1 − p_y)^γ · CE`` with ``p_y = exp(−CE)``, averaged over the batch, without class weights: the
form of SubpopBench (algorithms.py, ``Focal``) and of the LDAM-DRW code (kaidic/LDAM-DRW, losses.py). The examples
the model already fits (the bias-aligned majority) contribute little, the hard ones (often the minority) dominate.
Needs no attribute labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.one_stage import PerExampleLoss, Reduction
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform


def focal_from_ce(ce: Tensor, gamma: float) -> Tensor:
    """Per-example focal loss ``(1 − p_y)^γ · CE`` from the per-example cross-entropies (γ = 0: cross-entropy).

    ``1 − p_y`` is ``−expm1(−CE)``, exact for small CE, and floored at the dtype's smallest normal number: at
    ``p_y = 1`` the derivative of ``x^γ`` for γ < 1 is infinite and times CE = 0 would make the gradient NaN (a
    fitted example in float32); the floor changes the loss by less than that number."""
    tiny = torch.finfo(ce.dtype).tiny
    return (-torch.expm1(-ce)).clamp(min=tiny) ** gamma * ce


def focal_loss(logits: Tensor, y: Tensor, gamma: float) -> Tensor:
    """Per-example focal loss ``(1 − p_y)^γ · CE`` (γ = 0: cross-entropy)."""
    return focal_from_ce(F.cross_entropy(logits, y, reduction="none"), gamma)


@dataclass
class FocalHparams(TrainHparams):
    """Focal loss: ``gamma`` is the focusing exponent γ (0 gives cross-entropy)."""

    gamma: float = bounded(1.0, NON_NEGATIVE, "0 is plain cross-entropy")


@register_method("focal")
class Focal(PerExampleLoss):
    """Focal loss on the class labels (no class weights)."""

    summary = "focal loss (1 − p_y)^γ · CE: down-weights examples already fitted (Lin et al. 2017)"
    family = "class-imbalance losses"
    Hparams = FocalHparams
    #: searched by `debiaslab tune`: γ over SubpopBench's range 0.5 · 10^U(0, 1)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "gamma": loguniform(0.5, 5.0)}
    hparam_table: ClassVar[HparamTable] = {
        "*": {"gamma": Default(1.0, f"{SUBPOP_REGISTRY}: Focal gamma 1 (random search 0.5 · 10^U(0, 1))")},
    }

    def reduction(self, train: GroupDataset, device: torch.device) -> Reduction:
        gamma = float(self.hparams.gamma)
        return lambda ce, batch: focal_from_ce(ce, gamma).mean()
