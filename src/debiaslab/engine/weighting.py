"""Per-example loss weights, looked up by the dataset index carried in every batch.

Together with the samplers in :mod:`debiaslab.engine.sampling` this is the one mechanism behind loss
reweighting (group/class), JTT's weighted variant, LfF's relative-difficulty weights and REST's upweighting.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_mean(per_example: Tensor, weights: Tensor | None) -> Tensor:
    """``mean(w_i * l_i)`` (or the plain mean when ``weights`` is None). Weights are treated as constants."""
    if weights is None:
        return per_example.mean()
    return (per_example * weights.detach().to(per_example.device, per_example.dtype)).mean()


def lookup(table: Tensor | None, index: Tensor) -> Tensor | None:
    """``table[index]`` on the table's device, or None for no table."""
    if table is None:
        return None
    return table[index.to(table.device)]


def normalise_mean_one(weights: Tensor) -> Tensor:
    """Scale weights to average 1 over the training set, so the learning rate keeps its meaning."""
    weights = torch.as_tensor(weights, dtype=torch.float32)
    return weights / weights.mean()
