"""``eiil``: Environment Inference for Invariant Learning (Creager, Jacobsen, Zemel; ICML 2021; ecreager/eiil).

With a reference model's logits fixed, learn a soft assignment ``q_i = sigmoid(u_i)`` of every example to
environment 1 (else 2) that *maximises* the IRMv1 penalty of the reference,
``sum_e (d/dw R^e(w * logits) at w = 1)^2`` with ``R^1 = mean_i q_i l_i``, ``R^2 = mean_i (1 - q_i) l_i``
(``l_i`` the cross-entropy; the means over all examples, as the official ``split_data_opt``); Adam on ``u`` from a
standard-normal start; hard assignment ``q_i > 0.5``. The derivative of ``l_i(w * logits)`` at ``w = 1`` is
``E_softmax[logits] - logits_y``, so each step is one weighted sum. The environment where the reference's loss is
higher is the minority; pseudo-groups are (class, environment). Validation examples get their own assignment,
optimised the same way on the reference's validation logits.

The reference is JTT's identification model at the dataset preset (as ``error_set``), or a given run's model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.inference.base import InferredGroups, SplitGroups
from debiaslab.inference.infer_error_set import ErrorSet
from debiaslab.inference.registry import register_inferrer
from debiaslab.methods.hparams import Default, HparamTable

log = logging.getLogger(__name__)

EIIL_CODE = "EIIL official code (ecreager/eiil, split_data_opt): n_steps=10000, lr=0.001, Adam"


@dataclass
class EIILHparams:
    """Attributes:
    steps: Adam steps on the assignment logits.
    lr: Adam's learning rate.
    """

    steps: int = 10000
    lr: float = 0.001

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"steps {self.steps!r} must be an integer >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr {self.lr!r} must be > 0")
        self.steps = int(self.steps)


def irm_gradients(logits: Tensor, y: Tensor) -> Tensor:
    """Per example, ``d/dw CE(w * logits, y)`` at ``w = 1``: ``sum_k softmax_k * logits_k - logits_y``."""
    p = torch.softmax(logits, dim=1)
    return (p * logits).sum(dim=1) - logits.gather(1, y[:, None]).squeeze(1)


def infer_environments(logits: Tensor, y: Tensor, steps: int, lr: float, seed: int = 0) -> tuple[Tensor, float]:
    """EIIL's assignment: ``q_i > 0.5`` after maximising the two environments' squared IRMv1 gradients; returns the
    hard assignment (True: environment 1) and the final penalty."""
    g = irm_gradients(logits.float(), y)
    n = max(len(g), 1)
    u = torch.randn(len(g), generator=torch.Generator().manual_seed(seed)).requires_grad_()
    optimiser = torch.optim.Adam([u], lr=lr)
    penalty = torch.zeros(())
    for _ in range(steps):
        q = torch.sigmoid(u)
        penalty = (q * g).sum().div(n).pow(2) + ((1 - q) * g).sum().div(n).pow(2)
        optimiser.zero_grad()
        (-penalty).backward()
        optimiser.step()
    return (torch.sigmoid(u) > 0.5).detach(), float(penalty.detach())


@register_inferrer("eiil")
class EIIL(ErrorSet):
    """Two environments that maximise a reference model's IRMv1 penalty; pseudo-groups are (class, environment)."""

    summary = "environments maximising a reference model's IRMv1 penalty, per class (EIIL)"
    source = "EIIL (Creager et al., ICML 2021), ecreager/eiil"
    Hparams: ClassVar[type] = EIILHparams
    hparam_table: ClassVar[HparamTable] = {"*": {"steps": Default(10000, EIIL_CODE), "lr": Default(0.001, EIIL_CODE)}}

    def assign(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        out, details = {}, {}
        for i, (name, ds) in enumerate(splits.items()):
            logits = self.logits(reference, ds, trainer)
            env1, penalty = infer_environments(logits, ds.y, self.hparams.steps, self.hparams.lr, seed=i)
            losses = F.cross_entropy(logits, ds.y, reduction="none")
            mean1 = float(losses[env1].mean()) if bool(env1.any()) else float("-inf")
            mean2 = float(losses[~env1].mean()) if bool((~env1).any()) else float("-inf")
            minority = env1 if mean1 > mean2 else ~env1
            out[name] = SplitGroups(pseudo=minority.long(), minority=minority)
            details[name] = {"penalty": penalty, "minority_share": float(minority.float().mean())}
        return InferredGroups(self.name, 2, out, details={"environments": details})
