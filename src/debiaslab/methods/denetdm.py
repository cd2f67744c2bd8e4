"""DeNetDM — Debiasing by Network Depth Modulation (Sreelatha et al., NeurIPS 2024).

Stage ``experts``: a deep branch φ_b and a shallow branch φ_d with the same feature width feed one shared linear
head, ``h(φ_b(x) + φ_d(x))`` — a product of experts in logit space — trained with plain cross-entropy. The deep
branch picks up the easy spurious cue first and becomes the biased expert; the shallow branch is left with what
the bias does not explain. The kept epoch is the one whose *shallow* read-out ``h(φ_d(x))`` scores best on
validation under the configured rule (the paper uses conflicting accuracy on its reported split; ours selects on
validation).

Stage ``distill``: φ_b is frozen in eval mode (BatchNorm statistics frozen), the stage-1 shallow expert (φ_d, h)
is a frozen teacher, and a new target branch φ_t (often deeper than φ_d) with a head h_t initialised from h is
trained with ``CE(h_t(φ_b(x) + φ_t(x)), y) + λ·τ²·CE_soft(softmax(h(φ_d(x))/τ), log_softmax(h_t(φ_t(x))/τ))``.
Only h_t ∘ φ_t is deployed. On Corrupted CIFAR-10 and BFFHQ the target starts, as in the release, from the
ImageNet-pretrained ResNet-18 (``pretrained: imagenet``, fetched with its published checksum, or a local file).

Training reads no group labels. Both stages keep the epoch chosen by the validation rule, and that rule reads the
validation split's group labels when it is worst-group or unbiased accuracy (``auto`` with validation groups, and
the Colored MNIST preset's ``val_unbiased``); ``val_worst_class`` selects without any.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import Check
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.denetdm_checks import (
    expert_role_checks,
    expert_split_check,
    experts_alive_check,
    target_beyond_check,
)
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.premises import majority_share, predictions, record_n_classes, record_split
from debiaslab.methods.presets import OURS_CMNIST_SELECTION
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, intrange, loguniform, uniform
from debiaslab.methods.stages import method_stage, optim_with
from debiaslab.methods.teachers import soft_cross_entropy
from debiaslab.models.base import Backbone

log = logging.getLogger(__name__)

PAPER = "DeNetDM paper / official code (kadarsh22/DeNetDM)"
CMNIST_SPEC = "DeNetDM, Colored MNIST: deep MLP 2352-100-100-100-100 (5 layers with the head), shallow 3, target 5"
CCIFAR_SPEC = "DeNetDM, Corrupted CIFAR-10: deep ResNet-20, shallow 3-conv CNN (width 64), target ResNet-18"
BFFHQ_SPEC = "DeNetDM, BFFHQ: deep ResNet-18, shallow 4-conv CNN (width 512); distillation weight 0 in the release"
RELEASE_CONFIG = "DeNetDM release (kadarsh22/DeNetDM, commit 790e363) config.py, named config {}"
CCIFAR_CONFIG = RELEASE_CONFIG.format("corrupted_cifar10")
BFFHQ_CONFIG = RELEASE_CONFIG.format("bffhq")
CCIFAR_TARGET = (
    "DeNetDM release module/model.py, CCIFARDeNetDMModel stage 2: the target is torchvision's ImageNet-pretrained "
    "resnet18(pretrained=True) (ImageNet stem, fc removed) followed by Linear(512, 64)"
)
BFFHQ_TARGET = (
    "DeNetDM release module/model.py, BFFHQDeNetDModel stage 2: the target is torchvision's ImageNet-pretrained "
    "resnet18(pretrained=True), fc removed (the deep branch is resnet18(pretrained=False))"
)
BFFHQ_SHALLOW = (
    "DeNetDM release module/model.py, BFFHQDeNetDModel stage 1: convs 3-64 (7x7), 64-128, 128-512, 512-512 (3x3), "
    "no padding, 2x2 max pools after the first three (about 3 M conv weights)"
)


@dataclass
class DeNetDMHparams(TrainHparams):
    """DeNetDM's settings. ``model``/``model_kwargs``, ``epochs``, ``lr`` and ``weight_decay`` describe the
    target branch and the distillation stage; the ``expert_*`` fields describe stage 1.

    Attributes:
        deep_model, deep_kwargs: the deep (biased) branch φ_b, any registered backbone.
        shallow_model, shallow_kwargs: the shallow branch φ_d; its feature width must equal φ_b's.
        expert_epochs: length of the product-of-experts stage.
        expert_lr, expert_weight_decay: stage-1 optimiser overrides (None: ``lr`` / ``weight_decay``).
        poe_weight: weight of the product-of-experts CE in stage 2.
        distill_weight: λ, weight of the distillation term (0 disables it, as the BFFHQ release does).
        temperature: τ of the distillation.
    """

    deep_model: str = "mlp"
    deep_kwargs: dict[str, Any] = field(default_factory=lambda: {"depth": 4})
    shallow_model: str = "mlp"
    shallow_kwargs: dict[str, Any] = field(default_factory=lambda: {"depth": 2})
    expert_epochs: int = 100
    expert_lr: float | None = None
    expert_weight_decay: float | None = None
    poe_weight: float = 1.0
    distill_weight: float = 1.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.expert_epochs, bool) or int(self.expert_epochs) != self.expert_epochs:
            raise ConfigError(f"expert_epochs {self.expert_epochs!r} must be an integer >= 1")
        self.expert_epochs = int(self.expert_epochs)
        if self.expert_epochs < 1:
            raise ConfigError(f"expert_epochs {self.expert_epochs} must be >= 1")
        for name in ("poe_weight", "distill_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} {value!r} must be a finite number >= 0")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ConfigError(f"temperature {self.temperature!r} must be a positive number")
        if self.expert_lr is not None and not self.expert_lr > 0:
            raise ConfigError(f"expert_lr {self.expert_lr!r} must be a positive number (or None)")
        if self.expert_weight_decay is not None and not self.expert_weight_decay >= 0:
            raise ConfigError(f"expert_weight_decay {self.expert_weight_decay!r} must be >= 0 (or None)")
        for name in ("deep_kwargs", "shallow_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} {getattr(self, name)!r} must be a mapping of model options")


def check_same_width(first: tuple[str, Backbone], second: tuple[str, Backbone], settings: str) -> None:
    """Refuse two named branches whose features differ in width (``settings``: the options that set them)."""
    (first_name, a), (second_name, b) = first, second
    if a.feature_dim != b.feature_dim:
        raise ConfigError(
            f"denetdm: the {first_name} branch has feature width {a.feature_dim} but the {second_name} branch "
            f"{b.feature_dim}; they must match (set {settings})"
        )


class ProductOfExperts(nn.Module):
    """Two backbones whose features are summed before one shared head: ``h(φ_b(x) + φ_d(x))``.

    Both branches' ``head`` attribute *is* the shared head, so ``deep(x)`` and ``shallow(x)`` are the experts'
    read-outs ``h(φ_b(x))`` and ``h(φ_d(x))``.
    """

    def __init__(self, deep: Backbone, shallow: Backbone, n_classes: int) -> None:
        super().__init__()
        check_same_width(("deep", deep), ("shallow", shallow), "deep_kwargs / shallow_kwargs")
        self.head = nn.Linear(deep.feature_dim, n_classes)
        self.deep, self.shallow = deep, shallow
        deep.head = self.head
        shallow.head = self.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.deep.features(x) + self.shallow.features(x))


class DistillationSetup(nn.Module):
    """Stage 2's modules: the trainable target, the frozen deep branch and the frozen shallow teacher."""

    def __init__(self, target: Backbone, deep: Backbone, teacher: Backbone) -> None:
        super().__init__()
        check_same_width(("target", target), ("deep", deep), "model_kwargs")
        self.target, self.deep, self.teacher = target, deep, teacher
        for frozen in (deep, teacher):
            frozen.requires_grad_(False)

    def poe_logits(self, x: Tensor) -> Tensor:
        """``h_t(φ_b(x) + φ_t(x))`` with the frozen deep branch's features."""
        return self.target.head(self.deep.features(x) + self.target.features(x))

    def set_train_mode(self, _: nn.Module | None = None) -> None:
        """The target trains; the frozen parts stay in eval mode (no BatchNorm statistics updates)."""
        self.train()
        self.deep.eval()
        self.teacher.eval()


