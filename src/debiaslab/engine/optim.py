"""Optimiser and scheduler factories: methods name them in their hyperparameters, the engine builds them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from debiaslab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step", "multistep", "plateau")


@dataclass
class OptimConfig:
    """Optimiser + LR schedule. ``scheduler`` is stepped once per epoch (``plateau`` on the selection score)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    scheduler: str = "none"
    step_size: int = 30
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_patience: int = 5
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} unknown; expected one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.scheduler!r} unknown; expected one of {', '.join(SCHEDULERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr {self.lr!r} must be a positive number")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay {self.weight_decay!r} must be >= 0")


ParamGroups = Iterable[nn.Parameter] | Iterable[dict[str, Any]]


def build_optimizer(params: ParamGroups, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the optimiser; ``params`` may be parameter groups with per-group overrides (e.g. no decay)."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, plateau_mode: str = "max"
) -> Any | None:
    """Per-epoch LR scheduler, or None. ``plateau`` follows the selection score in ``plateau_mode``: ``"max"``
    for accuracies, ``"min"`` for a score that is minimised (ClassDiff)."""
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=plateau_mode, factor=cfg.gamma, patience=cfg.plateau_patience
    )
