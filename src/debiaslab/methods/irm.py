"""IRM, Invariant Risk Minimization (Arjovsky, Bottou, Gulrajani, Lopez-Paz; 2019), as IRMv1.

Loss: the mean over environments of each environment's cross-entropy, plus ``λ`` times the mean over environments of
``‖∇_{w|w=1} R^e(w · f)‖²``, the squared gradient of the environment's risk with respect to a dummy scale on the
logits: a classifier that is optimal in every environment at once has zero gradient there. The squared norm is
estimated without bias as the product of the gradients on the even and the odd examples of the environment
(DomainBed and SubpopBench algorithms.py, ``IRM._irm_penalty``). λ is 1 for the first ``anneal_steps`` steps.
The scale gradient has a closed form, ``d/dw CE(w · z, y)|_{w=1} = Σ_k p_k z_k − z_y``, so the whole batch's risks
and penalties are computed at once instead of by double back-propagation per environment (the same values and
gradients; :func:`irm_penalty` keeps the definition, a test holds the two together).
Environments are the attribute values of the batch (:mod:`debiaslab.methods.environments`); an environment with a
single example in a batch adds to the risk but not to the penalty (its halves would be empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from debiaslab.methods.environments import AnnealedPenalty, AnnealedPenaltyHparams, environment_risks
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, bounded
from debiaslab.methods.presets import DOMAINBED_REGISTRY, SUBPOP_ALGORITHMS, SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method


def irm_penalty(logits: Tensor, y: Tensor) -> Tensor:
    """Unbiased estimate of ``‖∇_{w|w=1} CE(w · logits, y)‖²``: the product of the gradients on the even and the odd
    examples (differentiable: the model is trained through it)."""
    scale = torch.ones((), device=logits.device, dtype=logits.dtype, requires_grad=True)
    first = F.cross_entropy(logits[::2] * scale, y[::2])
    second = F.cross_entropy(logits[1::2] * scale, y[1::2])
    (g1,) = torch.autograd.grad(first, [scale], create_graph=True)
    (g2,) = torch.autograd.grad(second, [scale], create_graph=True)
    return g1 * g2


def irm_risk_and_penalty(logits: Tensor, y: Tensor, masks: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The mean over environments of each one's cross-entropy, and the mean over environments with two or more
    examples of :func:`irm_penalty` on that environment (its even and odd examples in batch order), for the whole
    batch in one pass."""
    member = torch.stack(masks)  # (environments, batch), one True per column
    env = member.to(torch.int64).argmax(0)
    n_env = len(masks)
    count = member.sum(1)
    nll = environment_risks(logits, y, masks).mean()
    grad = (torch.softmax(logits, 1) * logits).sum(1) - logits.gather(1, y.view(-1, 1)).squeeze(1)
    odd = (member.cumsum(1) - 1).gather(0, env.view(1, -1)).squeeze(0) % 2  # position within its environment
    slot = env * 2 + odd
    halves = logits.new_zeros(2 * n_env).index_add(0, slot, grad)
    sizes = torch.bincount(slot, minlength=2 * n_env).to(logits.dtype)
    means = (halves / sizes.clamp(min=1)).view(n_env, 2)
    paired = count > 1
    if not bool(paired.any()):
        return nll, logits.new_zeros(())
    return nll, (means[:, 0] * means[:, 1])[paired].mean()


@dataclass
class IRMHparams(AnnealedPenaltyHparams):
    """IRM: ``penalty_weight`` λ after ``anneal_steps`` optimiser steps (1 before), environments by ``environments``."""

    penalty_weight: float = bounded(100.0, NON_NEGATIVE)
    anneal_steps: int = bounded(500, NON_NEGATIVE)


@register_method("irm")
class IRM(AnnealedPenalty):
    """Cross-entropy averaged over environments plus the annealed IRMv1 gradient penalty."""

    summary = "mean environment risk + λ · IRMv1 gradient penalty, environments = attribute values (Arjovsky 2019)"
    Hparams = IRMHparams
    grad_sync: ClassVar[str] = "allreduce"  # the penalty differentiates a gradient: DistributedDataParallel cannot
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "penalty_weight": Default(100.0, f"{SUBPOP_REGISTRY}: IRM irm_lambda 1e2; same in {DOMAINBED_REGISTRY}"),
            "anneal_steps": Default(500, f"{SUBPOP_REGISTRY}: IRM irm_penalty_anneal_iters 500; same in DomainBed"),
            "environments": Default("attr", f"{SUBPOP_ALGORITHMS}: IRM's environments are the attribute values"),
        },
    }

    @staticmethod
    def risk_and_penalty(logits: Tensor, y: Tensor, masks: list[Tensor]) -> tuple[Tensor, Tensor]:
        return irm_risk_and_penalty(logits, y, masks)