@register_method("denetdm")
class DeNetDM(Method):
    """Deep and shallow branches as a product of experts, then distillation of the shallow expert into a target."""

    family = "distillation"
    earlier_stages = (("experts", "expert_epochs", "expert_lr", True),)
    final_stage = ("distill", None)

    summary = "depth-modulated product of experts, then distillation into a target branch (Sreelatha 2024)"
    #: searched by `debiaslab tune`: the experts' training length, the PoE and distillation weights, τ
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "expert_epochs": intrange(1, 20),
        "poe_weight": loguniform(0.1, 10.0),
        "distill_weight": loguniform(0.1, 10.0),
        "temperature": uniform(1.0, 5.0),
    }
    Hparams: ClassVar[type[TrainHparams]] = DeNetDMHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {"selection": Default("auto", "ours: worst-group with validation groups, else worst-class")},
        "colored_mnist": {
            "model": Default("mlp", CMNIST_SPEC),
            "model_kwargs": Default({"depth": 4}, CMNIST_SPEC),
            "deep_model": Default("mlp", CMNIST_SPEC),
            "deep_kwargs": Default({"depth": 4}, CMNIST_SPEC),
            "shallow_model": Default("mlp", CMNIST_SPEC),
            "shallow_kwargs": Default({"depth": 2}, CMNIST_SPEC),
            "optimizer": Default("adam", PAPER),
            "lr": Default(1e-3, PAPER),
            "batch_size": Default(64, PAPER),
            "expert_weight_decay": Default(1e-3, PAPER + ": stage-1 weight decay 1e-3"),
            "weight_decay": Default(0.0, PAPER + ": stage-2 weight decay 0"),
            "expert_epochs": Default(100, PAPER),
            "epochs": Default(100, PAPER),
            "distill_weight": Default(1.0, PAPER),
            "temperature": Default(2.0, PAPER),
            "selection": Default("val_unbiased", OURS_CMNIST_SELECTION),
        },
        "corrupted_cifar10": {
            "deep_model": Default("resnet20", CCIFAR_SPEC),
            "deep_kwargs": Default({}, CCIFAR_SPEC),
            "shallow_model": Default("cnn3", CCIFAR_SPEC),
            "shallow_kwargs": Default({"channels": [32, 64, 64], "kernel_size": 5, "padding": 0}, CCIFAR_SPEC),
            "model": Default("projected", CCIFAR_TARGET),
            "model_kwargs": Default(
                {"base": "resnet18", "base_kwargs": {"pretrained": "imagenet"}, "dim": 64}, CCIFAR_TARGET
            ),
            "optimizer": Default("adam", PAPER),
            "expert_lr": Default(1e-3, PAPER),
            "lr": Default(1e-4, PAPER),
            "batch_size": Default(256, PAPER),
            "expert_weight_decay": Default(1e-3, CCIFAR_CONFIG + ": stage-1 main_weight_decay 1e-3"),
            "weight_decay": Default(0.0, CCIFAR_CONFIG + ": stage2_main_weight_decay 0"),
            "expert_epochs": Default(100, PAPER),
            "epochs": Default(200, PAPER),
        },
        "bffhq": {
            "model": Default("resnet18", BFFHQ_TARGET),
            "model_kwargs": Default({"pretrained": "imagenet"}, BFFHQ_TARGET),
            "deep_model": Default("resnet18", BFFHQ_SPEC),
            "deep_kwargs": Default({}, BFFHQ_SPEC),
            "shallow_model": Default("cnn4", BFFHQ_SPEC),
            "shallow_kwargs": Default(
                {"channels": [64, 128, 512, 512], "kernel_size": [7, 3, 3, 3], "padding": 0}, BFFHQ_SHALLOW
            ),
            "optimizer": Default("adam", BFFHQ_CONFIG),
            "expert_epochs": Default(10, BFFHQ_CONFIG + ": num_epochs 10"),
            "expert_lr": Default(1e-3, BFFHQ_CONFIG + ": main_learning_rate 1e-3"),
            "expert_weight_decay": Default(0.0, BFFHQ_CONFIG + ": main_weight_decay 0"),
            "epochs": Default(100, BFFHQ_CONFIG + ": stage2_num_epochs 100"),
            "lr": Default(1e-4, BFFHQ_CONFIG + ": stage2_main_learning_rate 1e-4"),
            "weight_decay": Default(0.0, BFFHQ_CONFIG + ": stage2_main_weight_decay 0"),
            "batch_size": Default(64, BFFHQ_CONFIG + ": batch size 64 in both stages"),
            "distill_weight": Default(0.0, BFFHQ_CONFIG + ": stage2_dist_weight 0"),
        },
    }

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        super().__init__(dataset, **hparams)
        self.experts_: ProductOfExperts | None = None

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also DeNetDM's premises (:mod:`~debiaslab.methods.denetdm_checks`): both experts left chance on the
        training set; on validation (else training) how the experts split (agreement, each one's accuracy on the
        other's errors) and how the target does on the deep expert's errors; with attributes, which expert is
        the biased one and whether the target beats it on the conflicting examples."""
        trainer = trainer or Trainer(progress=False)
        checks = super().health(train, val, trainer)
        if "deep_expert" not in self.readout_models_:
            return checks
        models = {
            "deep": self.readout_models_["deep_expert"],
            "shallow": self.readout_models_["shallow_expert"],
            "target": self._fitted_model(),
        }
        on_train = {k: {"accuracy": float((predictions(trainer, models[k], train) == train.y).float().mean())}
                    for k in ("deep", "shallow")}  # fmt: skip
        checks.append(experts_alive_check(on_train, train.n_classes, "the training set", majority_share(train)))
        split, where = (val, "validation") if val is not None else (train, "the training set")
        pred = {k: predictions(trainer, m, split) for k, m in models.items()}
        checks.append(expert_split_check(pred, split.y, where))
        checks.append(target_beyond_check(pred["target"], pred["deep"], split.y, split.n_classes, where))
        labelled = next((s for s in (val, train) if s is not None and s.has_attrs and s.aligned_groups), None)
        if labelled is not None:
            metrics = {k: trainer.evaluate(m, labelled, m).metrics for k, m in models.items()}
            checks += expert_role_checks(metrics, "validation" if labelled is val else "the training set")
        return checks

    @classmethod
    def record_health(cls, final: dict[str, Any]) -> list[Check]:
        """Also, from the experts' recorded read-outs: whether an expert is at chance on validation (near-uniform
        outputs) and, with attribute metrics, which expert is the biased one and whether the target beats it."""
        checks = super().record_health(final)
        split, target = record_split(final)
        readouts = final.get("readouts") or {}
        deep, shallow = (readouts.get(k, {}).get(split) for k in ("deep_expert", "shallow_expert"))
        n_classes = record_n_classes(final)
        if not deep or not shallow or n_classes < 2:
            return checks
        where = "validation" if split == "val" else "test"
        metrics = {"deep": deep, "shallow": shallow}
        checks.append(experts_alive_check(metrics, n_classes, where, source="record"))
        keys = ("aligned", "conflicting")
        if all(isinstance(m.get(k), int | float) for m in (deep, shallow, target) for k in keys):
            checks += expert_role_checks({**metrics, "target": target}, where, source="record")
        return checks

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: DeNetDMHparams = self.hparams  # type: ignore[assignment]
        rule = self.selection_rule(val)

        def build_experts() -> Stage:
            deep = self.build_model(train, hp.deep_model, **hp.deep_kwargs)
            shallow = self.build_model(train, hp.shallow_model, **hp.shallow_kwargs)
            poe = ProductOfExperts(deep, shallow, train.n_classes)

            def loss(batch: Batch, ctx: StepContext) -> Tensor:
                return F.cross_entropy(poe(batch.x), batch.y)

            return method_stage(
                self,
                "experts",
                train,
                rule,
                modules=poe,
                loss_fn=loss,
                predict_fn=poe,
                epochs=hp.expert_epochs,
                optim=optim_with(hp, hp.expert_lr, hp.expert_weight_decay),
                extra_predictors={"deep": poe.deep, "shallow": poe.shallow},
                selection_predictor="shallow" if val is not None else None,
            )

        expert_stage, experts = trainer.run_stage("experts", build_experts, train, val)
        poe: ProductOfExperts = expert_stage.modules  # type: ignore[assignment]
        self.experts_ = poe
        log.info("denetdm: experts kept at epoch %d (shallow read-out, %s)", experts.selected_epoch, rule)

        def build_distill() -> Stage:
            # each copy owns a copy of the shared head h: the teacher is h ∘ φ_d, frozen
            deep, teacher = copy.deepcopy(poe.deep), copy.deepcopy(poe.shallow)
            target = self.build_model(train)
            if target.head.weight.shape != poe.head.weight.shape:
                raise ConfigError(
                    f"denetdm: the target head has shape {tuple(target.head.weight.shape)} but the experts' head "
                    f"{tuple(poe.head.weight.shape)}; the target's feature width must equal the branches'"
                )
            with torch.no_grad():
                target.head.load_state_dict(poe.head.state_dict())
            setup = DistillationSetup(target, deep, teacher).to(poe.head.weight.device)

            def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
                poe_ce = F.cross_entropy(setup.poe_logits(batch.x), batch.y)
                total = hp.poe_weight * poe_ce
                out = {"poe_ce": poe_ce.detach()}
                if hp.distill_weight > 0:
                    with torch.no_grad():
                        teacher_logits = setup.teacher(batch.x)
                    distill = soft_cross_entropy(setup.target(batch.x), teacher_logits, hp.temperature)
                    total = total + hp.distill_weight * hp.temperature**2 * distill
                    out["distill"] = distill.detach()
                return {"loss": total, **out}

            return method_stage(
                self,
                "distill",
                train,
                rule,
                modules=setup,
                loss_fn=loss,
                predict_fn=setup.target,
                param_groups=lambda: [p for p in setup.target.parameters() if p.requires_grad],
                train_mode=setup.set_train_mode,
            )

        final, distill = trainer.run_stage("distill", build_distill, train, val)
        setup: DistillationSetup = final.modules  # type: ignore[assignment]
        self.readout_models_ = {
            "deep_expert": setup.deep.eval(),
            "shallow_expert": setup.teacher.eval(),
        }
        extras = {
            "experts_selected_epoch": experts.selected_epoch,
            "experts_selection": f"{rule} on the shallow read-out",
            "expert_val_at_selection": _stage1_readouts(experts.history, experts.selected_epoch),
            "distill_weight": hp.distill_weight,
            "temperature": hp.temperature,
        }
        return self.fit_result(train, setup.target, [experts, distill], rule, extras)


def _stage1_readouts(history: list[dict[str, Any]], epoch: int) -> dict[str, Any]:
    """Validation metrics of the product and of each expert at the kept stage-1 epoch."""
    for line in history:
        if line.get("epoch") == epoch:
            return {key: line[key] for key in ("val", "val_deep", "val_shallow") if key in line}
    return {}
