"""Plain knowledge distillation (Hinton et al., 2015): the baseline DeTT argues against.

The student matches the teacher's softened logits on the (biased) training set:
``loss = (1 − α)·CE(s, y) + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ))``. Nothing steers it away from the shortcut, so
a small student of a debiased teacher tends to relearn the bias from the aligned majority.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods.base import FitResult
from debiaslab.methods.dett import OURS_STUDENT, TeacherHparams, TeacherStudentMethod, obtain_teacher, student_stage
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, uniform
from debiaslab.methods.teachers import soft_cross_entropy
from debiaslab.models import count_parameters

KD_COMMON = "ours: a common KD setting (Hinton et al. 2015 style soft targets)"


@dataclass
class KDHparams(TeacherHparams):
    """Attributes: ``kd_weight`` α (weight of the distillation term), ``temperature`` τ."""

    kd_weight: float = 0.9
    temperature: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.kd_weight, int | float) and 0 <= self.kd_weight <= 1):
            raise ConfigError(f"kd_weight {self.kd_weight!r} must be in [0, 1]")
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature {self.temperature!r} must be a positive number")


@register_method("kd")
class KnowledgeDistillation(TeacherStudentMethod):
    """Logit distillation of a (debiased) teacher into a student on the biased training set."""

    family = "distillation"
    final_stage = ("kd_student", None)

    summary = "plain logit knowledge distillation from a teacher (baseline for DeTT)"
    #: searched by `debiaslab tune`: the distillation weight and temperature
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "kd_weight": uniform(0.1, 1.0),
        "temperature": uniform(1.0, 8.0),
    }
    Hparams: ClassVar[type[TrainHparams]] = KDHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {"kd_weight": Default(0.9, KD_COMMON), "temperature": Default(4.0, KD_COMMON)},
        "colored_mnist": {**CMNIST_MLP, "model_kwargs": Default({"width": 32, "depth": 2}, OURS_STUDENT)},
    }

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: KDHparams = self.hparams  # type: ignore[assignment]
        rule = self.selection_rule(val)
        teacher, teacher_info = obtain_teacher(self, train, val, trainer)

        def build() -> Stage:
            student = self.build_model(train)

            def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
                logits = student(batch.x)
                with torch.no_grad():
                    soft = teacher(batch.x)
                ce = F.cross_entropy(logits.float(), batch.y)
                kd = soft_cross_entropy(logits, soft, hp.temperature)
                total = (1 - hp.kd_weight) * ce + hp.kd_weight * hp.temperature**2 * kd
                return {"loss": total, "ce": ce.detach(), "kd": kd.detach()}

            return student_stage(self, "kd_student", train, rule, student, teacher, loss)

        final, result = trainer.run_stage("kd_student", build, train, val)
        student = final.modules.student
        self.readout_models_ = {"teacher": teacher}
        extras: dict[str, Any] = {**teacher_info, "student_params": count_parameters(student)}
        return self.fit_result(train, student, [result], rule, extras)
