"""χ²-DRO (Levy, Carmon, Duchi, Sidford; NeurIPS 2020): the worst reweighting of each batch within a χ² ball.

Per batch of m losses ``v`` the adversary picks weights ``p`` on the simplex with ``½ · mean((m p − 1)²) ≤ ρ`` (the
χ² divergence from uniform) that maximise ``Σ p_i v_i``; the maximiser is ``p ∝ (v − η)₊`` with η found by bisection
so that the constraint is tight, and the model minimises ``Σ p_i v_i`` with ``p`` held constant. This is the
``chi-square`` geometry of the authors' fast-dro code (daniellevy/fast-dro, robust_losses.py) without regulariser,
including its two shortcuts: equal weights when the losses are (nearly) all equal, and the weight split over the
largest losses when the batch is too small for the ball (``m ≤ 1 + 2ρ``). Unlike CVaR, every example above η keeps a
weight growing with its loss. Needs no attribute labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.one_stage import PerExampleLoss, Reduction
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform

FAST_DRO = "fast-dro release (daniellevy/fast-dro, hyperparameters/mnist_final_cs.yaml): chi-square, size 1.0, reg 0"
#: relative spread below which the losses count as equal (fast-dro's MIN_REL_DIFFERENCE)
MIN_REL_DIFFERENCE = 1e-5


def chi2_divergence(p: Tensor) -> Tensor:
    """``½ · mean((m p − 1)²)``: the χ² divergence of ``p`` from the uniform distribution over its m entries."""
    return 0.5 * ((p.numel() * p - 1.0) ** 2).mean()


@torch.no_grad()
def chi2_weights(losses: Tensor, rho: float, tol: float = 1e-4, max_iter: int = 1000) -> Tensor:
    """The χ²-ball best response ``p ∝ (v − η)₊`` with ``|χ²(p) − ρ| ≤ tol`` (bisection on η, fast-dro's tolerance);
    see the module docstring."""
    v = losses.detach().double().flatten()
    m = v.numel()
    top = v.max()
    if top <= 0 or (top - v.min()) / top <= MIN_REL_DIFFERENCE:
        return torch.full_like(v, 1.0 / m).to(losses.device, torch.float32)
    if m <= 1 + 2 * rho:  # even all the weight on one example stays inside the ball
        best = (v == top).double()
        return (best / best.sum()).to(losses.device, torch.float32)

    def weights(eta: Tensor) -> Tensor:
        shifted = torch.relu(v - eta)
        return shifted / shifted.sum()

    low, high = v.min() - (top - v.min()), top  # χ² grows with η: small at ``low``, (m − 1)/2 > ρ near ``top``
    while chi2_divergence(weights(low)) > rho:
        low = low - 2 * (high - low)
    for _ in range(max_iter):
        mid = (low + high) / 2
        gap = float(chi2_divergence(weights(mid))) - rho
        if abs(gap) <= tol:
            return weights(mid).to(losses.device, torch.float32)
        low, high = (low, mid) if gap > 0 else (mid, high)
    return weights((low + high) / 2).to(losses.device, torch.float32)


def chi2_loss(losses: Tensor, rho: float) -> Tensor:
    """``Σ p_i ℓ_i`` with ``p`` the χ² best response (constant: no gradient through it)."""
    return (chi2_weights(losses, rho).to(losses.dtype) * losses).sum()


@dataclass
class Chi2Hparams(TrainHparams):
    """χ²-DRO: ``rho`` is the radius of the χ² ball around the uniform weights (0 is ERM)."""

    rho: float = bounded(1.0, NON_NEGATIVE, "0 is ERM")


@register_method("chi2_dro")
class Chi2DRO(PerExampleLoss):
    """Minimise the worst χ²-ball reweighting of each batch's per-example losses."""

    summary = "minimise the worst reweighting of the batch losses in a χ² ball of radius ρ (Levy et al. 2020)"
    family = "robust optimisation"
    Hparams = Chi2Hparams
    #: searched by `debiaslab tune`: ρ a decade either side of the fast-dro setting (SubpopBench has no χ²-DRO)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "rho": loguniform(0.1, 10.0)}
    hparam_table: ClassVar[HparamTable] = {"*": {"rho": Default(1.0, FAST_DRO)}}

    def reduction(self, train: GroupDataset, device: torch.device) -> Reduction:
        rho = float(self.hparams.rho)
        return lambda ce, batch: ce.mean() if rho == 0 else chi2_loss(ce, rho)
