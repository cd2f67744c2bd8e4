"""SSA, Spread Spurious Attribute (Nam, Kim, Lee, Shin; ICLR 2022): predict the missing training attributes from a few
attribute-labelled validation examples, then GroupDRO on the predicted groups.

1. Validation is split at random: ``ssa_labeled_fraction`` trains the attribute predictor, the rest selects it.
2. The training set is split into ``ssa_folds`` folds. For each fold an attribute predictor (the method's backbone
   with one output per attribute value) is trained semi-supervised: each step, cross-entropy on a batch of labelled
   validation examples plus cross-entropy on confident pseudo-labels of a batch of the *other* folds' training
   examples. Pseudo-labels are balanced per attribute value: every example predicted as the rarest value (in the
   selecting half of validation) with confidence ≥ ``tau`` is kept, and each other value present in the labelled
   batch keeps its most confident predictions, as many as bring its count (labelled + pseudo) level with the rarest
   value's. The predictor is the step with the best attribute accuracy on the selecting half of validation; it
   labels its own fold, which it never trained on.
3. The training groups become (class, predicted attribute) and GroupDRO (:mod:`debiaslab.methods.groupdro`, its
   hyperparameters and presets) trains on them.

Follows SpuCo's implementation (BigML-CS-UCLA/SpuCo, src/spuco/group_inference/ssa.py: folds, labelled split,
minority threshold, per-value top-k, selection by attribute accuracy), except that confidence is the softmax
probability (the paper's) where SpuCo compares raw outputs with τ, the labelled batches are fresh random draws each
step, and validation runs every ``ssa_eval_every`` steps rather than every step. The authors' own code was published
as supplementary material only. Needs attribute labels on validation, none on training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.sampling import WeightedSampler
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import CHANCE_MARGIN, Check
from debiaslab.methods.base import FitResult, Requirements
from debiaslab.methods.groupdro import GroupDRO, GroupDROHparams
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.premises import majority_share
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import SearchSpace, loguniform
from debiaslab.methods.stages import method_stage
from debiaslab.models import build_model

log = logging.getLogger(__name__)

SPUCO_SSA = "SpuCo (BigML-CS-UCLA/SpuCo, src/spuco/group_inference/ssa.py)"
SPUCO_WB = "SpuCo (BigML-CS-UCLA/SpuCo, quickstart/waterbirds/waterbirds_ssa.py)"
OURS_CMNIST_LR = (
    "ours: Colored MNIST 1 %, seed 0, attribute accuracy of the predictors on the selecting half of validation: "
    "1.000 at SGD lr 0.1 (reached by step 200 of 500) against 0.195 at 0.01 and 0.105 at SpuCo's 1e-3 (chance 0.1)"
)
SPUCO_MNIST = "SpuCo (BigML-CS-UCLA/SpuCo, quickstart/spuco_mnist/spuco_mnist_ssa.py), its MNIST-with-colour setting"


def relabelled(data: GroupDataset, index: Tensor, labels: Tensor, n_classes: int, split: str) -> GroupDataset:
    """The examples ``index`` of ``data`` with ``labels`` as their class labels and no attribute (same inputs)."""
    index = torch.as_tensor(index, dtype=torch.long)
    return GroupDataset(
        x=data.x[index] if data.x is not None else None,
        loader=None if data.x is not None else (lambda i: data.loader(index[i])),  # type: ignore[misc]
        transform=data.transform,
        y=labels,
        n_classes=n_classes,
        n_attrs=1,
        name=data.name,
        split=split,
    )


def with_attributes(data: GroupDataset, attr: Tensor) -> GroupDataset:
    """``data`` (all its examples) with ``attr`` as the attribute of each."""
    return data.replaced(attr=attr)


def pseudo_label_selection(probs: Tensor, labeled: Tensor, rarest: int, tau: float) -> Tensor:
    """Indices of the unlabelled examples whose predicted attribute enters the loss (see the module docstring):
    every prediction of ``rarest`` with confidence ≥ ``tau``, then for each other value present in ``labeled`` (the
    labelled batch's attributes) its ``max(n_rarest + kept_rarest − n_value, 0)`` most confident predictions."""
    confidence, pseudo = probs.max(dim=1)
    chosen = [torch.nonzero((pseudo == rarest) & (confidence >= tau)).flatten()]
    counts = torch.bincount(labeled, minlength=probs.shape[1])
    target = int(counts[rarest]) + len(chosen[0])
    for value in torch.nonzero(counts).flatten().tolist():
        if value == rarest:
            continue
        members = torch.nonzero(pseudo == value).flatten()
        k = min(max(target - int(counts[value]), 0), len(members))
        if k:
            chosen.append(members[torch.topk(probs[members, value], k).indices])
    return torch.cat(chosen)


@dataclass
class SSAHparams(GroupDROHparams):
    """SSA: the attribute predictors (``ssa_*``), then GroupDRO with its own fields on the predicted groups.

    Attributes:
        ssa_folds: folds of the training set, each labelled by a predictor trained on the others.
        ssa_labeled_fraction: share of validation that trains the predictors (the rest selects them).
        ssa_iters: optimiser steps per predictor; ``ssa_eval_every``: steps between selections on validation.
        ssa_batch_size: labelled and unlabelled examples per step (each).
        ssa_lr, ssa_weight_decay: the predictors' SGD (no momentum).
        tau: confidence a prediction of the rarest attribute value needs to become a pseudo-label.
    """

    ssa_folds: int = 3
    ssa_labeled_fraction: float = 0.5
    ssa_iters: int = 1000
    ssa_eval_every: int = 10
    ssa_batch_size: int = 64
    ssa_lr: float = 1e-3
    ssa_weight_decay: float = 1e-4
    tau: float = 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ssa_folds < 2:
            raise ConfigError(f"ssa_folds {self.ssa_folds} must be >= 2 (each fold is labelled by the others)")
        if not 0.0 < self.ssa_labeled_fraction < 1.0:
            raise ConfigError(f"ssa_labeled_fraction {self.ssa_labeled_fraction!r} must be in (0, 1)")
        for name in ("ssa_iters", "ssa_eval_every", "ssa_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} must be >= 1")
        if not 0.0 <= self.tau <= 1.0:
            raise ConfigError(f"tau {self.tau!r} must be a probability in [0, 1]")


_SSA_ROW: dict[str, Default] = {
    "ssa_folds": Default(3, f"{SPUCO_SSA}: num_splits 3"),
    "ssa_labeled_fraction": Default(0.5, f"{SPUCO_SSA}: labeled_valset_size 0.5 (half selects, half trains)"),
    "ssa_iters": Default(1000, f"{SPUCO_WB}: --inf_num_iters 1000"),
    "ssa_eval_every": Default(10, "ours: selection every 10 steps (SpuCo validates every step; cost only)"),
    "ssa_batch_size": Default(64, f"{SPUCO_SSA}: batch_size 64"),
    "ssa_lr": Default(1e-3, f"{SPUCO_WB}: --inf_lr 1e-3"),
    "ssa_weight_decay": Default(1e-4, f"{SPUCO_WB}: --inf_weight_decay 1e-4"),
    "tau": Default(0.95, f"{SPUCO_WB}: tau_g_min 0.95"),
}


@register_method("ssa")
class SSA(GroupDRO):
    """Semi-supervised attribute prediction from attribute-labelled validation, then GroupDRO on the predictions."""

    summary = "predict training attributes from labelled validation (semi-supervised), then GroupDRO (Nam 2022)"
    family = "pseudo attribute labels"
    #: the predictors select their step by attribute accuracy, whatever the rule: only GroupDRO reads it
    rule_free_training: ClassVar[bool] = True
    Hparams: ClassVar[type[TrainHparams]] = SSAHparams
    requires = Requirements(val_attrs=True)
    #: searched by `debiaslab tune`: GroupDRO's space plus the predictors' learning rate and threshold
    search_space: ClassVar[SearchSpace] = {
        **GroupDRO.search_space,
        # from SpuCo's 1e-3 to a decade above the Colored MNIST preset's 0.1 (where lr <= 0.01 stays at chance)
        "ssa_lr": loguniform(1e-3, 1.0),
        "tau": loguniform(0.5, 0.99),
    }
    hparam_table: ClassVar[HparamTable] = {
        **GroupDRO.hparam_table,
        "*": {**GroupDRO.hparam_table["*"], **_SSA_ROW},
        "colored_mnist": {
            **GroupDRO.hparam_table["colored_mnist"],
            "ssa_iters": Default(500, f"{SPUCO_MNIST}: --infer_num_iters 500"),
            "ssa_weight_decay": Default(1e-5, f"{SPUCO_MNIST}: --infer_weight_decay 1e-5"),
            "ssa_lr": Default(0.1, OURS_CMNIST_LR),
        },
    }

    def check_labels(self, train: GroupDataset, val: GroupDataset | None) -> None:
        """Also: the validation split trains the predictors, so it must not be the test split."""
        super().check_labels(train, val)
        if val is not None and val.split == "test":
            raise ConfigError(
                f"method {self.name!r} trains its attribute predictors on the selection split, which is "
                f"{val.name}/test here (--protocol paper): it would train on the test set; use --protocol default"
            )

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: SSAHparams = self.hparams  # type: ignore[assignment]
        assert val is not None  # check_labels ran
        trainer.seed_stage("ssa_split")
        val_order = torch.randperm(len(val))
        n_fit = max(1, round(hp.ssa_labeled_fraction * len(val)))
        fit_idx, select_idx = val_order[:n_fit], val_order[n_fit:]
        if select_idx.numel() == 0:
            raise ConfigError(f"ssa: validation ({len(val)} examples) is too small to split for the predictors")
        labeled = relabelled(val, fit_idx, val.attr[fit_idx], val.n_attrs, "ssa_labeled")
        selecting = relabelled(val, select_idx, val.attr[select_idx], val.n_attrs, "ssa_select")
        rarest = rarest_value(selecting.y, val.n_attrs)
        folds = torch.randperm(len(train)).chunk(hp.ssa_folds)

        predicted = torch.full((len(train),), -1, dtype=torch.long)
        stages = []
        for k, fold in enumerate(folds):
            others = torch.cat([f for j, f in enumerate(folds) if j != k])
            unlabeled = relabelled(train, others, torch.zeros(len(others), dtype=torch.long), 1, "ssa_unlabeled")
            name = f"ssa_fold{k}"
            build = self._predictor_stage(name, train, unlabeled, labeled, rarest, trainer)
            stage, result = trainer.run_stage(name, build, unlabeled, selecting)
            stages.append(result)
            target = relabelled(train, fold, torch.zeros(len(fold), dtype=torch.long), 1, "ssa_fold")
            with eval_mode(stage.modules):
                predicted[fold] = trainer.predict(stage.modules, target).argmax(dim=1)
        quality = attribute_quality(train, predicted)
        log.info(
            "ssa: predicted training groups %s%s",
            pseudo_counts(train, predicted),
            f" (attribute accuracy {quality['attribute_accuracy']:.3f})" if quality else "",
        )
        result = super()._fit(with_attributes(train, predicted), val, trainer)
        result.stages = [*stages, *result.stages]
        result.extras.update(
            {
                "pseudo_group_counts": pseudo_counts(train, predicted),
                **quality,
                "predictor_val_accuracy": [s.score for s in stages],
                "predictor_val_majority": majority_share(selecting),  # its labels are the attributes
            }
        )
        return result

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: every fold's attribute predictor beat the majority attribute value on the selecting half of
        validation (a predictor at chance hands GroupDRO groups that are noise for its fold)."""
        extras = self._fitted_result().extras
        checks = super().health(train, val, trainer)
        if "predictor_val_accuracy" in extras:
            checks.append(predictors_check(extras["predictor_val_accuracy"], extras["predictor_val_majority"]))
        return checks

    def _predictor_stage(
        self,
        name: str,
        train: GroupDataset,
        unlabeled: GroupDataset,
        labeled: GroupDataset,
        rarest: int,
        trainer: Trainer,
    ) -> Callable[[], Stage]:
        hp: SSAHparams = self.hparams  # type: ignore[assignment]
        device = trainer.device

        def build() -> Stage:
            model = build_model(hp.model, train.input_shape, train.n_attrs, **hp.model_kwargs)

            def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
                picked = torch.randperm(len(labeled))[: hp.ssa_batch_size]
                lab = labeled.batch(picked)
                supervised = F.cross_entropy(model(trainer.prepare_inputs(lab.x)), lab.y.to(device))
                outputs = model(batch.x)
                with torch.no_grad():
                    probs = torch.softmax(outputs.float(), dim=1)
                chosen = pseudo_label_selection(probs, lab.y.to(device), rarest, hp.tau)
                if chosen.numel() == 0:
                    return {"loss": supervised, "pseudo_labels": outputs.new_zeros(())}
                unsupervised = F.cross_entropy(outputs[chosen], probs[chosen].argmax(dim=1))
                n_pseudo = torch.tensor(float(chosen.numel()), device=outputs.device)
                return {"loss": supervised + unsupervised, "pseudo_labels": n_pseudo}

            per_epoch = hp.ssa_eval_every * hp.ssa_batch_size
            sampler = WeightedSampler(torch.ones(len(unlabeled)), per_epoch, replacement=per_epoch > len(unlabeled))
            optim = hp.optim_config(
                optimizer="sgd", lr=hp.ssa_lr, momentum=0.0, weight_decay=hp.ssa_weight_decay, scheduler="none"
            )
            return method_stage(
                self,
                name,
                unlabeled,
                "val_accuracy",
                modules=model,
                loss_fn=loss,
                predict_fn=model,
                sampler=sampler,
                epochs=-(-hp.ssa_iters // hp.ssa_eval_every),
                batch_size=hp.ssa_batch_size,
                optim=optim,
                sparsity=None,
                run_rules=False,  # it selects by attribute accuracy on relabelled validation, whatever the run's rules
            )

        return build


def predictors_check(accuracies: list[float | None], majority: float) -> Check:
    """``fail`` when a fold's attribute predictor, at its kept step, is within the chance margin of always
    predicting the most frequent attribute value on the selecting half of validation."""
    scores = [float("nan") if a is None else float(a) for a in accuracies]
    dead = [k for k, a in enumerate(scores) if not a > majority + CHANCE_MARGIN]
    value = {"val_attribute_accuracy": scores, "majority_share": majority}
    shown = ", ".join(f"{100 * a:.1f} %" for a in scores)
    if not dead:
        return Check("ssa_predictors_learned", "ok", value, f"attribute accuracy of the fold predictors {shown}", True)
    return Check(
        "ssa_predictors_learned",
        "fail",
        value,
        f"the attribute predictor of fold(s) {', '.join(map(str, dead))} is at chance on the selecting half of "
        f"validation ({shown}; the majority value is {100 * majority:.1f} %): GroupDRO trains on groups that are "
        "noise there (raise ssa_lr or ssa_iters)",
        True,
    )


def rarest_value(attrs: Tensor, n_attrs: int) -> int:
    """The least frequent attribute value among those present."""
    counts = torch.bincount(attrs, minlength=n_attrs).float()
    return int(counts.masked_fill(counts == 0, float("inf")).argmin())


def pseudo_counts(train: GroupDataset, predicted: Tensor) -> list[int]:
    """Training examples per (class, predicted attribute) group."""
    return torch.bincount(train.y * train.n_attrs + predicted, minlength=train.n_groups).tolist()


def attribute_quality(train: GroupDataset, predicted: Tensor) -> dict[str, Any]:
    """How well the predicted attributes match the true ones, when the training split has them (reported only)."""
    if not train.has_attrs:
        return {}
    correct = predicted == train.attr
    out: dict[str, Any] = {"attribute_accuracy": float(correct.float().mean())}
    if train.aligned_groups:
        conflicting = ~train.is_aligned
        out["conflicting_attribute_accuracy"] = (
            float(correct[conflicting].float().mean()) if conflicting.any() else None
        )
    return out
