"""LDAM (Cao, Wei, Gaidon, Arechiga, Ma; NeurIPS 2019): a larger margin for rarer classes, optionally with DRW.

Label-distribution-aware margin loss: class ``k`` gets the margin ``m_k ∝ n_k^{−1/4}`` (the largest is ``max_m``),
subtracted from the true class's logit before a scaled cross-entropy, ``CE(s · (z − m_y e_y), y)``
(kaidic/LDAM-DRW losses.py; SubpopBench algorithms.py, ``LDAM``, which uses class counts and plain logits, as here).
Deferred re-weighting (DRW, ``ldam_drw``): from ``drw_start`` of the epochs on, the loss is weighted per class by the
class-balanced weights ``(1 − β)/(1 − β^n_y)`` (β = 0.9999, normalised to sum to the number of classes; a weighted
batch mean), as cifar_train.py's ``--train_rule DRW`` does from epoch 160 of 200. Needs no attribute labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import StepContext
from debiaslab.errors import ConfigError
from debiaslab.methods.class_balanced import effective_number_weights
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, categorical, loguniform

LDAM_CODE = "LDAM-DRW official code (kaidic/LDAM-DRW, cifar_train.py)"


def ldam_margins(class_counts: Tensor, max_m: float) -> Tensor:
    """``m_k ∝ n_k^{−1/4}``, scaled so the largest margin is ``max_m``; an empty class gets margin 0."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    raw = torch.where(counts > 0, counts.clamp(min=1).pow(-0.25), torch.zeros_like(counts))
    return (raw * (max_m / raw.max())).to(torch.float32)


def ldam_logits(logits: Tensor, y: Tensor, margins: Tensor, scale: float) -> Tensor:
    """``s · (z − m_y e_y)``: the true class's logit lowered by its margin, then scaled."""
    shift = torch.zeros_like(logits).scatter_(1, y.view(-1, 1), margins[y].view(-1, 1).to(logits.dtype))
    return scale * (logits - shift)


@dataclass
class LDAMHparams(TrainHparams):
    """LDAM: ``max_m`` (largest margin), ``scale`` (s); DRW from ``drw_start`` (a fraction of the epochs; None: never)
    with class weights of effective-number ``drw_beta``."""

    max_m: float = 0.5
    scale: float = 30.0
    drw_start: float | None = None
    drw_beta: float = 0.9999

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_m > 0:
            raise ConfigError(f"max_m {self.max_m!r} must be > 0")
        if not self.scale > 0:
            raise ConfigError(f"scale {self.scale!r} must be > 0")
        if self.drw_start is not None and not 0.0 <= self.drw_start <= 1.0:
            raise ConfigError(f"drw_start {self.drw_start!r} must be a fraction of the epochs in [0, 1], or None")
        if not 0.0 <= self.drw_beta < 1.0:
            raise ConfigError(f"drw_beta {self.drw_beta!r} must be in [0, 1)")

    def drw_epoch(self) -> int | None:
        """The first (0-based) epoch with DRW weights, or None."""
        return None if self.drw_start is None else round(self.drw_start * self.epochs)


_LDAM_ROW: dict[str, Default] = {
    "max_m": Default(0.5, f"{SUBPOP_REGISTRY}: LDAM max_m 0.5 (random search 10^U(−1, −0.1)); {LDAM_CODE}: max_m=0.5"),
    "scale": Default(30.0, f"{SUBPOP_REGISTRY}: LDAM scale 30 (random search 10 or 30); {LDAM_CODE}: s=30"),
    "drw_start": Default(None, f"{SUBPOP_REGISTRY}: LDAM without deferred re-weighting"),
}


@register_method("ldam")
class LDAM(OneStage):
    """Label-distribution-aware margins on the class labels (SubpopBench's ``LDAM``: no DRW)."""

    summary = "cross-entropy with class margins ∝ n_y^(−1/4) (LDAM, Cao et al. 2019)"
    family = "class-imbalance losses"
    Hparams = LDAMHparams
    #: searched by `debiaslab tune`: SubpopBench's ranges, max_m 10^U(−1, −0.1) and s in {10, 30}
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "max_m": loguniform(0.1, 10**-0.1),
        "scale": categorical(10.0, 30.0),
    }
    hparam_table: ClassVar[HparamTable] = {"*": dict(_LDAM_ROW)}

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        hp: LDAMHparams = self.hparams  # type: ignore[assignment]
        margins = ldam_margins(train.class_counts, hp.max_m).to(device)
        drw_weights = effective_number_weights(train.class_counts, hp.drw_beta).to(device)
        drw_epoch = hp.drw_epoch()

        def loss(batch: Batch, ctx: StepContext) -> Tensor:
            logits = ldam_logits(model(batch.x), batch.y, margins, hp.scale)
            deferred = drw_epoch is not None and ctx.epoch >= drw_epoch
            return F.cross_entropy(logits, batch.y, weight=drw_weights.to(logits.dtype) if deferred else None)

        return loss

    def extras(self, train: GroupDataset) -> dict[str, Any]:
        hp: LDAMHparams = self.hparams  # type: ignore[assignment]
        return {"margins": ldam_margins(train.class_counts, hp.max_m).tolist(), "drw_epoch": hp.drw_epoch()}


@register_method("ldam_drw")
class LDAMDRW(LDAM):
    """LDAM with deferred re-weighting: class-balanced weights for the last fifth of training (Cao et al. 2019)."""

    summary = "LDAM, then class-balanced weights (β 0.9999) for the last 20 % of epochs (LDAM-DRW)"
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            **_LDAM_ROW,
            "drw_start": Default(0.8, f"{LDAM_CODE}: --train_rule DRW switches at epoch 160 of 200"),
            "drw_beta": Default(0.9999, f"{LDAM_CODE}: DRW betas [0, 0.9999]"),
        },
    }
