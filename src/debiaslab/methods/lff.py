"""LfF — Learning from Failure (Nam et al., NeurIPS 2020).

Two models of the same architecture are trained together from scratch. The biased model f_B minimises the
generalised cross-entropy, which amplifies its reliance on the easy (spurious) cue. The debiased model f_D
minimises CE weighted per example by the relative difficulty W = L̃_B / (L̃_B + L̃_D), where L̃ are per-example
moving averages of each model's CE, normalised by the class-wise maximum. Examples f_B fails on (mostly
bias-conflicting) get large weights. No attribute labels are used in training; f_D is deployed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import Check, weight_checks
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.hparams import Bounds, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.premises import conflicting_mask
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, uniform
from debiaslab.methods.stages import method_stage
from debiaslab.utils import dist

log = logging.getLogger(__name__)

LFF_PAPER = "LfF paper (Nam et al. 2020)"
WEIGHT_EPS = 1e-8


def generalized_cross_entropy(logits: Tensor, y: Tensor, q: float = 0.7) -> Tensor:
    """Per-example GCE (Zhang & Sabuncu 2018), ``(1 - p_y^q) / q``, computed in float32.

    Its gradient is ``p_y^q · ∂CE/∂z``: confident (easy) examples dominate, which is what makes f_B biased.
    (LfF's released code instead back-propagates ``q · p_y^q · ∂CE/∂z``, an extra constant factor q.)
    """
    if not 0 < q <= 1:
        raise ConfigError(f"GCE q {q!r} must be in (0, 1]")
    log_py = F.log_softmax(logits.float(), dim=1).gather(1, y.reshape(-1, 1)).squeeze(1)
    return (1.0 - torch.exp(q * log_py)) / q


def relative_difficulty(loss_b: Tensor, loss_d: Tensor, eps: float = WEIGHT_EPS) -> Tensor:
    """LfF's weight ``W = L_B / (L_B + L_D + eps)`` in [0, 1], detached (a constant for the optimiser)."""
    loss_b, loss_d = loss_b.detach(), loss_d.detach()
    return loss_b / (loss_b + loss_d + eps)


class LossEMA(nn.Module):
    """Per-example exponential moving average of a loss, indexed by the dataset index.

    First visit sets the average to the loss; later visits ``ema ← α·ema + (1 − α)·loss``. ``normalized`` divides
    by the maximum average over all training examples of the same class (unseen examples count as 0, as in the
    official code). ``ema`` and ``seen`` are buffers, so stage checkpoints carry them.
    """

    ema: Tensor
    seen: Tensor
    labels: Tensor

    def __init__(self, labels: Tensor, n_classes: int, alpha: float = 0.7) -> None:
        super().__init__()
        if not 0 <= alpha < 1:
            raise ConfigError(f"EMA alpha {alpha!r} must be in [0, 1)")
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        self.alpha, self.n_classes = float(alpha), int(n_classes)
        self.register_buffer("labels", labels.clone(), persistent=False)
        self.register_buffer("ema", torch.zeros(labels.numel(), dtype=torch.float32))
        self.register_buffer("seen", torch.zeros(labels.numel(), dtype=torch.bool))

    @torch.no_grad()
    def update(self, index: Tensor, loss: Tensor) -> None:
        """Fold a batch of (detached) losses into the averages. Within one call an index should appear once."""
        index = index.to(self.ema.device)
        loss = loss.detach().to(self.ema.device, torch.float32)
        old = self.ema[index]
        self.ema[index] = torch.where(self.seen[index], self.alpha * old + (1.0 - self.alpha) * loss, loss)
        self.seen[index] = True

    @torch.no_grad()
    def class_max(self) -> Tensor:
        """Maximum average per class over the whole buffer, shape ``(n_classes,)``."""
        out = torch.zeros(self.n_classes, dtype=self.ema.dtype, device=self.ema.device)
        return out.scatter_reduce(0, self.labels, self.ema, reduce="amax", include_self=True)

    @torch.no_grad()
    def normalized(self, index: Tensor) -> Tensor:
        """``ema[i] / max_{j: y_j = y_i} ema[j]`` for the given indices (0 where the class maximum is 0)."""
        index = index.to(self.ema.device)
        peak = self.class_max()[self.labels[index]]
        return self.ema[index] / peak.clamp_min(torch.finfo(peak.dtype).tiny)


@dataclass
class LfFHparams(TrainHparams):
    """LfF's hyperparameters on top of the usual ones.

    Attributes:
        q: GCE exponent for the biased model.
        ema_alpha: per-example loss EMA factor.
        eval_biased: also evaluate (and log) the biased model on validation every epoch.
    """

    q: float = bounded(0.7, Bounds(0.0, 1.0, low_open=True))
    ema_alpha: float = bounded(0.7, Bounds(0.0, 1.0, high_open=True))
    eval_biased: bool = True


@register_method("lff")
class LfF(Method):
    """Learning from Failure: a GCE-trained biased model re-weights the debiased model's CE per example."""

    family = "inferred minority"

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    summary = "biased GCE model re-weights a debiased model by relative difficulty (Nam et al. 2020)"
    #: searched by `debiaslab tune`: the GCE q of the biased model and the EMA factor of the losses
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "q": uniform(0.1, 0.9),
        "ema_alpha": uniform(0.5, 0.99),
    }
    Hparams: ClassVar[type[TrainHparams]] = LfFHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {"q": Default(0.7, LFF_PAPER), "ema_alpha": Default(0.7, LFF_PAPER)},
        "colored_mnist": dict(CMNIST_MLP),
    }

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        super().__init__(dataset, **hparams)
        #: the relative difficulty W of every training example at the kept epoch (from the loss averages)
        self.weights_: Tensor | None = None

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: the effective sample size of the final weights W and the share the top 1 % hold (with
        attributes: their mean on bias-conflicting against aligned examples)."""
        checks = super().health(train, val, trainer)
        if self.weights_ is not None:
            checks += weight_checks(self.weights_, conflicting_mask(train), "LfF weights")
        return checks

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: LfFHparams = self.hparams  # type: ignore[assignment]
        rule = self.selection_rule(val)
        # diagnostics only (never used for training): which examples are bias-conflicting
        conflicting = conflicting_mask(train)

        def build() -> Stage:
            f_b, f_d = self.build_model(train), self.build_model(train)
            ema_b = LossEMA(train.y, train.n_classes, hp.ema_alpha)
            ema_d = LossEMA(train.y, train.n_classes, hp.ema_alpha)
            modules = nn.ModuleDict({"biased": f_b, "debiased": f_d, "ema_biased": ema_b, "ema_debiased": ema_d})
            w_sums: dict[str, Tensor] = {}

            def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
                logits_b, logits_d = f_b(batch.x), f_d(batch.x)
                ce_b = F.cross_entropy(logits_b.float(), batch.y, reduction="none")
                ce_d = F.cross_entropy(logits_d.float(), batch.y, reduction="none")
                index = batch.index.to(ce_b.device)
                all_index, all_b, all_d = dist.gather_cat(index, ce_b.detach(), ce_d.detach())
                ema_b.update(all_index, all_b)
                ema_d.update(all_index, all_d)
                w = relative_difficulty(ema_b.normalized(index), ema_d.normalized(index)).to(ce_d.device)
                gce = generalized_cross_entropy(logits_b, batch.y, hp.q).mean()
                weighted = (w * ce_d).mean()
                if conflicting is not None:
                    _accumulate(w_sums, w, conflicting[batch.index])
                return {
                    "loss": gce + weighted,
                    "gce_biased": gce.detach(),
                    "wce_debiased": weighted.detach(),
                    "w": w.mean(),
                }

            def epoch_end(ctx: StepContext) -> dict[str, float]:
                out = {}
                dist.sum_values(w_sums)  # every process's examples (a no-op in one process)
                for kind in ("conflicting", "aligned"):
                    n = float(w_sums.get(f"n_{kind}", 0.0))
                    if n:
                        out[f"train_w_{kind}"] = float(w_sums[f"sum_{kind}"]) / n
                w_sums.clear()
                return out

            return method_stage(
                self,
                "lff",
                train,
                rule,
                modules=modules,
                loss_fn=loss,
                predict_fn=f_d,
                extra_predictors={"biased": f_b} if hp.eval_biased else {},
                on_epoch_end=epoch_end,
            )

        stage, result = trainer.run_stage("lff", build, train, val)
        ema_b, ema_d = stage.modules["ema_biased"], stage.modules["ema_debiased"]
        every = torch.arange(len(train), device=ema_b.ema.device)
        self.weights_ = relative_difficulty(ema_b.normalized(every), ema_d.normalized(every)).cpu()
        extras: dict[str, Any] = {"q": hp.q, "ema_alpha": hp.ema_alpha}
        last = result.history[-1] if result.history else {}
        for key in ("train_w_conflicting", "train_w_aligned"):
            if key in last:
                extras[f"final_{key}"] = last[key]
        return self.fit_result(train, stage.modules["debiased"], [result], rule, extras)


def _accumulate(sums: dict[str, Tensor], w: Tensor, conflicting: Tensor) -> None:
    """Add a batch's weights to the running sums per kind (on the device: no synchronisation per step)."""
    conflicting = conflicting.to(w.device)
    for kind, mask in (("conflicting", conflicting), ("aligned", ~conflicting)):
        m = mask.to(w.dtype)
        sums[f"sum_{kind}"] = sums.get(f"sum_{kind}", 0.0) + (w * m).sum()
        sums[f"n_{kind}"] = sums.get(f"n_{kind}", 0.0) + m.sum()
